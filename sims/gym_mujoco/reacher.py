"""``mujoco/reacher``: gymnasium's Reacher-v5 behind the sims interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv

from sims.gym_mujoco._base import GymMujocoTask
from sims.registry import register

LINK0 = 0.1  # shoulder -> elbow (m)
LINK1 = 0.11  # elbow -> fingertip body (m)
ELBOW_LIMIT = 3.0  # joint1 range is [-3, 3] rad


@register("mujoco/reacher", tags=("mujoco", "gymnasium", "reach", "arm", "planar"))
class Reacher(GymMujocoTask):
    """A two-link planar arm reaches a randomly placed target (gymnasium Reacher-v5).

    Success: the fingertip (the ``fingertip`` body) is within ``success_radius`` = 0.02 m of
    the target's centre (the ``target`` body), in the plane, at ``hold_steps`` = 5 consecutive
    checks (the reset state and each step after it are checked once), i.e. the arm arrives
    and stays for 0.08-0.1 s rather than sweeping past. ``info["success"]`` is true at every
    check from the fifth consecutive one inside on, and false again as soon as the fingertip
    leaves. The episode never terminates; it is truncated after 50 steps (1 s), as upstream.

    Reset, observation (10 numbers: cos/sin of the two joint angles, target x/y, joint
    velocities, fingertip minus target x/y), reward (minus the distance minus the squared
    action norm) and dynamics are gymnasium's: the arm starts within +-0.1 rad of straight,
    the target is uniform in the 0.2 m disc. Actions are the two joint torques in [-1, 1].
    One difference: upstream reads the fingertip and target positions one physics substep
    stale (straight after ``mj_step``); here they are current at the end of the step, as the
    exact-state rule requires, so observation and reward equal upstream's after ``mj_forward``.
    """

    name = "mujoco/reacher"
    task_text = "reach the red target with the fingertip and hold it there"
    default_max_episode_steps = 50
    gym_env_class = ReacherEnv
    # Top-down view of the 0.2 m reach disc (the arena border at 0.3 m is just outside).
    camera_view = (0.0, 0.0, 0.0, 0.62, 90.0, -90.0)

    success_radius = 0.02
    hold_steps = 5

    def _build(self) -> None:
        super()._build()
        self._fingertip = self.model.body("fingertip").id
        self._target = self.model.body("target").id
        self._hold = 0

    def _reset_task(self, rng: np.random.Generator) -> None:
        # gymnasium's reset_model, drawing from ``rng`` in the same order.
        qpos = rng.uniform(low=-0.1, high=0.1, size=self.model.nq) + self.init_qpos
        while True:
            goal = rng.uniform(low=-0.2, high=0.2, size=2)
            if np.linalg.norm(goal) < 0.2:
                break
        qpos[-2:] = goal
        qvel = self.init_qvel + rng.uniform(low=-0.005, high=0.005, size=self.model.nv)
        qvel[-2:] = 0
        self._start(qpos, qvel)
        self._hold = 0

    def _step_task(self, action: np.ndarray) -> float:
        self._simulate(action)
        reward, _ = self._inner._get_rew(action)
        return float(reward)

    def distance(self) -> float:
        """Fingertip-to-target distance in the plane (m)."""
        delta = self.data.xpos[self._fingertip] - self.data.xpos[self._target]
        return float(np.hypot(delta[0], delta[1]))

    def _update_success(self) -> bool:
        self._hold = self._hold + 1 if self.distance() < self.success_radius else 0
        return self._hold >= self.hold_steps

    def _joints_from_proprio(self, proprio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # cos(q0, q1), sin(q0, q1), target x/y (its slide joints' qpos, at rest), joint
        # velocities; the fingertip-minus-target entries follow from the rest.
        cos, sin, target, qvel = proprio[0:2], proprio[2:4], proprio[4:6], proprio[6:8]
        return np.concatenate([np.arctan2(sin, cos), target]), np.concatenate([qvel, np.zeros(2)])

    def _get_task_state(self) -> dict[str, np.ndarray]:
        return {"hold": np.array(self._hold, dtype=np.int64)}

    def _set_task_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._hold = int(arrays["hold"])

    def demonstrator(self) -> ReacherDemonstrator:
        return ReacherDemonstrator(self)


class ReacherDemonstrator:
    """Analytic two-link inverse kinematics, then joint-space PD to the IK solution.

    Reads the target and joint state from the env (privileged). Of the two elbow solutions it
    keeps the one nearer the current joint angles; targets closer than the folded arm can
    reach are projected onto the reachable annulus.
    """

    def __init__(self, env: Reacher, kp: float = 2.0, kd: float = 0.12) -> None:
        self.env = env
        self.kp = kp
        self.kd = kd

    def reset(self) -> None:
        pass

    def joint_target(self) -> np.ndarray:
        data = self.env.data
        x, y = data.qpos[2], data.qpos[3]
        q0, q1 = data.qpos[0], data.qpos[1]
        cos_elbow = (x * x + y * y - LINK0**2 - LINK1**2) / (2 * LINK0 * LINK1)
        elbow = np.arccos(np.clip(cos_elbow, np.cos(ELBOW_LIMIT - 0.05), 1.0))
        best, best_cost = None, np.inf
        for e in (elbow, -elbow):
            shoulder = np.arctan2(y, x) - np.arctan2(LINK1 * np.sin(e), LINK0 + LINK1 * np.cos(e))
            shoulder = q0 + _wrap(shoulder - q0)  # joint0 is unlimited: go the short way
            cost = abs(shoulder - q0) + abs(e - q1)
            if cost < best_cost:
                best, best_cost = np.array([shoulder, e]), cost
        return best

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        data = self.env.data
        error = self.joint_target() - data.qpos[:2]
        action = self.kp * error - self.kd * data.qvel[:2]
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)
