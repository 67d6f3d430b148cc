"""PyBullet tasks: the engine base (``PybulletSimEnv``) and "pick up the glass".

The PyBullet cartpole and reacher are twins of MuJoCo ones and live in ``sims.twins``.
"""

from sims.pybullet import panda  # noqa: F401  (registers pybullet/panda-lift)
from sims.pybullet.engine import PybulletSimEnv

__all__ = ["PybulletSimEnv"]
