"""Every simulator behind one interface.

    import sims
    env = sims.make("dmc/cartpole-swingup", fidelity=0.8, camera=True)
    sims.names(tag="dmc")

``sims`` imports nothing else of this project; it sets ``MUJOCO_GL`` (EGL by default)
before any MuJoCo rendering module can be imported.
"""

import logging as _logging

from sims import rendering as _rendering  # noqa: F401  (must run before mujoco is imported)
from sims.embodiment import ACTION_PAD, PROPRIO_PAD, Embodiment
from sims.env import Demonstrator, NonFiniteError, SimEnv, StateNotDetermined, engine_steps_taken
from sims.params import PhysicsParams, perturb, validate_fidelity
from sims.registry import (
    ENTRY_POINT_GROUP,
    SimPluginError,
    UnknownSimError,
    check_config,
    families,
    make,
    names,
    origin_of,
    register,
    register_family,
    tags_of,
)
from sims.rendering import RenderingUnavailable
from sims.state import SimState

# gymnasium's and dm-control's cheetah models use MuJoCo's deprecated `settotalmass`; the
# compiler says so on every build, which users can do nothing about.
_logging.getLogger("absl").addFilter(lambda record: "settotalmass" not in record.getMessage())

__all__ = [
    "ACTION_PAD",
    "ENTRY_POINT_GROUP",
    "PROPRIO_PAD",
    "NonFiniteError",
    "Demonstrator",
    "Embodiment",
    "PhysicsParams",
    "RenderingUnavailable",
    "SimEnv",
    "SimPluginError",
    "SimState",
    "StateNotDetermined",
    "UnknownSimError",
    "check_config",
    "engine_steps_taken",
    "families",
    "make",
    "names",
    "origin_of",
    "perturb",
    "register",
    "register_family",
    "tags_of",
    "validate_fidelity",
]
