"""Pick up the glass: a Franka Panda grasps a cup-like cylinder on a table and lifts it."""

from __future__ import annotations

import math
import os

import numpy as np
import pybullet_data

from sims.embodiment import Embodiment
from sims.pybullet.engine import PybulletSimEnv, pybullet
from sims.registry import register

ARM = list(range(7))
FINGERS = [9, 10]
GRASP_LINK = 11  # panda_grasptarget: between the fingertips
HOME = (0.0, -0.2, 0.0, -2.3, 0.0, 2.1, math.pi / 4)  # grasp point ~0.48 m ahead, 0.32 m up
ARM_FORCE = 87.0  # N m, the Panda's joint torque limit
ARM_POSITION_GAIN = 0.1
FINGER_FORCE = 20.0  # N per finger
FINGER_OPEN = 0.04  # m per finger
MAX_STEP = 0.015  # m of end-effector motion per control step at full action
WORKSPACE = (np.array([0.25, -0.45, 0.0]), np.array([0.8, 0.45, 0.55]))
CUP_RADIUS, CUP_HEIGHT, CUP_MASS = 0.03, 0.10, 0.1
CUP_X, CUP_Y = (0.40, 0.65), (-0.20, 0.20)
LIFT_HEIGHT = 0.10  # m the cup must rise above where it rests
HOLD_STEPS = 10


@register("pybullet/panda-lift", tags=("pybullet", "manipulation", "panda"))
class PandaLift(PybulletSimEnv):
    """Pick up the glass: grasp a cup standing on the table and lift it.

    A fixed-base Franka Panda (``franka_panda/panda.urdf`` from pybullet_data) faces a
    6 cm wide, 10 cm tall, 0.1 kg cylinder placed uniformly at x in [0.40, 0.65] m,
    y in [-0.20, 0.20] m; the arm starts near a home pose with 0.03 rad of joint noise.

    Action (4, each in [-1, 1]): end-effector displacement x, y, z (times 1.5 cm per control
    step, applied to a commanded grasp point kept inside a workspace box and reached by
    inverse kinematics with the hand pointing down), and the gripper (-1 open, +1 closed,
    in between proportionally).
    Proprio (26): arm joint positions (7) and velocities (7), finger positions (2), grasp
    point position in the world (3), cup position (3) and orientation quaternion (4, w >= 0)
    in the gripper frame.
    Success: the cup has been more than 10 cm above its resting height, touched by both
    fingers, for the last 10 consecutive control steps (1/3 s).
    Reward: ``1 - tanh(10 d)`` for the grasp point-to-cup distance ``d``, plus the cup's lift
    as a fraction of 10 cm (at most 1).

    Control runs at 30 Hz (8 physics steps of 1/240 s). The actuator gain scales the arm's
    and the fingers' force limits and the arm's position gain.
    """

    name = "pybullet/panda-lift"
    task_text = "pick up the glass"
    default_max_episode_steps = 120
    nominal_timestep = 1.0 / 240.0
    frame_skip = 8
    camera_view = (0.35, 0.0, 0.25, 1.2, 70.0, -25.0)

    def _build_scene(self) -> None:
        c = self.client
        table_half = [0.6, 0.6, 0.05]
        self.table = c.createMultiBody(
            0.0,
            c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=table_half),
            c.createVisualShape(pybullet.GEOM_BOX, halfExtents=table_half, rgbaColor=[0.6, 0.45, 0.3, 1.0]),
            basePosition=[0.4, 0.0, -table_half[2]],
        )
        if self.needs_visuals:
            self.robot = c.loadURDF(self._light_panda_urdf(), useFixedBase=True,
                                    flags=pybullet.URDF_ENABLE_CACHED_GRAPHICS_SHAPES)
        else:
            self.robot = c.loadURDF("franka_panda/panda.urdf", useFixedBase=True,
                                    flags=pybullet.URDF_IGNORE_VISUAL_SHAPES)
        self.cup = c.createMultiBody(
            CUP_MASS,
            c.createCollisionShape(pybullet.GEOM_CYLINDER, radius=CUP_RADIUS, height=CUP_HEIGHT),
            c.createVisualShape(pybullet.GEOM_CYLINDER, radius=CUP_RADIUS, length=CUP_HEIGHT,
                                rgbaColor=[0.55, 0.8, 0.95, 1.0]),
            basePosition=[0.5, 0.0, CUP_HEIGHT / 2],
        )
        c.changeDynamics(self.cup, -1, lateralFriction=1.0)  # a grippy glass; the fingers are 1.0 too
        infos = [c.getJointInfo(self.robot, j) for j in ARM]
        self._lower = [i[8] for i in infos]
        self._upper = [i[9] for i in infos]
        self._ranges = [hi - lo for lo, hi in zip(self._lower, self._upper)]
        self._down = c.getQuaternionFromEuler([math.pi, 0.0, 0.0])
        self._ee_target = np.zeros(3)
        self._hold = 0

    def _light_panda_urdf(self) -> str:
        """The stock Panda drawn with its collision meshes.

        TinyRenderer's cost grows with triangles: the detailed visual meshes take ~24 ms a
        64x64 frame, the convex collision meshes ~1.6 ms, and look the same at that size.
        Only the visuals change (paths made absolute, as the file moves to our scratch folder).
        """
        root = os.path.join(pybullet_data.getDataPath(), "franka_panda")
        with open(os.path.join(root, "panda.urdf")) as f:
            text = f.read()
        for kind in ("visual", "collision"):
            text = text.replace(f"package://meshes/{kind}/", os.path.join(root, "meshes", "collision", ""))
        return self.urdf_path("panda_light.urdf", text)

    def _embodiment(self) -> Embodiment:
        return Embodiment("panda", proprio_dim=26, action_dim=4, action_low=(-1.0,) * 4, action_high=(1.0,) * 4)

    # ------------------------------------------------------------------ privileged accessors

    def grasp_point(self) -> np.ndarray:
        return np.array(self.client.getLinkState(self.robot, GRASP_LINK, computeForwardKinematics=True)[4])

    def cup_position(self) -> np.ndarray:
        return np.array(self.client.getBasePositionAndOrientation(self.cup)[0])

    @property
    def ee_target(self) -> np.ndarray:
        """The commanded grasp point the actions move."""
        return self._ee_target.copy()

    def cup_lift(self) -> float:
        return float(self.cup_position()[2] - CUP_HEIGHT / 2)

    def _both_fingers_touch(self) -> bool:
        c = self.client
        return all(c.getContactPoints(self.robot, self.cup, finger, -1) for finger in FINGERS)

    # ------------------------------------------------------------------ task

    def _reset_task(self, rng: np.random.Generator) -> None:
        c = self.client
        # From the world as built, so no contact cached in the previous episode warm-starts
        # this one.
        self._reset_world()
        home = np.array(HOME) + rng.normal(0.0, 0.03, len(HOME))
        for j, q in zip(ARM, home):
            c.resetJointState(self.robot, j, float(q), 0.0)
        for j in FINGERS:
            c.resetJointState(self.robot, j, FINGER_OPEN, 0.0)
        cup_xy = [rng.uniform(*CUP_X), rng.uniform(*CUP_Y)]
        c.resetBasePositionAndOrientation(self.cup, [*cup_xy, CUP_HEIGHT / 2], [0.0, 0.0, 0.0, 1.0])
        c.resetBaseVelocity(self.cup, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
        self._ee_target = np.clip(self.grasp_point(), *WORKSPACE)
        self._hold = 0

    def _step_task(self, action: np.ndarray) -> float:
        c, gain = self.client, self.actuator_gain
        self._ee_target = np.clip(self._ee_target + MAX_STEP * action[:3], *WORKSPACE)
        joints = c.calculateInverseKinematics(
            self.robot, GRASP_LINK, self._ee_target.tolist(), self._down,
            lowerLimits=self._lower, upperLimits=self._upper, jointRanges=self._ranges,
            restPoses=list(HOME), maxNumIterations=50, residualThreshold=1e-5,
        )
        width = FINGER_OPEN * (1.0 - float(action[3])) / 2.0
        # Motor commands persist in PyBullet but are set before every step, so they are
        # never part of the state.
        c.setJointMotorControlArray(
            self.robot, ARM, pybullet.POSITION_CONTROL, targetPositions=joints[:7],
            forces=[ARM_FORCE * gain] * 7, positionGains=[ARM_POSITION_GAIN * gain] * 7, velocityGains=[1.0] * 7,
        )
        c.setJointMotorControlArray(
            self.robot, FINGERS, pybullet.POSITION_CONTROL, targetPositions=[width] * 2,
            forces=[FINGER_FORCE * gain] * 2,
        )
        for _ in range(self.frame_skip):
            c.stepSimulation()
        distance = float(np.linalg.norm(self.cup_position() - self.grasp_point()))
        return 1.0 - math.tanh(10.0 * distance) + min(max(self.cup_lift(), 0.0) / LIFT_HEIGHT, 1.0)

    def _proprio(self) -> np.ndarray:
        c = self.client
        arm = c.getJointStates(self.robot, ARM)
        fingers = [s[0] for s in c.getJointStates(self.robot, FINGERS)]
        link = c.getLinkState(self.robot, GRASP_LINK, computeForwardKinematics=True)
        grasp_pos, grasp_orn = link[4], link[5]
        cup_pos, cup_orn = c.getBasePositionAndOrientation(self.cup)
        inv_pos, inv_orn = c.invertTransform(grasp_pos, grasp_orn)
        rel_pos, rel_orn = c.multiplyTransforms(inv_pos, inv_orn, cup_pos, cup_orn)
        rel_orn = np.array(rel_orn)
        if rel_orn[3] < 0:  # q and -q are the same rotation: keep one
            rel_orn = -rel_orn
        return np.concatenate([
            [s[0] for s in arm], [s[1] for s in arm], fingers, grasp_pos, rel_pos, rel_orn,
        ])

    def _update_success(self) -> bool:
        held = self.cup_lift() > LIFT_HEIGHT and self._both_fingers_touch()
        self._hold = self._hold + 1 if held else 0
        return self._hold >= HOLD_STEPS

    def _get_task_state(self) -> dict[str, np.ndarray]:
        return {"ee_target": self._ee_target.copy(), "hold": np.array(self._hold, dtype=np.int64)}

    def _set_task_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._ee_target = np.array(arrays["ee_target"], dtype=np.float64)
        self._hold = int(arrays["hold"])

    def demonstrator(self) -> PandaLiftDemonstrator:
        return PandaLiftDemonstrator(self)


class PandaLiftDemonstrator:
    """Approach above the cup, descend around it, close the gripper, lift (privileged state).

    Each phase moves the commanded grasp point straight at a waypoint as fast as the action
    bound allows; a phase ends when the measured grasp point is within a tolerance of its
    waypoint (approach, descend) or after a fixed number of steps (close).
    """

    APPROACH_HEIGHT = 0.12  # m above the cup centre
    CLOSE_STEPS = 8
    LIFT_TO = 0.25  # m, grasp point height to lift to

    def __init__(self, env: PandaLift) -> None:
        self.env = env
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.closing = 0
        self.grasp_xy: np.ndarray | None = None

    def __call__(self, observation) -> np.ndarray:
        env = self.env
        cup, grasp = env.cup_position(), env.grasp_point()
        if self.phase == "approach":
            waypoint, grip = cup + [0.0, 0.0, self.APPROACH_HEIGHT], -1.0
            if np.linalg.norm(waypoint - grasp) < 0.01:
                self.phase = "descend"
        if self.phase == "descend":
            waypoint, grip = cup.copy(), -1.0
            if np.linalg.norm(waypoint - grasp) < 0.008:
                self.phase, self.grasp_xy = "close", cup[:2].copy()
        if self.phase == "close":
            waypoint, grip = np.array([*self.grasp_xy, cup[2]]), 1.0
            self.closing += 1
            if self.closing > self.CLOSE_STEPS:
                self.phase = "lift"
        if self.phase == "lift":
            waypoint, grip = np.array([*self.grasp_xy, self.LIFT_TO]), 1.0
        move = np.clip((waypoint - env.ee_target) / MAX_STEP, -1.0, 1.0)
        return np.array([*move, grip], dtype=np.float32)
