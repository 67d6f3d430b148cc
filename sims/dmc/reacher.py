"""``dmc/reacher-easy``: bring a two-link planar arm's fingertip to a random target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sims.dmc.suite import DmcSuiteEnv
from sims.registry import register


@register("dmc/reacher-easy", tags=("dmc", "mujoco", "curated"))
class ReacherEasy(DmcSuiteEnv):
    """dm-control's reacher (easy): a target of radius 0.05 m is placed uniformly at 0.05-0.20 m
    from the shoulder, the arm starts at random joint angles.

    Success (dm-control's own definition, where its sparse reward is 1): the distance between
    the fingertip centre and the target centre, in the arm's plane, is below the target radius
    plus the fingertip radius (0.05 + 0.01 m), at that step.
    """

    dmc_domain = "reacher"
    dmc_task = "easy"
    task_text = "touch the target with the fingertip"
    defines_success = True
    default_max_episode_steps = 150
    camera_name = "fixed"

    def finger_to_target_dist(self) -> float:
        return float(self.physics.finger_to_target_dist())

    def success_radius(self) -> float:
        return float(self.physics.named.model.geom_size[["target", "finger"], 0].sum())

    def _update_success(self) -> bool:
        return self.finger_to_target_dist() < self.success_radius()

    def _joints_from_proprio(self, proprio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # position (shoulder, wrist angles), to_target (follows from them and the target), velocity
        return proprio[0:2].copy(), proprio[4:6].copy()

    def demonstrator(self) -> ReacherDemonstrator:
        return ReacherDemonstrator(self)


class ReacherDemonstrator:
    """Analytic two-link inverse kinematics to the target, then joint-space PD.

    Reads the privileged target position and joint state. Of the two IK solutions (elbow
    left/right) it keeps the one whose wrist angle lies within the wrist's +-160 degree range and
    is closest to the current configuration.
    """

    KP = 6.0
    KD = 0.6

    def __init__(self, env: ReacherEasy) -> None:
        self.env = env
        named = env.physics.named
        # Link lengths: shoulder -> wrist, wrist -> fingertip (body offsets in the model).
        self._l1 = float(np.linalg.norm(named.model.body_pos["hand"][:2]))
        self._l2 = float(np.linalg.norm(named.model.body_pos["finger"][:2]))
        self._wrist_limit = float(named.model.jnt_range["wrist"][1])
        self._goal: np.ndarray | None = None

    def reset(self) -> None:
        self._goal = None

    def _ik(self, target: np.ndarray, q: np.ndarray) -> np.ndarray:
        l1, l2 = self._l1, self._l2
        r = float(np.clip(np.linalg.norm(target), abs(l1 - l2) + 1e-6, l1 + l2 - 1e-6))
        cos_elbow = np.clip((r**2 - l1**2 - l2**2) / (2 * l1 * l2), -1.0, 1.0)
        best, best_cost = None, np.inf
        for elbow in (np.arccos(cos_elbow), -np.arccos(cos_elbow)):
            if abs(elbow) > self._wrist_limit:
                continue
            shoulder = np.arctan2(target[1], target[0]) - np.arctan2(l2 * np.sin(elbow), l1 + l2 * np.cos(elbow))
            # Shoulder is unlimited: take the turn closest to where it is now.
            shoulder = q[0] + (shoulder - q[0] + np.pi) % (2 * np.pi) - np.pi
            cost = abs(shoulder - q[0]) + abs(elbow - q[1])
            if cost < best_cost:
                best, best_cost = np.array([shoulder, elbow]), cost
        assert best is not None
        return best

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        physics = self.env.physics
        q = physics.data.qpos.copy()
        qdot = physics.data.qvel.copy()
        target = physics.named.data.geom_xpos["target", :2] - physics.named.data.xpos["arm", :2]
        goal = self._ik(target, q)
        return np.clip(self.KP * (goal - q) - self.KD * qdot, -1.0, 1.0)
