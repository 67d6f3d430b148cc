"""``learned/<reference sim>``: the learned simulator behind the ordinary ``SimEnv`` interface.

    env = sims.make("learned/dmc/cartpole-swingup", checkpoint="runs/wm", correct_every=8)

What is learned and what comes from physics
-------------------------------------------
The env runs a *shadow* of its reference engine, stepped with the same actions, so that:

- proprio observations and rewards are the learned simulator's, except at anchors;
- every ``correct_every`` steps (counted from the last reset or start) the learned state is
  re-anchored: replaced by the engine's proprio for the same start state and actions, and
  that step's reward is the engine's. ``correct_every=1`` is the engine itself, bit for bit;
  ``correct_every="never"`` (or None) is purely learned after the reset (except that a
  learned state that overflows to inf/NaN is re-anchored at once rather than observed);
- the episode's start state (``reset``), task text, embodiment, success flag and
  termination always come from the engine. Success is a fact about physics; the learned
  simulator never claims it;
- ``info["error_estimate"]`` is the ensemble spread (a tuple, one float per proprio dimension,
  in proprio units) of the learned state, 0 right after an anchor; ``info["anchored"]`` says whether this
  step's state came from the engine;
- the scripted demonstrator is the reference's, reading the engine's (privileged) state;
- frames: the model is proprio-only. With ``camera=True`` the frame is drawn by the
  reference engine placed at the learned state (``state_from_proprio``), which only sims
  whose proprio determines their state support; elsewhere ``camera=True`` is an error.

Every step also records the engine's realized transition and the residual between the
learned prediction and the engine (``env.corrections``): the training signal for the next
fit (``CorrectionBuffer.transitions()`` goes straight into ``world_model.fit``).

Physical parameters and fidelity apply to the correcting engine (and observation noise to
the learned observations), so ``learned/X`` at fidelity 0.8 is corrected by a perturbed engine.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from typing import Any

import numpy as np

import sims
from sims import SimEnv, SimState, StateNotDetermined
from sims.params import PhysicsParams
from world_model.checkpoint import CheckpointError, load_checkpoint
from world_model.data import Transitions
from world_model.simulator import LearnedSimulator

PREFIX = "learned/"
NEVER = "never"


def parse_correct_every(value: Any) -> int | None:
    """``None``/``"never"`` -> None (purely learned); a positive int (or its string) -> that int."""
    if value is None or (isinstance(value, str) and value.strip().lower() == NEVER):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"correct_every must be a positive int or 'never', got {value!r}")
    return int(value)


class CorrectionBuffer:
    """The engine's realized transitions seen by a learned env, with the learned prediction of each.

    Bounded (oldest rows dropped first). ``transitions()`` is training data for the next fit;
    ``residuals()`` is engine minus learned, per step, and ``anchored()`` marks the steps at
    which the learned state was replaced by the engine's.
    """

    def __init__(self, sim: str, capacity: int = 100_000) -> None:
        self.sim = sim
        self.rows: deque[tuple] = deque(maxlen=capacity)
        self._episode = 0

    def new_episode(self) -> None:
        self._episode += 1

    def add(self, proprio, action, next_proprio, reward: float, learned, anchored: bool) -> None:
        self.rows.append((proprio, action, next_proprio, reward, self._episode, learned, anchored))

    def __len__(self) -> int:
        return len(self.rows)

    def latest(self, n: int) -> list[tuple]:
        """The last ``n`` rows, oldest first: (proprio, action, next_proprio, reward, episode, learned, anchored)."""
        return list(itertools.islice(reversed(self.rows), n))[::-1]

    def transitions(self) -> Transitions:
        if not self.rows:
            raise ValueError(f"{self.sim}: no corrections recorded yet")
        cols = list(zip(*self.rows))
        return Transitions(self.sim, *(np.asarray(c) for c in cols[:5]))

    def residuals(self) -> np.ndarray:
        return np.asarray([r[2] - r[5] for r in self.rows])

    def anchored(self) -> np.ndarray:
        return np.asarray([r[6] for r in self.rows], dtype=bool)


class LearnedSimEnv(SimEnv):
    """The learned simulator of ``reference`` (see the module docstring).

    Args:
        reference: the registered sim the checkpoint was fitted on.
        checkpoint: a checkpoint directory, or a ``LearnedSimulator`` already in memory.
        correct_every: re-anchor to the engine every this many steps; "never"/None: never.
        **kwargs: the ``SimEnv`` keyword arguments.
    """

    def __init__(self, reference: str, *, checkpoint: str | os.PathLike | LearnedSimulator | None = None,
                 correct_every: int | str | None = None, **kwargs: Any) -> None:
        if checkpoint is None:
            raise ValueError(f"{PREFIX}{reference}: a learned sim needs checkpoint=<directory written by "
                             "`flywheel world-model fit`>")
        simulator = checkpoint if isinstance(checkpoint, LearnedSimulator) else load_checkpoint(checkpoint)
        if simulator.reference != reference:
            where = ("the simulator given" if isinstance(checkpoint, LearnedSimulator)
                     else f"checkpoint {str(checkpoint)!r}")
            raise CheckpointError(f"{where} was fitted on sim {simulator.reference!r}, not on {reference!r}")
        self.reference = reference
        self.simulator = simulator
        self.correct_every = parse_correct_every(correct_every)
        self._shadow = sims.make(reference, max_episode_steps=kwargs.get("max_episode_steps"))
        emb = self._shadow.embodiment
        if (emb.proprio_dim, emb.action_dim) != (simulator.proprio_dim, simulator.action_dim):
            raise CheckpointError(f"the checkpoint's sizes (proprio {simulator.proprio_dim}, action "
                                  f"{simulator.action_dim}) do not fit {reference} "
                                  f"({emb.proprio_dim}, {emb.action_dim})")
        self.name = PREFIX + reference
        self.task_text = self._shadow.task_text
        self.defines_success = self._shadow.defines_success
        self.default_max_episode_steps = self._shadow.max_episode_steps
        self.corrections = CorrectionBuffer(reference)
        k, d = simulator.ensemble, simulator.proprio_dim
        self._members = np.zeros((k, d))
        self._x = np.zeros(d)  # the observed (noise-free) proprio: members' mean, or the engine's at an anchor
        self._engine_x = np.zeros(d)
        self._since_anchor = 0
        self._anchored = True
        self._success = False
        self._engine_terminated = False
        self._reset_seed: int | None = None
        self._painter: SimEnv | None = None
        super().__init__(**kwargs)

    # ------------------------------------------------------------------ the learned part

    def start_from(self, state: SimState) -> dict[str, Any]:
        """Begin at a state of the reference engine (a probe start); returns the observation."""
        if not isinstance(state, SimState) or state.sim != self.reference:
            got = state.sim if isinstance(state, SimState) else type(state).__name__
            raise ValueError(f"{self.name} starts from states of {self.reference!r}, got one of {got!r}")
        self._shadow.set_state(state)
        self._anchor(self._engine_proprio())
        self._success = self._engine_terminated = False
        self._step_count = state.step
        self._needs_reset = bool(state.arrays["_needs_reset"])
        self.corrections.new_episode()
        return self._observation()

    def engine_state(self, state: SimState) -> SimState:
        """The reference engine's part of a state of this env: where its shadow engine was."""
        if not isinstance(state, SimState) or state.sim != self.name:
            raise ValueError(f"{self.name}: engine_state needs a state of this sim, got "
                             f"{state.sim if isinstance(state, SimState) else type(state).__name__!r}")
        arrays = state.arrays
        engine = {k.removeprefix("engine."): v for k, v in arrays.items()
                  if k.startswith("engine.") and k != "engine.step"}
        # The shadow's generator is reseeded at every reset and draws nothing between, so it
        # is not part of this env's state.
        return SimState(self.reference, int(arrays["engine.step"]), engine, self._shadow.np_random.bit_generator.state)

    def use(self, simulator: LearnedSimulator) -> None:
        """Step with ``simulator`` from now on (a refitted world model of the same reference and
        sizes, ``flywheel.refit``); the current state is kept, every member starting from it."""
        sizes = (simulator.reference, simulator.proprio_dim, simulator.action_dim)
        if sizes != (self.reference, self.simulator.proprio_dim, self.simulator.action_dim):
            raise CheckpointError(f"{self.name} cannot step with a simulator of {sizes[0]} (proprio {sizes[1]}, "
                                  f"action {sizes[2]})")
        self.simulator = simulator
        self._members = np.tile(self._x, (simulator.ensemble, 1))

    def _engine_proprio(self) -> np.ndarray:
        # What the engine would observe here (float32 and noise-free, as the shadow's
        # observations are) without stepping it: its ``_proprio`` hook.
        return np.asarray(self._shadow._proprio(), dtype=np.float32).astype(np.float64)

    def _anchor(self, proprio: np.ndarray) -> None:
        self._x = proprio.copy()
        self._engine_x = proprio.copy()
        self._members[:] = proprio
        self._since_anchor = 0
        self._anchored = True

    # ------------------------------------------------------------------ SimEnv hooks

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._reset_seed = seed  # the engine starts where the reference sim would for this seed
        return super().reset(seed=seed, options=options)

    def _build(self) -> None:
        pass  # the shadow engine is built in __init__ (its task text is needed before this)

    def _embodiment(self):
        return self._shadow.embodiment

    def _nominal_params(self) -> PhysicsParams:
        return self._shadow.nominal_params

    def _apply_params(self, params: PhysicsParams) -> None:
        # Observation noise is added to the learned observation by this env; the engine's own
        # observation, used to anchor, stays noise-free.
        self._shadow.set_params(params.replace(obs_noise=0.0))

    def _reset_task(self, rng: np.random.Generator) -> None:
        seed = self._reset_seed if self._reset_seed is not None else int(rng.integers(2**31))
        obs, info = self._shadow.reset(seed=seed)
        self._anchor(np.asarray(obs["proprio"], dtype=np.float64))
        self._success = bool(info.get("success", False))
        self._engine_terminated = False
        self.corrections.new_episode()

    def _step_task(self, action: np.ndarray) -> float:
        members, rewards = self.simulator.step_members(self._members[:, None], action[None])
        members, learned_reward = members[:, 0], float(rewards.mean())
        learned_x = members.mean(axis=0)
        obs, engine_reward, terminated, _, info = self._shadow.step(action)
        engine_x = np.asarray(obs["proprio"], dtype=np.float64)
        self._since_anchor += 1
        anchor = self.correct_every is not None and self._since_anchor >= self.correct_every
        # A member that ran off to inf/NaN is no state at all: the engine corrects it at once.
        anchor = anchor or not np.all(np.isfinite(members))
        self.corrections.add(self._engine_x, action, engine_x, engine_reward, learned_x, anchor)
        self._success = bool(info.get("success", False))
        self._engine_terminated = terminated
        if anchor:
            self._anchor(engine_x)
            return float(engine_reward)
        self._members, self._x, self._engine_x = members, learned_x, engine_x
        self._anchored = False
        return learned_reward

    def _proprio(self) -> np.ndarray:
        return self._x

    def _update_success(self) -> bool:
        return self._success

    def _terminated(self) -> bool:
        return self._engine_terminated

    def _info(self, success: bool | None) -> dict[str, Any]:
        info = super()._info(success)
        # A tuple, not an array: infos stay comparable with == (as the conformance checks compare them).
        info["error_estimate"] = tuple(float(v) for v in self._members.std(axis=0))
        info["anchored"] = self._anchored
        return info

    def _get_engine_state(self) -> dict[str, np.ndarray]:
        engine = self._shadow.get_state()
        arrays = {f"engine.{k}": v for k, v in engine.arrays.items()}
        arrays["engine.step"] = np.array(engine.step, dtype=np.int64)
        arrays.update({
            "learned.members": self._members.copy(),
            "learned.x": self._x.copy(),
            "learned.engine_x": self._engine_x.copy(),
            "learned.since_anchor": np.array(self._since_anchor, dtype=np.int64),
            "learned.flags": np.array([self._anchored, self._success, self._engine_terminated]),
        })
        return arrays

    def _set_engine_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._shadow.set_state(self.engine_state(SimState(self.name, 0, arrays)))
        self._members = arrays["learned.members"].copy()
        self._x = arrays["learned.x"].copy()
        self._engine_x = arrays["learned.engine_x"].copy()
        self._since_anchor = int(arrays["learned.since_anchor"])
        self._anchored, self._success, self._engine_terminated = (bool(v) for v in arrays["learned.flags"])

    def demonstrator(self):
        """The reference's demonstrator, bound to the shadow engine: it reads the engine's
        privileged state, not the learned one (exact at ``correct_every=1``)."""
        return self._shadow.demonstrator()

    # ------------------------------------------------------------------ camera

    def _setup_camera(self) -> None:
        painter = sims.make(self.reference, render_mode="rgb_array", image_size=self.image_size)
        obs, _ = painter.reset(seed=0)
        try:
            painter.state_from_proprio(obs["proprio"], like=painter.get_state())
        except StateNotDetermined as exc:
            painter.close()
            raise ValueError(f"{self.name}: the learned simulator models proprio only, and frames are drawn by "
                             f"placing the engine at the learned state, which {self.reference} cannot do ({exc}); "
                             "use camera=False") from exc
        self._painter = painter

    def _render_camera(self) -> np.ndarray:
        if self._painter is None:
            self._setup_camera()
        self._painter.set_state_from_proprio(self._x, like=self._shadow.get_state())
        return self._painter.render()

    def close(self) -> None:
        for env in (self._shadow, self._painter):
            if env is not None:
                env.close()
        super().close()


def make_learned_env(name: str, **config: Any) -> LearnedSimEnv:
    """Family factory: ``learned/<reference sim>`` -> a ``LearnedSimEnv``."""
    if not name.startswith(PREFIX) or len(name) == len(PREFIX):
        raise sims.UnknownSimError(f"a learned sim is named '{PREFIX}<reference sim>', got {name!r}")
    reference = name[len(PREFIX):]
    sims.tags_of(reference)  # an unknown reference sim fails here, naming the known ones
    return LearnedSimEnv(reference, **config)


make_learned_env.sim_tags = ("learned",)
