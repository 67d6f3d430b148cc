"""What every MuJoCo-based task shares, whether it comes from gymnasium or dm-control.

Both front ends sit on a raw ``mujoco.MjModel``/``MjData`` pair, so physical parameters,
exact state and the camera are handled here once:

- parameters are applied relative to the model's nominal arrays, never compounding:
  mass_scale multiplies body masses and inertias, friction_scale the sliding friction of
  every geom, actuator_gain every actuator's gear, gravity sets ``opt.gravity`` (pointing
  down -z) and timestep sets ``opt.timestep``;
- state is MuJoCo's full integration state (``mjSTATE_INTEGRATION``: time, qpos, qvel,
  act, warm-start accelerations, ctrl, mocap, user data) plus whatever the task adds in
  ``_get_task_state``; after a restore ``mj_forward`` brings derived quantities up to date;
- the camera is a ``mujoco.Renderer`` with shadows and reflections off (they triple the
  cost of a 64x64 frame and teach the model nothing).
"""

from __future__ import annotations

import weakref

import mujoco
import numpy as np

from sims.env import SimEnv
from sims.params import PhysicsParams
from sims.rendering import require_mujoco_rendering

_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION


class MujocoSimEnv(SimEnv):
    """A SimEnv over a raw MuJoCo model. Subclasses call ``_attach_mujoco`` in ``_build``."""

    # Camera: a named/indexed camera of the model, or None for a free camera set by
    # ``camera_view`` (lookat x, y, z, distance, azimuth, elevation).
    camera_name: str | int | None = None
    camera_view: tuple[float, float, float, float, float, float] | None = None

    def _attach_mujoco(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        self.model = model
        self.data = data
        self._nominal_arrays = {
            "body_mass": model.body_mass.copy(),
            "body_inertia": model.body_inertia.copy(),
            "geom_friction": model.geom_friction.copy(),
            "actuator_gear": model.actuator_gear.copy(),
        }
        self._nominal_gravity = float(-model.opt.gravity[2])
        self._nominal_timestep = float(model.opt.timestep)
        self._renderer: mujoco.Renderer | None = None

    # ------------------------------------------------------------------ parameters

    def _nominal_params(self) -> PhysicsParams:
        return PhysicsParams(gravity=self._nominal_gravity, timestep=self._nominal_timestep)

    def _apply_params(self, params: PhysicsParams) -> None:
        m, nominal = self.model, self._nominal_arrays
        m.body_mass[:] = nominal["body_mass"] * params.mass_scale
        m.body_inertia[:] = nominal["body_inertia"] * params.mass_scale
        m.geom_friction[:, 0] = nominal["geom_friction"][:, 0] * params.friction_scale
        m.actuator_gear[:, 0] = nominal["actuator_gear"][:, 0] * params.actuator_gain
        m.opt.gravity[:] = (0.0, 0.0, -params.gravity)
        m.opt.timestep = params.timestep
        # Masses feed constants (subtree masses, inverse inertias) that mj_setConst derives; it
        # scribbles on data, so keep the dynamic state around it.
        saved = self._mujoco_state()
        mujoco.mj_setConst(m, self.data)
        self._restore_mujoco_state(saved)

    # ------------------------------------------------------------------ state

    def _mujoco_state(self) -> np.ndarray:
        state = np.empty(mujoco.mj_stateSize(self.model, _STATE_SPEC))
        mujoco.mj_getState(self.model, self.data, state, _STATE_SPEC)
        return state

    def _restore_mujoco_state(self, state: np.ndarray) -> None:
        mujoco.mj_setState(self.model, self.data, state, _STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)

    def _get_engine_state(self) -> dict[str, np.ndarray]:
        return {"mujoco": self._mujoco_state(), **self._get_task_state()}

    def _set_engine_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._set_task_state(arrays)
        self._restore_mujoco_state(arrays["mujoco"])

    def _write_joints(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        # The constraint solver's warm start belongs to the motion being replaced.
        self.data.qacc_warmstart[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def _get_task_state(self) -> dict[str, np.ndarray]:
        """Task bookkeeping outside MjData (hold counters, targets kept in the model...)."""
        return {}

    def _set_task_state(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    # ------------------------------------------------------------------ camera

    def _setup_camera(self) -> None:
        require_mujoco_rendering(self.name)
        size = self.image_size
        # The offscreen buffer must be at least the frame size.
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, size)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, size)
        self._renderer = mujoco.Renderer(self.model, size, size)
        # Close the GL context before interpreter teardown even if nobody calls close():
        # EGL otherwise raises (ignored, noisy) exceptions at exit.
        weakref.finalize(self, self._renderer.close)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._camera: str | int | mujoco.MjvCamera
        if self.camera_name is not None:
            self._camera = self.camera_name
        else:
            cam = mujoco.MjvCamera()
            mujoco.mjv_defaultFreeCamera(self.model, cam)
            if self.camera_view is not None:
                *lookat, cam.distance, cam.azimuth, cam.elevation = self.camera_view
                cam.lookat[:] = lookat
            self._camera = cam

    def _render_camera(self) -> np.ndarray:
        if self._renderer is None:
            self._setup_camera()
        self._renderer.update_scene(self.data, self._camera)
        self._decorate_scene(self._renderer.scene)
        return self._renderer.render().copy()

    def _decorate_scene(self, scene: mujoco.MjvScene) -> None:
        """Adjust what the camera draws (e.g. enlarge tiny markers); never touches physics."""

    def close(self) -> None:
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None
        super().close()
