"""``SimEnv``: the one simulator interface every engine implements.

A ``SimEnv`` is a ``gymnasium.Env`` whose observations are a Dict:

- ``proprio``: float32 vector (noise-free at fidelity 1),
- ``task``: the instruction text,
- ``image``: uint8 H x W x 3 camera frame, only when constructed with ``camera=True``.

On top of gymnasium it offers exact state save/restore (``get_state``/``set_state``),
physical parameters (``get_params``/``set_params``), the fidelity knob, an embodiment spec,
and a scripted demonstrator for every task that defines success.

Success: when ``defines_success`` is true, ``info["success"]`` is present after ``reset``
and every ``step``; it says whether the task's success condition (documented in the task's
docstring) holds at that step. An episode succeeded if ``info["success"]`` was ever true.

Engines subclass this and fill in the underscore hooks at the bottom; the public methods
validate input and keep the bookkeeping (step count, truncation, noise) in one place.

Sim steps: every ``step`` of every env is counted twice over, for honest accounting of what
a run spends: ``env.engine_steps`` (this env, its whole life: never reset by ``reset`` or
``set_state``) and ``engine_steps_taken()`` (every env of this process together, so that a
caller can take the steps of any piece of work as a difference, including those of envs it
never sees: a grader's reference engine, a probe set, a learned sim's shadow engine). One
sim step is one control step, whatever the physics sub-steps inside it. A learned sim
(``world_model.learned_env``) steps its model and its shadow engine: two sim steps.
Restoring a state (``set_state``, ``set_state_from_proprio``) is not a step. Not counted:
the physics calls a scripted demonstrator makes on a scratch copy of the model to linearise
it (the LQR gains of cartpole and the inverted pendulum), once per parameter set; they
simulate no trajectory.

Finite values: ``reset`` and ``step`` check that every float array of the observation
(``proprio``) and the reward are finite, and ``step`` that the action is; a non-finite one
raises ``NonFiniteError`` naming the sim, the field and the step, and the episode is over
(the next call must be ``reset``). A NaN found where it appears costs one episode; found
later, by a grader, a learner or a metric, it cost a whole run and named none of that.

Optional: ``state_from_proprio`` turns a proprio vector (an imagined one, say) back into an
exact state, for tasks whose proprio determines the dynamic state; elsewhere it raises
``StateNotDetermined``, and its users (the grader's physics question) answer "not
applicable" rather than guess.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from sims.embodiment import Embodiment
from sims.params import PhysicsParams, coerce_params, perturb, validate_fidelity
from sims.state import SimState

TASK_TEXT_MAX = 256
TASK_CHARSET = frozenset(string.ascii_letters + string.digits + " ,.;:'-_()!?/")


# Every ``SimEnv.step`` this process has taken (see the module docstring). Ray rollout actors
# run one call at a time, so a difference of two readings is the steps of the work between.
_steps_taken = 0


def engine_steps_taken() -> int:
    """Every sim step (``SimEnv.step``) this process has taken, all envs together."""
    return _steps_taken


class NonFiniteError(ValueError):
    """A NaN or inf in what a sim returned (an observation's ``field``, the ``reward``) or was
    given (the ``action``) at ``step`` of the episode (0: the reset). A ``ValueError``, as the
    other bad input ``SimEnv`` refuses."""

    def __init__(self, sim: str, field: str, step: int, values) -> None:
        self.sim, self.field, self.step = sim, field, int(step)
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        kind = "NaN" if np.isnan(arr).any() else "inf"
        where = "at reset" if step == 0 else f"at step {step}"
        super().__init__(f"{sim}: {field} contains {kind} {where} (NaN or inf in {int((~np.isfinite(arr)).sum())} of "
                         f"{arr.size} values: {np.array2string(arr, threshold=8, precision=4)})")


class StateNotDetermined(Exception):
    """The observation does not determine the physical state (``state_from_proprio``)."""


class Demonstrator(Protocol):
    """A scripted expert bound to one env. It may read the env's privileged state."""

    def reset(self) -> None: ...

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray: ...


class SimEnv(gym.Env):
    """Base class of every registered simulator task.

    Args:
        fidelity: in [0, 1]; 1 is the reference simulator itself (see ``sims.params``).
        run_seed: seeds the fidelity perturbation (not the episodes: pass ``seed`` to ``reset``).
        camera: add an ``image`` observation.
        image_size: camera frames are ``image_size`` x ``image_size``.
        max_episode_steps: truncate episodes after this many steps (task default if None).
        params: physical parameters (a record or a partial mapping) applied after the fidelity
            perturbation, e.g. ``{"mass_scale": 1.2}``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    name: str = ""
    task_text: str = ""
    defines_success: bool = True
    default_max_episode_steps: int = 200

    def __init__(
        self,
        *,
        fidelity: float = 1.0,
        run_seed: int = 0,
        camera: bool = False,
        image_size: int = 64,
        max_episode_steps: int | None = None,
        params: PhysicsParams | Mapping[str, float] | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.name = self.name or type(self).__name__
        self.fidelity = validate_fidelity(fidelity)
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"{self.name}: image_size must be an int >= 8, got {image_size!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"{self.name}: render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.run_seed = int(run_seed)
        self.camera = bool(camera)
        self.image_size = image_size
        self.render_mode = render_mode
        # ``or`` would turn 0 into the default: an explicit 0 is a mistake, not "the default".
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or int(max_episode_steps) < 1):
            raise ValueError(f"{self.name}: max_episode_steps must be >= 1 (None: the task's default, "
                             f"{self.default_max_episode_steps}), got {max_episode_steps!r}")
        self.max_episode_steps = int(self.default_max_episode_steps if max_episode_steps is None else max_episode_steps)
        if not 0 < len(self.task_text) <= TASK_TEXT_MAX or set(self.task_text) - TASK_CHARSET:
            raise ValueError(f"{self.name}: task_text must be 1-{TASK_TEXT_MAX} chars from TASK_CHARSET")

        self._build()
        self.embodiment = self._embodiment()
        self.nominal_params = self._nominal_params()
        perturbed = perturb(self.nominal_params, self.fidelity, self.run_seed)
        self._params = perturbed
        self.set_params(perturbed if params is None else coerce_params(params, base=perturbed))
        if self.camera or render_mode == "rgb_array":
            self._setup_camera()

        emb = self.embodiment
        self._action_low = np.asarray(emb.action_low, dtype=np.float64)
        self._action_high = np.asarray(emb.action_high, dtype=np.float64)
        self.action_space = gym.spaces.Box(
            np.asarray(emb.action_low, dtype=np.float32), np.asarray(emb.action_high, dtype=np.float32)
        )
        spaces: dict[str, gym.Space] = {
            "proprio": gym.spaces.Box(-np.inf, np.inf, (emb.proprio_dim,), np.float32),
            "task": gym.spaces.Text(TASK_TEXT_MAX, charset="".join(sorted(TASK_CHARSET))),
        }
        if self.camera:
            spaces["image"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self._step_count = 0
        self._needs_reset = True
        self.engine_steps = 0  # this env's sim steps over its life (see the module docstring)

    # ------------------------------------------------------------------ gymnasium API

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._layout = None  # a task may build a different world each episode
        self._reset_task(self.np_random)
        self._step_count = 0
        self._needs_reset = False
        info = self._info(self._update_success())
        return self._checked(self._observation()), info

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError(f"{self.name}: call reset() before step() (the episode has ended or not begun)")
        global _steps_taken
        action = self.check_action(action)
        self.engine_steps += 1
        _steps_taken += 1
        reward = float(self._step_task(action))
        self._step_count += 1
        success = self._update_success()
        terminated = bool(self._terminated())
        truncated = not terminated and self._step_count >= self.max_episode_steps
        self._needs_reset = terminated or truncated
        observation = self._checked(self._observation(), reward)
        return observation, reward, terminated, truncated, self._info(success)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._render_camera()

    # ------------------------------------------------------------------ the sims interface

    @property
    def step_count(self) -> int:
        return self._step_count

    def check_action(self, action) -> np.ndarray:
        """Validate an action (shape, finiteness) and clip it to the action bounds."""
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: action must be numeric, got {action!r}") from exc
        expected = (self.embodiment.action_dim,)
        if arr.shape != expected:
            raise ValueError(f"{self.name}: action has shape {arr.shape}, expected {expected}")
        if not np.all(np.isfinite(arr)):
            raise NonFiniteError(self.name, "action", self._step_count + 1, arr)
        return np.clip(arr, self._action_low, self._action_high)

    def get_state(self) -> SimState:
        """An exact snapshot; see ``sims.state``."""
        arrays = dict(self._get_engine_state())
        arrays["_needs_reset"] = np.array(self._needs_reset)
        return SimState(self.name, self._step_count, arrays, self.np_random.bit_generator.state)

    def set_state(self, state: SimState) -> None:
        """Restore a snapshot taken by ``get_state`` on this same sim."""
        if not isinstance(state, SimState):
            raise TypeError(f"{self.name}: set_state expects a SimState, got {type(state).__name__}")
        if state.sim != self.name:
            raise ValueError(f"{self.name}: set_state got a state saved from sim {state.sim!r}")
        layout = state.layout()
        if layout != self._state_layout() and layout != self._state_layout(fresh=True):
            raise ValueError(
                f"{self.name}: set_state got a state whose arrays do not fit this sim "
                f"(got {layout}, expected {self._state_layout()})"
            )
        arrays = {k: np.array(v, copy=True) for k, v in state.arrays.items()}
        self._needs_reset = bool(arrays.pop("_needs_reset"))
        self._set_engine_state(arrays)
        self._step_count = state.step
        self.np_random.bit_generator.state = state.rng

    def _state_layout(self, fresh: bool = False) -> dict[str, tuple[tuple[int, ...], str]]:
        """The layout of this sim's states, computed once per episode: the rollout loop and
        the grader restore states many times a chunk, and a snapshot only to read its shapes
        cost as much as the restore."""
        if fresh or getattr(self, "_layout", None) is None:
            self._layout = self.get_state().layout()
        return self._layout

    def get_params(self) -> PhysicsParams:
        return self._params

    def set_params(self, params: PhysicsParams | Mapping[str, float]) -> None:
        """Apply physical parameters; a mapping overrides only the fields it names."""
        params = coerce_params(params, base=self._params)
        self._apply_params(params)
        self._params = params

    def demonstrator(self) -> Demonstrator:
        raise NotImplementedError(f"{self.name} has no scripted demonstrator")

    def state_from_proprio(self, proprio, like: SimState) -> SimState:
        """The state whose noise-free proprio is ``proprio``, all else taken from ``like``.

        ``like`` (a state of this sim) supplies everything proprio does not describe: task data
        such as targets, hold counters, the step count, the noise generator, the last control.
        The env itself is left as it was. Raises ``StateNotDetermined`` for tasks whose proprio
        does not determine the dynamic state (the default: a task opts in by implementing
        ``_joints_from_proprio`` on an engine that implements ``_write_joints``).
        """
        saved = self.get_state()
        try:
            self.set_state_from_proprio(proprio, like)
            return self.get_state()
        finally:
            self.set_state(saved)

    def set_state_from_proprio(self, proprio, like: SimState) -> None:
        """Put the env in the state ``state_from_proprio(proprio, like)`` returns, without
        snapshots (the grader restores one imagined state per step). On ``StateNotDetermined``
        the env may be left at ``like``."""
        try:
            arr = np.asarray(proprio, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: proprio must be numeric, got {proprio!r}") from exc
        if arr.shape != (self.embodiment.proprio_dim,):
            raise ValueError(f"{self.name}: proprio has shape {arr.shape}, expected {(self.embodiment.proprio_dim,)}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{self.name}: proprio contains NaN or inf")
        qpos, qvel = self._joints_from_proprio(arr)
        self.set_state(like)  # validates that ``like`` is a state of this sim
        self._write_joints(qpos, qvel)

    # ------------------------------------------------------------------ shared internals

    def _observation(self) -> dict[str, Any]:
        proprio = np.asarray(self._proprio(), dtype=np.float32)
        if self._params.obs_noise > 0:
            noise = self.np_random.normal(0.0, self._params.obs_noise, proprio.shape)
            proprio = (proprio + noise).astype(np.float32)
        obs: dict[str, Any] = {"proprio": proprio, "task": self.task_text}
        if self.camera:
            obs["image"] = self._render_camera()
        return obs

    def _checked(self, observation: dict[str, Any], reward: float = 0.0) -> dict[str, Any]:
        """``observation`` if its float arrays and ``reward`` are finite; else the episode is
        over and ``NonFiniteError`` says where."""
        for field, value in (*observation.items(), ("reward", reward)):
            if isinstance(value, (np.ndarray, float)) and np.asarray(value).dtype.kind == "f" \
                    and not np.all(np.isfinite(value)):
                self._needs_reset = True
                raise NonFiniteError(self.name, field, self._step_count, value)
        return observation

    def _info(self, success: bool | None) -> dict[str, Any]:
        info: dict[str, Any] = {"step": self._step_count}
        if self.defines_success:
            info["success"] = bool(success)
        return info

    # ------------------------------------------------------------------ engine hooks

    def _build(self) -> None:
        """Create the engine objects (called once, before anything else)."""
        raise NotImplementedError

    def _embodiment(self) -> Embodiment:
        """Called once after ``_build``; the result is ``self.embodiment``."""
        raise NotImplementedError

    def _nominal_params(self) -> PhysicsParams:
        """The engine's unperturbed parameters."""
        raise NotImplementedError

    def _apply_params(self, params: PhysicsParams) -> None:
        """Set the engine's parameters (relative to nominal, never compounding)."""
        raise NotImplementedError

    def _reset_task(self, rng: np.random.Generator) -> None:
        """Start a new episode, drawing any randomness from ``rng``."""
        raise NotImplementedError

    def _step_task(self, action: np.ndarray) -> float:
        """Advance one control step with a validated action; return the reward."""
        raise NotImplementedError

    def _proprio(self) -> np.ndarray:
        raise NotImplementedError

    def _update_success(self) -> bool | None:
        """Called once after reset and once after every step; may update hold counters."""
        return None

    def _terminated(self) -> bool:
        return False

    def _get_engine_state(self) -> dict[str, np.ndarray]:
        """Everything that influences the future besides step count and noise RNG."""
        raise NotImplementedError

    def _set_engine_state(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _joints_from_proprio(self, proprio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Optional: the joint positions and velocities a proprio vector stands for."""
        raise StateNotDetermined(f"{self.name}: its proprio does not determine the physical state")

    def _write_joints(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Optional (engines): put the joints at (qpos, qvel), keeping everything else."""
        raise StateNotDetermined(f"{self.name}: this engine cannot set a state from joint values")

    def _setup_camera(self) -> None:
        raise NotImplementedError(f"{self.name} has no camera")

    def _render_camera(self) -> np.ndarray:
        raise NotImplementedError(f"{self.name} has no camera")
