"""Cross-engine twins: one robot description, built natively in MuJoCo and in PyBullet.

Each twin pair (``TWIN_PAIRS``) shares its description (``descriptions``), observation and
action layout, task text, success definition and demonstrator; only the engine differs,
so the gap between the two is an engine gap. ``twin_drift`` measures it (``python -m
sims.twins`` prints the table). Registered: ``mujoco/cartpole-swingup-twin`` and
``pybullet/cartpole-swingup``, ``mujoco/cartpole-balance-twin`` and
``pybullet/cartpole-balance``, ``mujoco/reacher-twin`` and ``pybullet/reacher``.
"""

from sims.twins import cartpole, reacher  # noqa: F401  (register the twin tasks)
from sims.twins.descriptions import CartpoleDescription, Chain, ReacherDescription, to_mjcf, to_urdf
from sims.twins.drift import TWIN_PAIRS, TwinDrift, format_drift, twin_drift

__all__ = [
    "TWIN_PAIRS",
    "CartpoleDescription",
    "Chain",
    "ReacherDescription",
    "TwinDrift",
    "format_drift",
    "to_mjcf",
    "to_urdf",
    "twin_drift",
]
