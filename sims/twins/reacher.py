"""Two-link planar reacher, one task implementation run by MuJoCo and by PyBullet.

As for the cartpole, everything but the engine (layout, text, success, demonstrator) is in
``ReacherTask`` and reads the arm through the twin accessor of ``sims.twins.engines``.
Fingertip and target positions come from the description's kinematics, not from either
engine, so both engines report them by the same arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

from sims.embodiment import Embodiment
from sims.registry import register
from sims.twins.cartpole import wrap_angle
from sims.twins.descriptions import ReacherDescription
from sims.twins.engines import MujocoTwinEnv, PybulletTwinEnv

HOLD_STEPS = 10
TARGET_DISTANCE = (0.06, 0.20)  # m from the shoulder; the elbow limit forbids closer targets


class ReacherTask:
    """Move the fingertip of a two-link arm onto a target in the plane.

    Proprio (8): cos and sin of the shoulder and elbow angles, their velocities, and the
    target minus fingertip vector (x, y). Action (2): shoulder and elbow torque commands in
    [-1, 1] (times the gears, 0.05 N m). Episodes start from random joint angles at rest with
    a target 6-20 cm from the shoulder. Success: the fingertip has been within the target's
    radius (2 cm) of its centre for the last 10 consecutive control steps (0.2 s).
    Reward: minus the fingertip-to-target distance in metres.
    """

    description = ReacherDescription()
    task_text = "move the fingertip of the arm onto the red target"
    default_max_episode_steps = 200
    # Until the first reset (get_state may be called on a fresh env).
    _target = np.zeros(2)
    _hold = 0

    def fingertip(self, qpos: np.ndarray | None = None) -> np.ndarray:
        d = self.description
        q1, q2 = self.joint_state()[0] if qpos is None else qpos
        return np.array([
            d.upper_length * math.cos(q1) + d.fore_length * math.cos(q1 + q2),
            d.upper_length * math.sin(q1) + d.fore_length * math.sin(q1 + q2),
        ])

    @property
    def target(self) -> np.ndarray:
        return self._target.copy()

    def _embodiment(self) -> Embodiment:
        return Embodiment("reacher", proprio_dim=8, action_dim=2, action_low=(-1.0, -1.0), action_high=(1.0, 1.0))

    def _reset_task(self, rng: np.random.Generator) -> None:
        self._reset_world()
        lo, hi = self.description.elbow_range
        qpos = np.array([rng.uniform(-math.pi, math.pi), rng.uniform(0.9 * lo, 0.9 * hi)])
        self.set_joint_state(qpos, np.zeros(2))
        angle, radius = rng.uniform(-math.pi, math.pi), rng.uniform(*TARGET_DISTANCE)
        self._set_target(radius * np.array([math.cos(angle), math.sin(angle)]))
        self._hold = 0

    def _set_target(self, xy: np.ndarray) -> None:
        self._target = np.asarray(xy, dtype=np.float64)
        self._place_marker("target", (xy[0], xy[1], self.description.height))

    def _distance(self) -> float:
        return float(np.linalg.norm(self._target - self.fingertip()))

    def _step_task(self, action: np.ndarray) -> float:
        self._actuate(action)
        return -self._distance()

    def _proprio(self) -> np.ndarray:
        (q1, q2), qvel = self.joint_state()
        to_target = self._target - self.fingertip((q1, q2))
        return np.concatenate([[math.cos(q1), math.sin(q1), math.cos(q2), math.sin(q2)], qvel, to_target])

    def _joints_from_proprio(self, proprio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The target-minus-fingertip entries follow from the joints and the target (from ``like``).
        cos1, sin1, cos2, sin2, v1, v2 = proprio[:6]
        return np.array([math.atan2(sin1, cos1), math.atan2(sin2, cos2)]), np.array([v1, v2])

    def _update_success(self) -> bool:
        inside = self._distance() < self.description.target_radius
        self._hold = self._hold + 1 if inside else 0
        return self._hold >= HOLD_STEPS

    def _get_task_state(self) -> dict[str, np.ndarray]:
        return {"target": self._target.copy(), "hold": np.array(self._hold, dtype=np.int64)}

    def _set_task_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._set_target(arrays["target"])
        self._hold = int(arrays["hold"])

    def demonstrator(self) -> ReacherDemonstrator:
        return ReacherDemonstrator(self)


class ReacherDemonstrator:
    """Inverse kinematics to the target, then a PD law on the joint angles.

    Of the two elbow solutions it keeps the one on the elbow's current side, so the arm
    never tries to swing its elbow through the joint limit.
    """

    # Per joint: the forearm alone is ~5x lighter to turn than the whole arm, and a damping
    # gain too high for its inertia makes the 50 Hz loop chatter (Kd dt / I must stay < 2).
    STIFFNESS = np.array([0.1, 0.02])  # N m / rad
    DAMPING = np.array([0.012, 0.003])  # N m s / rad

    def __init__(self, env) -> None:
        self.env = env

    def reset(self) -> None:
        pass

    def __call__(self, observation) -> np.ndarray:
        env, d = self.env, self.env.description
        (q1, q2), qvel = env.joint_state()
        x, y = env.target
        l1, l2 = d.upper_length, d.fore_length
        cos_elbow = np.clip((x * x + y * y - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0)
        elbow = math.copysign(math.acos(cos_elbow), q2 if q2 != 0 else 1.0)
        shoulder = math.atan2(y, x) - math.atan2(l2 * math.sin(elbow), l1 + l2 * math.cos(elbow))
        error = np.array([wrap_angle(shoulder - q1), elbow - q2])
        torque = self.STIFFNESS * error - self.DAMPING * qvel
        return np.clip(torque / np.asarray(d.gear), -1.0, 1.0).astype(np.float32)


@register("pybullet/reacher", tags=("pybullet", "twin", "reacher"))
class PybulletReacher(ReacherTask, PybulletTwinEnv):
    __doc__ = ReacherTask.__doc__
    name = "pybullet/reacher"


@register("mujoco/reacher-twin", tags=("mujoco", "twin", "reacher"))
class MujocoReacher(ReacherTask, MujocoTwinEnv):
    __doc__ = ReacherTask.__doc__
    name = "mujoco/reacher-twin"
