"""dm-control suite tasks, and a generic adapter for any ``dmc/<domain>-<task>``.

Curated tasks (with a success definition and a scripted demonstrator): ``dmc/cartpole-swingup``,
``dmc/reacher-easy``, ``dmc/point_mass-easy``, ``dmc/cheetah-run``. Every other suite pair is
served by the generic ``dmc/`` family (no success, no demonstrator).
"""

from sims.dmc.suite import DmcSuiteEnv, all_task_names, parse_name
from sims.dmc import cartpole, cheetah, point_mass, reacher  # noqa: F401  (register the curated tasks)

__all__ = ["DmcSuiteEnv", "all_task_names", "parse_name"]
