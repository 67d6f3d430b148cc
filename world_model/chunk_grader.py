"""The grader as a rollout callback: ``grade_chunk(env, start, imagined, realized, actions, rewards, success)``.

``ChunkGrader`` is the ``grade_chunk`` that ``flywheel.rollout.collect`` calls after every
executed chunk. It answers the three questions against the *reference* physics of the env's
task, whatever the env is:

- the reference sim itself, or a perturbed copy of it (same name, lower fidelity): the
  reference engine is ``sims.make(env.name)`` at fidelity 1, started from the chunk's state;
- ``learned/<X>``: the reference engine is ``X``, started from the state of the learned
  env's shadow engine (``LearnedSimEnv.engine_state``).

The normalizer of every sim is the spread of its reference probe set (``probe_set``).
Engines and normalizers are built once per sim and kept.

It returns the ``world_model.grader.Grade``; the rollout loop flattens it into the chunk's
row (``flywheel.rows.grade_columns``: ``weight`` and the ``grade_*`` columns).
"""

from __future__ import annotations

import numpy as np

import sims
from sims import SimEnv, SimState
from world_model.grader import Grade, GradeConfig, grade, physics_gaps
from world_model.learned_env import LearnedSimEnv
from world_model.probes import probe_set


class ChunkGrader:
    def __init__(self, config: GradeConfig = GradeConfig(), *, physics: bool = True, probes: int = 8,
                 horizon: int = 50) -> None:
        self.config = config
        self.physics = physics
        self._probe_args = {"probes": probes, "horizon": horizon}
        self._engines: dict[str, SimEnv] = {}
        self._scales: dict[str, np.ndarray] = {}

    def scale(self, reference: str) -> np.ndarray:
        if reference not in self._scales:
            self._scales[reference] = probe_set(reference, **self._probe_args).scale
        return self._scales[reference]

    def engine(self, reference: str) -> SimEnv:
        if reference not in self._engines:
            self._engines[reference] = sims.make(reference)
        return self._engines[reference]

    def prepare(self, env: SimEnv) -> None:
        """Build now what grading ``env``'s chunks needs (its reference engine, its probe set),
        so that this one-off cost lands on no chunk's ``sim_steps``: a chunk's count then depends
        on the chunk alone, not on whether its process graded that sim before."""
        reference = env.reference if isinstance(env, LearnedSimEnv) else env.name
        self.scale(reference)
        if self.physics:
            self.engine(reference)

    def grade(self, env: SimEnv, start: SimState, imagined, realized, actions, rewards,
              success: bool | None) -> Grade:
        reference = env.reference if isinstance(env, LearnedSimEnv) else env.name
        scale = self.scale(reference)
        gaps = None
        if self.physics and imagined is not None and len(realized):
            engine_start = env.engine_state(start) if isinstance(env, LearnedSimEnv) else start
            gaps = physics_gaps(self.engine(reference), engine_start, imagined, actions, scale)
        return grade(imagined=imagined, realized=realized, rewards=rewards, success=success, scale=scale,
                     physics=gaps, config=self.config)

    def __call__(self, env: SimEnv, start: SimState, imagined, realized, actions, rewards,
                 success: bool | None) -> Grade:
        return self.grade(env, start, imagined, realized, actions, rewards, success)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

