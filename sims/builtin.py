"""Imports the built-in task modules so their ``@register`` decorators run."""

import sims.dmc  # noqa: F401
import sims.gym_mujoco  # noqa: F401
from sims import pybullet, twins  # noqa: F401  (PyBullet tasks; MuJoCo/PyBullet twins)
