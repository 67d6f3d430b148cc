"""Rollout actors: each holds a vector of training-sim envs and a copy of the agent.

A cycle asks every actor to load the weights the controller put in the Ray object store
(once per cycle, for all actors), collect its share of episodes with Perceive -> Imagine
-> Act, grade every chunk while its start state is at hand, and write its rows as one
Parquet shard. The actor returns the shard's manifest entry, not the rows: data moves
through the store, never through the driver. ``RolloutWorkers`` is the driver's side: it
hands every actor the run's ``RolloutSpec`` with its share filled in, and replaces actors
that die.

Grading is ``world_model.chunk_grader.ChunkGrader``: the three questions against the
reference physics of the training sim's task, normalized by the spread of its probe set
(seeded, so every actor of a run grades alike).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import ray
import torch

import sims
from flywheel.rollout import RolloutSpec, collect
from flywheel.rows import SIM_STEPS, STEPS, WEIGHT_VERSION
from flywheel.store import QuarantinedEpisode, RolloutStore
from policies.agent import Agent
from policies.config import ModelConfig
from world_model.chunk_grader import ChunkGrader
from world_model.grader import GradeConfig


@dataclass(frozen=True)
class WorkerSpec:
    """Everything an actor needs, as plain data (it crosses into Ray)."""

    sims: tuple[tuple[str, dict[str, Any]], ...]  # (name, ``sims.make`` kwargs) of each task's training sim
    envs_per_worker: int  # of each sim
    model: dict[str, Any]  # ModelConfig.to_dict()
    store_root: str
    grade: dict[str, Any] = field(default_factory=dict)  # GradeConfig fields
    torch_threads: int = 1
    # Test hook: {"worker": i, "cycle": c} makes that worker's process die once, mid-cycle.
    fault: dict[str, int] | None = None


@ray.remote
class RolloutWorker:
    def __init__(self, index: int, spec: WorkerSpec) -> None:
        torch.set_num_threads(spec.torch_threads)
        self.index, self.spec = index, spec
        # Every task's envs in one vector: ``collect`` perceives and plans for all of them in one batch.
        self.envs = [sims.make(name, **kwargs) for name, kwargs in spec.sims for _ in range(spec.envs_per_worker)]
        self.agent = Agent(ModelConfig.from_dict(spec.model)).eval()
        self.weight_version = -1
        self.store = RolloutStore(spec.store_root)
        self.grader = ChunkGrader(GradeConfig(**spec.grade))
        # Sim steps this actor has spent and not yet reported; the grader's probe sets, built
        # now rather than inside a chunk, are the first of them (see ``collect``).
        self._steps_reported = sims.engine_steps_taken()
        for env in self.envs[::spec.envs_per_worker]:
            self.grader.prepare(env)

    def pid(self) -> int:
        return os.getpid()

    def _maybe_die(self, cycle: int) -> None:
        fault = self.spec.fault
        if not fault or (fault["worker"], fault["cycle"]) != (self.index, cycle):
            return
        marker = f".fault-{self.index}-{cycle}"
        if not self.store.files.exists(marker):  # die once: the replacement actor must succeed
            self.store.files.write(marker, b"")
            os._exit(1)

    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        self.agent.model.load_state_dict(state_dict)
        self.weight_version = version
        return version

    def use_world_model(self, simulator) -> None:
        """The learned training sim steps with ``simulator`` (a ``world_model.LearnedSimulator``
        refitted by the driver, ``flywheel.refit``) from the next collect on."""
        for env in self.envs:
            env.use(simulator)

    def evaluate(self, state_dict: dict[str, torch.Tensor], config, spec: RolloutSpec,
                 weights_from: str = "") -> dict[str, float]:
        """``flywheel.cycle.evaluate`` of these weights (a ``RunConfig``, an eval spec), here
        rather than in the driver: on a cluster the driver's machine may have no room for it. The
        next ``collect`` loads its own weights first, as every cycle's does."""
        from flywheel.cycle import evaluate  # flywheel.cycle imports this module

        self.load_weights(state_dict, -1)
        before = sims.engine_steps_taken()
        try:
            return evaluate(self.agent, config, spec, weights_from=weights_from)
        finally:  # the evaluation's steps are its own record (``eval_sim_steps``), not the next collect's
            self._steps_reported += sims.engine_steps_taken() - before

    def collect(self, spec: RolloutSpec) -> dict[str, Any]:
        """Collect ``spec`` (the run's spec with this share's episodes, cycle, worker and seed)
        with the weights loaded last, which the rows record as their version."""
        self._maybe_die(spec.cycle)
        spec = replace(spec, worker=self.index, weight_version=self.weight_version)
        dropped: list[QuarantinedEpisode] = []
        rows = collect(self.agent, self.envs, spec, self.grader, quarantine=dropped)
        by_sim = len(self.spec.sims) > 1  # the replay draws each task's share (``RolloutStore.sample``)
        shard, quarantined = self.store.write_shard(spec.cycle, self.index, rows, by_sim) if rows.n else (None, None)
        spent, self._steps_reported = sims.engine_steps_taken() - self._steps_reported, sims.engine_steps_taken()
        # The sim steps no committed row holds: the grader's start-up, quarantined episodes'.
        committed = int(rows[SIM_STEPS].sum() if rows.n else 0) - (int(np.sum(quarantined[SIM_STEPS])) if quarantined else 0)
        return {"shard": shard, "quarantined": quarantined, "dropped": dropped,
                "steps": int(rows[STEPS].sum()) if rows.n else 0, "sim_steps_outside_rows": spent - committed,
                "weight_versions": sorted({int(v) for v in rows[WEIGHT_VERSION]}) if rows.n else []}


class RolloutWorkers:
    """The run's rollout actors: started once, given each cycle's weights and shares, replaced when they die."""

    def __init__(self, count: int, spec: WorkerSpec, options: dict[str, Any],
                 placement: Callable[[int], dict[str, Any]] = lambda index: {}) -> None:
        # ``placement(i)``: the options that start actor i (and its replacements) in its bundle.
        self.spec, self.options, self.placement = spec, options, placement
        self.actors = {i: self._start(i) for i in range(count)}

    def _start(self, index: int):
        return RolloutWorker.options(**self.options, **self.placement(index)).remote(index, self.spec)

    def collect(self, weights, rollout: RolloutSpec, seeds: Callable[[int], int],
                progress: Callable[[int], None] = lambda n: None,
                world_model=None) -> tuple[list[dict[str, Any]], int]:
        """Every worker collects its share of ``rollout.episodes`` with ``weights`` (a Ray object
        ref, version ``rollout.cycle``), and in a learned sim stepped by ``world_model`` when
        given (a Ray object ref of a refitted simulator); a worker that dies is replaced and its
        share collected again. Returns each worker's result and the number of replacements."""
        shares = np.array_split(np.arange(rollout.episodes), len(self.actors))

        def start(i: int):
            self.actors[i].load_weights.remote(weights, rollout.cycle)
            if world_model is not None:  # a replacement actor gets it too: it starts from the spec's
                self.actors[i].use_world_model.remote(world_model)
            own = None if rollout.episode_sims is None else tuple(rollout.episode_sims[j] for j in shares[i])
            return self.actors[i].collect.remote(replace(rollout, episodes=len(shares[i]), worker=i, seed=seeds(i),
                                                         episode_sims=own))

        pending = {i: start(i) for i in self.actors}
        results, retries = {}, 0
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=1)
            i = next(k for k, ref in pending.items() if ref == ready[0])
            try:
                results[i] = ray.get(ready[0])
                del pending[i]
                progress(len(shares[i]))
            except ray.exceptions.RayActorError:
                retries += 1
                if retries > 3 * len(self.actors):
                    raise RuntimeError(f"cycle {rollout.cycle}: rollout workers keep dying; "
                                       f"giving up after {retries} retries")
                self.actors[i] = self._start(i)
                pending[i] = start(i)
        return list(results.values()), retries

    def evaluate(self, weights, config, spec: RolloutSpec, weights_from: str = "") -> dict[str, float]:
        """Evaluation (``RolloutWorker.evaluate``) of ``weights`` (a Ray object ref) on the first
        actor, on its reservation: one actor, so that the episodes batch exactly as they did in
        the driver and the numbers stay the same. A dead actor is replaced, as in ``collect``."""
        from flywheel.cycle import EveryEpisodeQuarantined  # flywheel.cycle imports this module

        for attempt in range(3):
            try:
                return ray.get(self.actors[0].evaluate.remote(weights, config, spec, weights_from))
            except ray.exceptions.RayTaskError as error:
                if isinstance(error.cause, EveryEpisodeQuarantined):  # the user's error, not Ray's traceback
                    raise error.cause from None
                raise
            except ray.exceptions.RayActorError:
                if attempt == 2:
                    raise
                self.actors[0] = self._start(0)

    def shutdown(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor)
