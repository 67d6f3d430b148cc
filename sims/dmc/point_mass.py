"""``dmc/point_mass-easy``: push a point mass on a plane into the target at the centre."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np

from sims.dmc.suite import DmcSuiteEnv
from sims.registry import register


@register("dmc/point_mass-easy", tags=("dmc", "mujoco", "curated"))
class PointMassEasy(DmcSuiteEnv):
    """dm-control's point_mass (easy): a 0.3 kg mass on two damped slide joints, started at a
    uniformly random position in the +-0.29 m square, pushed by two bounded forces; the target
    (radius 0.015 m) sits at the centre of the arena.

    Success (where dm-control's ``near_target`` term is 1): the distance from the mass's centre
    to the target's centre is at most the target radius (0.015 m), at that step.
    """

    dmc_domain = "point_mass"
    dmc_task = "easy"
    task_text = "push the ball into the target at the centre"
    defines_success = True
    default_max_episode_steps = 250
    camera_name = "fixed"

    # The mass (radius 0.01 m) and target (0.015 m) would be 2-3 pixels wide in a 64x64 frame of
    # the 0.6 m arena; the camera draws both this many times larger (drawing only: contacts are
    # disabled in this model and the mass is set explicitly, so geom sizes carry no dynamics).
    marker_scale = 2.0

    def _decorate_scene(self, scene: mujoco.MjvScene) -> None:
        ids = {self.model.geom("pointmass").id, self.model.geom("target").id}
        for geom in scene.geoms[: scene.ngeom]:
            if geom.objtype == mujoco.mjtObj.mjOBJ_GEOM and geom.objid in ids:
                geom.size[:] = geom.size * self.marker_scale

    def mass_to_target_dist(self) -> float:
        return float(self.physics.mass_to_target_dist())

    def target_radius(self) -> float:
        return float(self.physics.named.model.geom_size["target", 0])

    def _update_success(self) -> bool:
        return self.mass_to_target_dist() <= self.target_radius()

    def _joints_from_proprio(self, proprio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return proprio[:2].copy(), proprio[2:].copy()  # position, velocity of the two slides

    def demonstrator(self) -> PointMassDemonstrator:
        return PointMassDemonstrator(self)


class PointMassDemonstrator:
    """PD control of the mass towards the target, in world coordinates (privileged positions)."""

    KP = 40.0
    KD = 8.0

    def __init__(self, env: PointMassEasy) -> None:
        self.env = env

    def reset(self) -> None:
        pass

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        physics = self.env.physics
        error = physics.mass_to_target()[:2]
        velocity = physics.named.data.qvel[["root_x", "root_y"]]
        return np.clip(self.KP * error - self.KD * velocity, -1.0, 1.0)
