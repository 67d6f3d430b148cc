"""``DmcSuiteEnv``: any dm-control suite task behind the ``SimEnv`` interface.

``sims.make("dmc/<domain>-<task>")`` builds ``dm_control.suite.load(domain, task)`` for every
pair in ``dm_control.suite.ALL_TASKS`` (domains may contain underscores, tasks never start
with a dash, so the name is split on its first ``-``): ``dmc/walker-walk``,
``dmc/ball_in_cup-catch``, ``dmc/lqr-lqr_2_1``...

How the suite is driven
-----------------------
The adapter uses only the suite environment's physics and task, never ``dm_env``'s ``step``,
so the ``SimEnv`` base owns step counting, truncation and state:

- reset: the task's own ``numpy.random.RandomState`` (``task.random``, used by
  ``initialize_episode``) is reseeded from the generator ``reset(seed=...)`` passes down, then
  ``initialize_episode`` runs inside ``physics.reset_context()``, exactly as the suite does;
- step: ``task.before_step(action)``, ``physics.step(n_sub_steps)`` (dm-control's legacy step:
  ``mj_step2`` then ``mj_step1``), ``task.after_step``, ``task.get_reward``. ``n_sub_steps`` is
  fixed when the sim is built, so a timestep perturbation changes the control period too;
- proprio: the task's observation dict flattened in the task's own key order (pixel
  observations skipped); ``proprio_keys``/``proprio_slices`` say which entries are which;
- termination: the task's ``get_termination`` (most suite tasks never terminate).

At fidelity 1 the trajectory is bit-identical to ``suite.load(domain, task,
task_kwargs={"random": env.task_seed}).step`` with the same actions.

Exact state: besides MuJoCo's integration state (saved by the base), suite tasks keep
episode-defining data in the MODEL (reacher's and fish's targets in ``geom_pos``, finger's
in ``site_pos``, manipulator's in ``body_pos``, quadruped's terrain in ``hfield_data``,
colours...), and ``task.random``; all of it is part of the snapshot. So are the sensor readings:
after dm-control's legacy step the acceleration-stage sensors (accelerometers, touch,
force/torque) still hold values from before the last integration, which ``mj_forward`` would
overwrite on restore.

The generic adapter has no success definition and no demonstrator; curated tasks
(``sims.dmc.cartpole`` and friends) subclass it and add both.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np
from dm_control import suite

from sims.embodiment import Embodiment
from sims.mujoco_engine import MujocoSimEnv
from sims.registry import UnknownSimError, register_family

PREFIX = "dmc/"

# Model arrays that suite tasks rewrite when an episode starts (targets, goal sizes, terrain,
# colours, lights, cameras, wrap directions, damping). None of them is touched by the physical parameters.
_TASK_MODEL_FIELDS = (
    "body_pos",
    "body_quat",
    "geom_pos",
    "geom_quat",
    "geom_size",
    "geom_rgba",
    "site_pos",
    "site_quat",
    "site_size",
    "site_rgba",
    "mat_rgba",
    "wrap_prm",
    "dof_damping",
    "hfield_data",
    "light_pos",
    "light_dir",
    "cam_pos",
    "cam_quat",
)


def all_task_names() -> list[str]:
    """Every ``dmc/<domain>-<task>`` name the family resolves."""
    return [f"{PREFIX}{domain}-{task}" for domain, task in suite.ALL_TASKS]


def parse_name(name: str) -> tuple[str, str]:
    """``"dmc/ball_in_cup-catch"`` -> ``("ball_in_cup", "catch")``; unknown names raise
    ``UnknownSimError`` listing every valid name."""
    body = name[len(PREFIX):] if name.startswith(PREFIX) else name
    domain, sep, task = body.partition("-")
    if sep and (domain, task) in suite.ALL_TASKS:
        return domain, task
    valid = all_task_names()
    close = difflib.get_close_matches(f"{PREFIX}{body}", valid, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownSimError(
        f"unknown dm-control suite task {name!r}: expected '{PREFIX}<domain>-<task>' with one of the "
        f"suite's domain-task pairs.{hint} Available: {', '.join(valid)}"
    )


class DmcSuiteEnv(MujocoSimEnv):
    """A dm-control suite task (any ``domain``/``task`` of ``dm_control.suite.ALL_TASKS``).

    Args:
        domain, task: the suite pair; curated subclasses fix them as class attributes.
        **kwargs: the ``SimEnv`` keyword arguments.

    Attributes:
        physics, dm_task, suite_env: dm-control's physics, task and environment (privileged
            access for demonstrators; never call ``suite_env.step``/``reset``).
        n_sub_steps: physics steps per control step, fixed at build time.
        proprio_keys, proprio_slices: the observation keys flattened into ``proprio``, in order.
        task_seed: the seed ``task.random`` got at the last reset;
            ``suite.load(domain, task, task_kwargs={"random": task_seed}).reset()`` starts the
            same episode.
        default_max_episode_steps: the suite's own time limit in control steps (usually 1000)
            for generic tasks; curated tasks set a shorter one.

    dm-control raises its ``PhysicsError`` from ``step`` if MuJoCo reports a diverging state.
    """

    dmc_domain: str = ""
    dmc_task: str = ""
    defines_success = False

    def __init__(self, domain: str | None = None, task: str | None = None, **kwargs: Any) -> None:
        domain = domain or self.dmc_domain
        task = task or self.dmc_task
        if (domain, task) not in suite.ALL_TASKS:
            parse_name(f"{PREFIX}{domain}-{task}")  # raises with the list of valid pairs
        self.dmc_domain, self.dmc_task = domain, task
        self.name = self.name or f"{PREFIX}{domain}-{task}"
        if not self.task_text:
            self.task_text = f"{domain.replace('_', ' ')}: {task.replace('_', ' ')}"
        # The suite environment is loaded before the base constructor so its time limit can
        # set the default episode length of generic tasks.
        self.suite_env = suite.load(domain, task, task_kwargs={"random": 0})
        self.physics = self.suite_env.physics
        _disable_dm_control_rendering(self.physics)
        self.dm_task = self.suite_env.task
        control_dt = self.suite_env.control_timestep()
        self.n_sub_steps = max(1, int(round(control_dt / self.physics.timestep())))
        curated_length = any(
            "default_max_episode_steps" in vars(c) for c in type(self).__mro__ if issubclass(c, DmcSuiteEnv)
        )
        if not curated_length:
            limit = getattr(self.suite_env, "_step_limit", float("inf"))
            if np.isfinite(limit) and limit > 0:
                self.default_max_episode_steps = int(round(limit))
        self.task_seed: int | None = None
        super().__init__(**kwargs)

    @property
    def control_timestep(self) -> float:
        """Seconds per control step (changes with the ``timestep`` parameter)."""
        return float(self.model.opt.timestep) * self.n_sub_steps

    # ------------------------------------------------------------------ SimEnv hooks

    def _build(self) -> None:
        physics = self.physics
        self._attach_mujoco(physics.model.ptr, physics.data.ptr)
        if self.camera_name is None and self.camera_view is None and self.model.ncam > 0:
            self.camera_name = 0
        # One episode start gives the observation layout.
        with physics.reset_context():
            self.dm_task.initialize_episode(physics)
        obs = self.dm_task.get_observation(physics)
        self.proprio_keys: tuple[str, ...] = tuple(k for k, v in obs.items() if not _is_pixels(v))
        self.proprio_slices: dict[str, slice] = {}
        start = 0
        for key in self.proprio_keys:
            size = int(np.asarray(obs[key]).size)
            self.proprio_slices[key] = slice(start, start + size)
            start += size
        self._proprio_dim = start
        self._task_fields = tuple(f for f in _TASK_MODEL_FIELDS if getattr(self.model, f).size > 0)
        self._rendered_hfield: np.ndarray | None = None

    def _embodiment(self) -> Embodiment:
        spec = self.dm_task.action_spec(self.physics)
        low = np.broadcast_to(np.asarray(spec.minimum, dtype=np.float64), spec.shape)
        high = np.broadcast_to(np.asarray(spec.maximum, dtype=np.float64), spec.shape)
        return Embodiment(
            name=f"{PREFIX}{self.dmc_domain}",
            proprio_dim=self._proprio_dim,
            action_dim=int(np.prod(spec.shape)),
            action_low=tuple(float(x) for x in low),
            action_high=tuple(float(x) for x in high),
        )

    def _reset_task(self, rng: np.random.Generator) -> None:
        self.task_seed = int(rng.integers(0, 2**32))
        self.dm_task.random.seed(self.task_seed)
        with self.physics.reset_context():
            self.dm_task.initialize_episode(self.physics)
        self._on_episode_start()

    def _on_episode_start(self) -> None:
        """Curated tasks reset their success bookkeeping here (after the episode is set up)."""

    def _step_task(self, action: np.ndarray) -> float:
        self.dm_task.before_step(action, self.physics)
        self.physics.step(self.n_sub_steps)
        self.dm_task.after_step(self.physics)
        return float(self.dm_task.get_reward(self.physics))

    def observation_dict(self) -> Mapping[str, np.ndarray]:
        """The task's own observation dict (noise-free), as dm-control returns it."""
        return self.dm_task.get_observation(self.physics)

    def _proprio(self) -> np.ndarray:
        obs = self.dm_task.get_observation(self.physics)
        return np.concatenate([np.asarray(obs[k], dtype=np.float64).ravel() for k in self.proprio_keys])

    def _terminated(self) -> bool:
        return self.dm_task.get_termination(self.physics) is not None

    def _get_task_state(self) -> dict[str, np.ndarray]:
        arrays = {f"model.{f}": getattr(self.model, f).copy() for f in self._task_fields}
        _, key, pos, has_gauss, cached = self.dm_task.random.get_state()
        arrays["task_random.key"] = np.asarray(key, dtype=np.uint32).copy()
        arrays["task_random.aux"] = np.array([pos, has_gauss, cached], dtype=np.float64)
        if self.model.nsensordata:
            arrays["data.sensordata"] = self.data.sensordata.copy()
        return arrays

    def _set_task_state(self, arrays: dict[str, np.ndarray]) -> None:
        for f in self._task_fields:
            getattr(self.model, f)[...] = arrays[f"model.{f}"]
        pos, has_gauss, cached = arrays["task_random.aux"]
        self.dm_task.random.set_state(
            ("MT19937", arrays["task_random.key"].astype(np.uint32), int(pos), int(has_gauss), float(cached))
        )

    def _set_engine_state(self, arrays: dict[str, np.ndarray]) -> None:
        super()._set_engine_state(arrays)
        # dm-control's legacy step ends with mj_step1, so acceleration-stage sensors
        # (accelerometers, force/torque, touch) still hold the values from the step's mj_step2;
        # the base's mj_forward recomputes them at the restored state. Put the saved readings
        # back so the first observation after a restore is the one seen at the snapshot.
        if "data.sensordata" in arrays:
            self.data.sensordata[:] = arrays["data.sensordata"]

    # ------------------------------------------------------------------ camera

    def _setup_camera(self) -> None:
        super()._setup_camera()
        self._rendered_hfield = self.model.hfield_data.copy() if self.model.nhfield else None

    def _render_camera(self) -> np.ndarray:
        # A task that rewrote its terrain (quadruped escape) needs the height field re-uploaded.
        if (
            self._renderer is not None
            and self._rendered_hfield is not None
            and not np.array_equal(self._rendered_hfield, self.model.hfield_data)
        ):
            self._renderer.close()
            self._renderer = None
        return super()._render_camera()


_NO_CONTEXT_CLASSES: dict[type, type] = {}


def _disable_dm_control_rendering(physics: Any) -> None:
    """Make ``physics.contexts`` None: frames come from our ``mujoco.Renderer``.

    dm-control creates its own GL context the first time ``physics.contexts`` is read, and
    quadruped's terrain tasks read it on every episode start; a second GL context per env is
    slow and, with EGL, corrupts the frames of other renderers in the same process.
    """
    cls = type(physics)
    if cls not in _NO_CONTEXT_CLASSES:
        _NO_CONTEXT_CLASSES[cls] = type(cls.__name__, (cls,), {"contexts": property(lambda self: None)})
    physics.__class__ = _NO_CONTEXT_CLASSES[cls]


def _is_pixels(value: Any) -> bool:
    arr = np.asarray(value)
    return arr.dtype == np.uint8 and arr.ndim >= 2


def make_suite_env(name: str, **config: Any) -> DmcSuiteEnv:
    """Family factory: ``dmc/<domain>-<task>`` -> a generic ``DmcSuiteEnv``."""
    domain, task = parse_name(name)
    return DmcSuiteEnv(domain, task, **config)


register_family(
    PREFIX,
    make_suite_env,
    tags=("dmc", "mujoco"),
    description=f"{PREFIX}<domain>-<task> for any dm-control suite task ({len(suite.ALL_TASKS)} pairs)",
)
