"""One ``Chain`` description, two native builds: the engine half of every twin.

Both classes expose the same small, engine-neutral accessor that tasks and demonstrators
use, so one task implementation runs in either engine:

- ``joint_state() -> (qpos, qvel)`` and ``set_joint_state(qpos, qvel)``, in the chain's
  joint order (slides in metres, hinges in radians);
- ``_actuate(ctrl)``: hold the normalized motor command ``ctrl`` (one entry per actuated
  joint, in [-1, 1]) for ``frame_skip`` physics steps; the torque or force is
  ``ctrl * gear * actuator_gain``, as in a MuJoCo motor;
- ``_place_marker(name, xyz)``: move a visual-only marker (a target);
- ``_reset_world()``: forget everything of the previous episode (call first in a reset);
- ``dt``: simulated seconds per control step.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mujoco
import numpy as np

from sims.mujoco_engine import MujocoSimEnv
from sims.pybullet.engine import PybulletSimEnv, pybullet  # imported quietly there
from sims.twins.descriptions import Chain, to_mjcf, to_urdf


class MujocoTwinEnv(MujocoSimEnv):
    """The MuJoCo half of a twin, built from an MJCF string written from the description."""

    description: ClassVar[Any]  # anything with .chain() -> Chain

    def _build(self) -> None:
        self.chain: Chain = self.description.chain()
        self.frame_skip = self.chain.frame_skip
        model = mujoco.MjModel.from_xml_string(to_mjcf(self.chain))
        self._attach_mujoco(model, mujoco.MjData(model))
        self.camera_view = self.chain.camera
        self._mocap = {m.name: int(model.body(m.name).mocapid[0]) for m in self.chain.markers}
        mujoco.mj_forward(model, self.data)

    @property
    def dt(self) -> float:
        return float(self.model.opt.timestep) * self.frame_skip

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.qpos.copy(), self.data.qvel.copy()

    def set_joint_state(self, qpos, qvel) -> None:
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        # The constraint solver's warm start belongs to the motion being replaced.
        self.data.qacc_warmstart[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def _reset_world(self) -> None:
        mujoco.mj_resetData(self.model, self.data)

    def _actuate(self, ctrl: np.ndarray) -> None:
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        # Derived quantities (body poses for the camera) as functions of the new state.
        mujoco.mj_forward(self.model, self.data)

    def _place_marker(self, name: str, xyz) -> None:
        self.data.mocap_pos[self._mocap[name]] = xyz
        mujoco.mj_forward(self.model, self.data)


class PybulletTwinEnv(PybulletSimEnv):
    """The PyBullet half of a twin, built from a URDF written from the same description.

    PyBullet adds things MuJoCo does not have, and they are switched off here: velocity
    motors on every joint (they would hold the joints still), default linear and angular
    damping of 0.04 on every link, and a joint speed cap of 100 rad/s.
    """

    description: ClassVar[Any]
    max_contacts = 0  # the links have no collision shapes
    camera_fov = 45.0  # MuJoCo's free camera, so both twins frame the robot alike

    def _build_scene(self) -> None:
        chain = self.chain = self.description.chain()
        self.nominal_timestep = chain.timestep
        self.nominal_gravity = chain.gravity
        self.frame_skip = chain.frame_skip
        lookat_x, lookat_y, lookat_z, distance, azimuth, elevation = chain.camera
        # PyBullet's yaw is MuJoCo's azimuth less 90 degrees (both spin about +z).
        self.camera_view = (lookat_x, lookat_y, lookat_z, distance, azimuth - 90.0, elevation)
        c = self.client
        path = self.urdf_path(f"{chain.name}.urdf", to_urdf(chain))
        self.body = c.loadURDF(path, useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE)
        n = len(chain.links)
        self._joints = list(range(n))
        self._actuated = list(chain.actuated)
        self._gears = np.array([chain.links[i].gear for i in self._actuated])
        c.changeDynamics(self.body, -1, linearDamping=0.0, angularDamping=0.0)
        for j, link in enumerate(chain.links):
            c.changeDynamics(self.body, j, linearDamping=0.0, angularDamping=0.0,
                             jointDamping=link.damping, maxJointVelocity=1e4)
        c.setJointMotorControlArray(self.body, self._joints, pybullet.VELOCITY_CONTROL, forces=[0.0] * n)
        self._markers = {}
        for m in chain.markers:
            shape = c.createVisualShape(pybullet.GEOM_SPHERE, radius=m.radius, rgbaColor=list(m.rgba))
            self._markers[m.name] = c.createMultiBody(0.0, -1, shape, basePosition=[0.0, 0.0, -1.0])

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        states = self.client.getJointStates(self.body, self._joints)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def set_joint_state(self, qpos, qvel) -> None:
        for j in self._joints:
            self.client.resetJointState(self.body, j, float(qpos[j]), float(qvel[j]))

    def _write_joints(self, qpos, qvel) -> None:
        self.set_joint_state(qpos, qvel)

    def _actuate(self, ctrl: np.ndarray) -> None:
        c = self.client
        forces = (np.asarray(ctrl, dtype=np.float64) * self._gears * self.actuator_gain).tolist()
        for _ in range(self.frame_skip):
            # PyBullet clears applied torques after every physics step.
            c.setJointMotorControlArray(self.body, self._actuated, pybullet.TORQUE_CONTROL, forces=forces)
            c.stepSimulation()

    def _place_marker(self, name: str, xyz) -> None:
        marker, xyz = self._markers[name], [float(v) for v in xyz]
        # Stepping leaves the static marker's orientation at (-0, -0, -0, 1); re-placing it
        # after restoreState (which already put it back) would store +0 and make the restored
        # state differ bitwise from the saved one.
        if list(self.client.getBasePositionAndOrientation(marker)[0]) != xyz:
            self.client.resetBasePositionAndOrientation(marker, xyz, [0.0, 0.0, 0.0, 1.0])
