"""The learned world simulator corrected by physics, fidelity metrics, and the grader.

    from world_model import collect, fit, save_checkpoint, fidelity, probe_set, grade
    data = collect("dmc/cartpole-swingup", 4000)
    simulator = fit(data)                          # an ensemble of small MLPs over proprio
    save_checkpoint(simulator, "runs/wm")
    env = sims.make("learned/dmc/cartpole-swingup", checkpoint="runs/wm", correct_every=8)
    fidelity(env, "dmc/cartpole-swingup").fidelity  # in [0, 1], 1 = identical on the probe set

The ``learned/`` family is declared as a ``flywheel.sims`` entry point, so
``sims.make("learned/...")`` works without importing this package; importing it registers
the family directly as well.
``world_model`` imports ``sims`` and ``configs`` (``configs.learning`` holds the grader's knobs) (its model and fit settings are
``configs.schema.WorldModelNetConfig`` / ``WorldModelTrainConfig``); never ``flywheel`` or ``policies``. See docs/world_model.md.
"""

import sims as _sims
from configs.schema import WorldModelNetConfig, WorldModelTrainConfig
from world_model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from world_model.chunk_grader import ChunkGrader
from world_model.data import Transitions, collect
from world_model.evaluate import constant_velocity, k_step_errors
from world_model.fidelity import FidelityResult, fidelity
from world_model.grader import Grade, GradeConfig, grade, grade_batch, physics_gaps
from world_model.learned_env import PREFIX, CorrectionBuffer, LearnedSimEnv, make_learned_env, parse_correct_every
from world_model.metrics import Score, normalized_error, score, spread
from world_model.model import Ensemble
from world_model.probes import ProbeSet, probe_set
from world_model.simulator import LearnedBatch, LearnedSimulator
from world_model.train import fit

# Registered on import as well as declared as an entry point: once world_model is loaded, a
# bad checkpoint is its own ``CheckpointError``, not wrapped as a plug-in failure. Asking for
# the families first loads the registry, so the entry point is replaced, never reported as
# a duplicate.
_sims.families()
_sims.register_family(PREFIX, make_learned_env, tags=("learned",),
                      description=f"{PREFIX}<reference sim> (checkpoint=DIR, correct_every=N|never): "
                                  "the learned simulator")

__all__ = [
    "CheckpointError",
    "ChunkGrader",
    "CorrectionBuffer",
    "Ensemble",
    "FidelityResult",
    "Grade",
    "GradeConfig",
    "LearnedBatch",
    "LearnedSimEnv",
    "LearnedSimulator",
    "PREFIX",
    "ProbeSet",
    "Score",
    "Transitions",
    "WorldModelNetConfig",
    "WorldModelTrainConfig",
    "collect",
    "constant_velocity",
    "fidelity",
    "fit",
    "grade",
    "grade_batch",
    "k_step_errors",
    "load_checkpoint",
    "make_learned_env",
    "normalized_error",
    "parse_correct_every",
    "physics_gaps",
    "probe_set",
    "save_checkpoint",
    "score",
    "spread",
]
