"""What the gymnasium MuJoCo tasks share: the upstream env as a model/XML/observation source.

Each task builds the gymnasium v5 env class directly (no ``gymnasium.make``, so no wrappers)
and keeps its ``MjModel``/``MjData``, its observation function and its reward terms. Stepping,
resets and episode randomness are ours, so the ``SimEnv`` bookkeeping stays in charge:

- ``_simulate`` sets ``ctrl`` and runs ``frame_skip`` physics steps exactly as gymnasium's
  ``do_simulation`` does, then calls ``mj_forward``. ``mj_step`` leaves positions (``xpos``,
  ``site_xpos``, cameras...) one substep stale; ``mj_forward`` makes every derived quantity a
  function of the saved integration state, so a restored state (``MujocoSimEnv`` also calls
  ``mj_forward`` after restoring) observes, rewards and renders bit-identically. It changes
  nothing the next ``mj_step`` reads, so trajectories stay identical to upstream gymnasium.
- Actions are upstream's unless a task sets ``normalize_actions``: then the action space is
  [-1, 1] per dimension and ``_to_ctrl`` maps it affinely onto the actuator's control range
  (so gymnasium's ``check_env`` has nothing to warn about).
- ``_reset_task`` draws from the ``rng`` it is given (the base class's ``np_random``), never
  from the inner env's own generator. The tasks draw in the same order and from the same
  distributions as gymnasium's ``reset_model``, so ``reset(seed=s)`` starts where
  ``gymnasium``'s ``reset(seed=s)`` starts.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np

from sims.embodiment import Embodiment
from sims.mujoco_engine import MujocoSimEnv


class GymMujocoTask(MujocoSimEnv):
    """A ``MujocoSimEnv`` built on a gymnasium MuJoCo env class."""

    gym_env_class: ClassVar[type]
    gym_env_kwargs: ClassVar[dict[str, Any]] = {}
    normalize_actions: ClassVar[bool] = False

    def _build(self) -> None:
        # A small window: the inner env never renders, but it grows the offscreen buffer to it.
        self._inner = self.gym_env_class(width=64, height=64, **self.gym_env_kwargs)
        self.frame_skip = int(self._inner.frame_skip)
        self.init_qpos = self._inner.init_qpos.copy()
        self.init_qvel = self._inner.init_qvel.copy()
        self._attach_mujoco(self._inner.model, self._inner.data)

    def _embodiment(self) -> Embodiment:
        self._ctrl_low = self._inner.action_space.low.astype(np.float64)
        self._ctrl_high = self._inner.action_space.high.astype(np.float64)
        low, high = self._ctrl_low, self._ctrl_high
        if self.normalize_actions:
            low, high = -np.ones_like(low), np.ones_like(high)
        return Embodiment(
            name=self.name,
            proprio_dim=int(self._inner.observation_space.shape[0]),
            action_dim=int(low.shape[0]),
            action_low=tuple(float(v) for v in low),
            action_high=tuple(float(v) for v in high),
        )

    @property
    def dt(self) -> float:
        """Seconds of simulated time per control step (changes with the timestep parameter)."""
        return float(self.model.opt.timestep) * self.frame_skip

    # ------------------------------------------------------------------ helpers for tasks

    def _start(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Start an episode from (qpos, qvel), as gymnasium's reset + set_state does."""
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)

    def _to_ctrl(self, action: np.ndarray) -> np.ndarray:
        """The upstream (actuator) control for one of our actions."""
        if not self.normalize_actions:
            return action
        low, high = self._ctrl_low, self._ctrl_high
        if np.array_equal(low, -high):
            return high * action  # exact for symmetric ranges
        return low + (action + 1.0) * 0.5 * (high - low)

    def _simulate(self, action: np.ndarray) -> None:
        """Apply one of our (validated) actions for ``frame_skip`` physics steps."""
        self.data.ctrl[:] = self._to_ctrl(action)
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        mujoco.mj_forward(self.model, self.data)

    def _proprio(self) -> np.ndarray:
        return self._inner._get_obs()

    def close(self) -> None:
        inner = getattr(self, "_inner", None)
        if inner is not None:
            inner.close()
        super().close()
