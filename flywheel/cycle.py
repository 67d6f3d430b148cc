"""One flywheel cycle as an object: collect -> learn -> evaluate -> commit.

``Flywheel`` holds what lives across cycles (the agent, the store, the rollout actors, the
learner pool, the logger, the specs); ``Flywheel.cycle(c)`` is cycle ``c``, one method per
phase:

    collect    every rollout actor loads weight version ``c`` (put once in the Ray object store)
               and collects its share, grading every chunk as it goes; the shards are committed
               to the store. A cycle committed before a stop is reused, never collected twice.
               An episode with a NaN or inf is quarantined (``flywheel.rollout``); a cycle
               whose every episode was is ``EveryEpisodeQuarantined``, before its commit, so a
               resume collects it again.
    learn      the learner pool trains on rows sampled from the replay (every cycle so far, or the
               last ``replay_cycles``), ``learner.utd`` steps per env step; the agent takes the new weights.
    refit      with ``world_model.refit``, the learned training sim's world model is fine-tuned on
               the engine's transitions behind the cycle's rows (``flywheel.refit``); the next
               cycle's rollouts step with it.
    evaluate   capability in the reference sim (never the training sim), on fixed seeds, on the
               first rollout actor (the driver runs no episode).
    commit     the checkpoint, then the cycle's record (``flywheel.logger``): a cycle is
               complete when its checkpoint is written.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

import sims
from configs.run_schema import RunConfig
from flywheel import checkpoint as run_checkpoint
from flywheel import storage
from flywheel.actors import RolloutWorkers, WorkerSpec
from flywheel.cluster import Placement, ray_options
from flywheel.learners import LearnerPool, peak_rss_mb
from flywheel.prior import PriorSpec
from flywheel.logger import CycleLogger
from flywheel.objective import unread_columns
from flywheel.refit import Refit
from flywheel.rollout import (RolloutSpec, collect, env_kwargs, episode_lengths_and_returns, episode_stats,
                              standard_errors, task_plan)
from flywheel.rows import EPISODE, SIM, SIM_STEPS, STEPS, WEIGHT_VERSION, ChunkRows, grade_summary
from flywheel.store import QuarantinedEpisode, RolloutStore
from policies.agent import Agent


@dataclasses.dataclass
class Flywheel:
    """What a run keeps across its cycles."""

    config: RunConfig
    run_dir: Path
    agent: Agent
    store: RolloutStore
    rollouts: RolloutWorkers
    learners: LearnerPool
    logger: CycleLogger
    fidelity: dict[str, Any]  # the training sim's (``controller.training_fidelity``), again after each refit
    rollout_spec: RolloutSpec  # the run's (``controller.validate``); each cycle fills in its own
    eval_spec: RolloutSpec
    weights_from: str  # the checkpoint the agent's weights were loaded from or last saved to
    placement: Placement  # the bundles the actors run in
    refitter: Refit | None = None  # ``world_model.refit`` runs only
    world_model: Any = None  # the ``LearnedSimulator`` the next collect steps with (refit runs only)

    @classmethod
    def start(cls, config: RunConfig, run_dir: Path, agent: Agent, optimizer_state, rollout_spec: RolloutSpec,
              fidelity: dict[str, Any], logger: CycleLogger, fault: dict[str, int] | None = None,
              prior: PriorSpec | None = None, weights_from: str = "", placement: Placement | None = None,
              world_model: str | None = None) -> "Flywheel":
        """Start the rollout actors and the learner pool (Ray must be up), into ``placement``'s
        bundles when given (``flywheel.cluster.reserve``); ``close`` gives the placement back.
        ``prior``: the starter's data the learners also train on (``flywheel.prior``).
        ``world_model``: with ``world_model.refit``, the checkpoint the next cycle practises in."""
        placement = placement or Placement()
        refitter, simulator = None, None
        if world_model is not None:  # loaded (and verified) before any actor starts
            from world_model import load_checkpoint

            refitter = Refit(config, run_dir)
            simulator = load_checkpoint(world_model, reference=refitter.reference)
        # Under the run directory, or its URI for a remote run (``flywheel.storage``), query string included.
        location = storage.join(config.run_dir or run_dir, storage.STORE)
        store = RolloutStore(location)
        worker = WorkerSpec(tuple((t.sim.name, env_kwargs(t.sim, config.camera, agent.cfg.image_size))
                                  for t in config.task_list()),
                            config.envs_per_worker, agent.cfg.to_dict(), location, dataclasses.asdict(config.grade),
                            fault=fault)
        rollouts = RolloutWorkers(config.num_rollout_workers, worker, ray_options(config.rollout_resources),
                                  placement=lambda i: placement.options("num_rollout_workers", i))
        try:
            learners = LearnerPool.from_config(agent.cfg, config, prior=prior,
                                               placement=lambda rank: placement.options("num_learners", rank))
        except BaseException:
            rollouts.shutdown()
            placement.release()
            raise
        if optimizer_state is not None:
            learners.load_optimizer(optimizer_state)
        learners.spawn()  # they boot while the rollout actors evaluate the start and collect cycle 0
        return cls(config, run_dir, agent, store, rollouts, learners, logger, fidelity, rollout_spec,
                   evaluation_spec(config), weights_from, placement, refitter, simulator)

    def evaluate(self) -> dict[str, float]:
        """``evaluate`` of the agent's current weights, on a rollout actor (``RolloutWorkers.evaluate``)."""
        weights = ray.put({k: v.detach().cpu() for k, v in self.agent.model.state_dict().items()})
        return self.rollouts.evaluate(weights, self.config, self.eval_spec, self.weights_from)

    def cycle(self, index: int) -> "Cycle":
        return Cycle(self, index)

    def close(self) -> None:
        try:
            self.logger.close()
            self.learners.shutdown()
        finally:
            self.rollouts.shutdown()
            self.placement.release()


class Cycle:
    """Cycle ``index``: call ``collect``, ``learn``, ``evaluate``, ``commit`` in that order."""

    def __init__(self, flywheel: Flywheel, index: int) -> None:
        self.flywheel, self.index = flywheel, index
        self.began = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.fidelity = flywheel.fidelity  # of the training sim this cycle practises in
        self.world_model: dict[str, Any] | None = None  # the refit's part of the record
        # The rollout actors' sim steps that no committed row holds (their grader's start-up,
        # quarantined chunks); 0 for a cycle committed before a stop, whose actors are gone.
        self.sim_steps_outside_rows = 0
        self._rows: ChunkRows | None = None  # the cycle's own committed rows, read once (``rows``)

    def rows(self) -> ChunkRows:
        """The cycle's own committed rows, read and verified once for learning, the refit and the record."""
        if self._rows is None:
            self._rows, _ = self.flywheel.store.read([self.index])
        return self._rows

    @contextmanager
    def _timed(self, phase: str):
        began = time.perf_counter()
        yield
        self.seconds[phase] = time.perf_counter() - began

    def collect(self) -> None:
        """Graded rollouts into the store (reused if this cycle was committed before a stop)."""
        fw = self.flywheel
        with self._timed("rollout"):
            self.manifest = fw.store.manifest(self.index)
            if self.manifest is None:
                weights = ray.put({k: v.detach().cpu() for k, v in fw.agent.model.state_dict().items()})
                spec = dataclasses.replace(fw.rollout_spec, cycle=self.index, weight_version=self.index)
                if fw.config.tasks:
                    tasks = fw.config.tasks
                    spec = dataclasses.replace(spec, episode_sims=tuple(task_plan(
                        [t.sim.name for t in tasks], [t.weight for t in tasks], spec.episodes,
                        rollout_seed(fw.config.seed, self.index, 0))))
                world_model = None if fw.world_model is None else ray.put(fw.world_model)
                with progress_bar(f"cycle {self.index} rollouts", spec.episodes) as advance:
                    results, retries = fw.rollouts.collect(
                        weights, spec, lambda worker: rollout_seed(fw.config.seed, self.index, worker), advance,
                        world_model)
                self.sim_steps_outside_rows = sum(r["sim_steps_outside_rows"] for r in results)
                dropped = [d for r in results for d in r["dropped"]]
                if not any(r["shard"] for r in results):
                    raise every_episode_quarantined(f"cycle {self.index}", spec.episodes, dropped,
                                                    fw.weights_from, fw.agent)
                self.manifest = fw.store.commit_cycle(self.index, [r["shard"] for r in results],
                                                      [r["quarantined"] for r in results],
                                                      meta={"weight_version": self.index, "retries": retries},
                                                      dropped=dropped)

    def learn(self) -> None:
        """The learner pool trains on a sample of the replay; the agent takes the result.

        The driver draws exactly the rows the cycle's ``steps * batch_size`` draws need from the
        store (``RolloutStore.sample``, seeded by (seed, cycle)) and ships them to the learners in
        one ``ray.put``: its memory is one shard plus the sample, not the replay, however long
        the run, and the sample holds only the columns the loss reads (``unread_columns``). Why
        the driver and not each learner: the store is read and verified once a cycle whatever
        the number of learners, a bad shard is counted once in the cycle's record,
        and every rank gets the very same rows (one object), which DDP needs.
        """
        fw, learner = self.flywheel, self.flywheel.config.learner
        with self._timed("learn"):
            own = self.rows()
            env_steps = int(own[STEPS].sum()) if own.n else 0
            steps, batch_size = learner.steps_for(env_steps), learner.batch_size
            cycles = fw.store.window(self.index, fw.config.replay_cycles)
            weights = {t.sim.name: t.weight for t in fw.config.tasks} or None  # a multi-task run's draw by task
            self.sample, report = fw.store.sample(cycles, steps * batch_size, seed=(fw.config.seed, self.index),
                                                  weights=weights, skip=unread_columns(learner))
            self.learned = fw.learners.train(fw.agent.model.state_dict(), self.index, self.sample, steps, batch_size)
            fw.agent.model.load_state_dict(self.learned.state_dict)
        # The realized update-to-data ratio, and samples per env step (SAC's is its batch, 256).
        per_env_step = 1 / max(env_steps, 1)
        self.learned.metrics.update(utd=steps * per_env_step, samples_per_env_step=steps * batch_size * per_env_step)
        self.replay = {"cycles": cycles, "chunks": report.rows, "sampled_chunks": self.sample.rows.n,
                       "shards_read": report.shards_read, "corrupt_shards": report.corrupt_shards,
                       "driver_peak_rss_mb": round(peak_rss_mb(), 1)}
        if weights:  # what each task's share of the draws came to
            names, counts = np.unique(self.sample.rows[SIM][self.sample.order].astype(str), return_counts=True)
            self.replay["drawn_by_task"] = {str(name): int(count) for name, count in zip(names, counts)}
        # What the learners trained on, each draw counted: how many cycles behind its weights were.
        self.policy_lag = float(self.index - np.mean(self.sample.rows[WEIGHT_VERSION][self.sample.order]))

    def refit(self) -> None:
        """With ``world_model.refit``: the training sim's world model fine-tuned on this cycle's
        rows, for the next cycle (``flywheel.refit``); its fidelity is the next cycle's."""
        fw = self.flywheel
        if fw.refitter is None:
            return
        with self._timed("world_model"):
            fw.world_model, self.world_model = fw.refitter(fw.world_model, self.rows(), self.index)
            fw.fidelity = self.world_model["fidelity_detail"]

    def evaluate(self) -> None:
        with self._timed("eval"):
            self.evaluation = self.flywheel.evaluate()

    def commit(self) -> dict[str, Any]:
        """The checkpoint, then the cycle's record in ``cycles.jsonl``, TensorBoard and the console."""
        fw, rows = self.flywheel, self.rows()
        record = self.record(rows)
        saved = run_checkpoint.save(fw.run_dir, fw.agent.model, self.learned.optimizer_state,
                                    run_checkpoint.TrainerState(self.index, self.index + 1, record["replay"]["cycles"],
                                                                record))
        fw.weights_from = str(saved)
        fw.logger.log(record, rows, self.began, self.learned.series)
        return record

    def record(self, rows: dict[str, np.ndarray]) -> dict[str, Any]:
        """The cycle's line of ``cycles.jsonl`` (``rows``: the cycle's own rollouts)."""
        fw, manifest, env_steps = self.flywheel, self.manifest, int(rows[STEPS].sum())
        # Look-ahead and grading too: every engine step the rollout phase took.
        sim_steps = int(rows[SIM_STEPS].sum()) + self.sim_steps_outside_rows
        lengths, returns = episode_lengths_and_returns(rows)
        return {
            "cycle": self.index, "weight_version": self.index + 1,
            "capability": self.evaluation["capability"],
            "capability_stderr": self.evaluation["capability_stderr"], "eval": self.evaluation,
            "fidelity": self.fidelity["fidelity"], "fidelity_detail": self.fidelity,
            "grades": grade_summary(rows),
            "rollout": {"episodes": manifest.episodes, "chunks": manifest.rows,
                        "quarantined_episodes": manifest.quarantined_episodes,
                        "quarantined_by_sim": quarantined_by_sim(manifest.dropped),
                        "success_rate": episode_stats(rows)["success_rate"],
                        "episode_return": float(returns.mean()), "episode_length": float(lengths.mean()),
                        "sim_steps_outside_rows": self.sim_steps_outside_rows,
                        "weight_versions": sorted({int(v) for v in rows[WEIGHT_VERSION]})},
            **({"world_model": self.world_model} if self.world_model is not None else {}),
            "learner": self.learned.metrics,
            "policy_lag": self.policy_lag, "replay": self.replay,
            "env_steps": env_steps, "env_steps_total": fw.logger.env_steps_total + env_steps,
            "sim_steps": sim_steps, "sim_steps_total": fw.logger.sim_steps_total + sim_steps,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()}
                       | {"cycle": round(time.perf_counter() - self.began, 3)},
        } | ({"tasks": self.tasks_record(rows)} if fw.config.tasks else {})

    def tasks_record(self, rows: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
        """A multi-task cycle's ``tasks``, by training sim: its weight, reference, measured fidelity,
        capability ± its standard error, and its share of the cycle's rollouts."""
        fw, out = self.flywheel, {}
        for task in fw.config.tasks:
            name, evaluation = task.sim.name, self.evaluation["tasks"][task.sim.name]
            own = rows[SIM] == name
            out[name] = {"weight": task.weight, "reference": task.reference.name,
                         "fidelity": fw.fidelity["tasks"][name]["fidelity"],
                         "capability": evaluation["capability"], "capability_stderr": evaluation["capability_stderr"],
                         "episodes": int(len(np.unique(rows[EPISODE][own]))), "env_steps": int(rows[STEPS][own].sum())}
        return out


def rollout_seed(seed: int, cycle: int, worker: int) -> int:
    """The ``RolloutSpec.seed`` of ``worker``'s share of ``cycle`` in a run seeded ``seed``: its
    episode ``index`` resets with ``flywheel.rollout.reset_seed(rollout_seed(...), index)``."""
    return seed * 7919 + cycle * 101 + worker


def evaluation_spec(config: RunConfig) -> RolloutSpec:
    """How evaluation collects: the eval seeds and planning, never choose=sim (no sim at test time)."""
    return RolloutSpec(episodes=config.eval.episodes, seed=config.eval.seed, planning=config.eval.planning,
                       n_candidates=config.eval.n_candidates or config.n_candidates, flow_steps=config.flow_steps,
                       camera=config.camera)


def evaluate(agent: Agent, config: RunConfig, spec: RolloutSpec | None = None,
             weights_from: str = "") -> dict[str, Any]:
    """Capability in the reference sim (never the training sim), on fixed seeds, with its
    standard error over the episodes (``capability_stderr``). Quarantined episodes (a NaN or
    inf) are left out and counted (``quarantined_episodes``); if every one was,
    ``EveryEpisodeQuarantined``, naming ``weights_from`` if the model made the NaN.

    A multi-task run evaluates every task in its own reference (``eval.episodes`` each):
    ``tasks`` holds each task's result by training sim; the top level is their mean
    (``mean_of_tasks``), so that what reads one capability reads the average."""
    spec = spec or evaluation_spec(config)
    if not config.tasks:
        return evaluate_in(config.reference, agent, config, spec, weights_from)
    return mean_of_tasks({task.sim.name: evaluate_in(task.reference, agent, config, spec, weights_from)
                          for task in config.tasks})


# Counted over every task's episodes; every other number of a multi-task evaluation is the tasks' mean.
SUMMED = ("episodes", "quarantined_episodes", "env_steps", "sim_steps")


def mean_of_tasks(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One evaluation of several tasks: each number the tasks' mean (counts summed), the mean
    capability's standard error sqrt(sum of the squared ones) / tasks, and ``tasks``."""
    first = next(iter(results.values()))
    out: dict[str, Any] = {}
    for key in first:
        values = [r[key] for r in results.values()]
        out[key] = int(sum(values)) if key in SUMMED else float(np.mean(values))
    errors = np.array([r["capability_stderr"] for r in results.values()])
    out["capability_stderr"] = float(np.sqrt(np.sum(errors ** 2)) / len(errors))
    out["tasks"] = results
    return out


def evaluate_in(ref, agent: Agent, config: RunConfig, spec: RolloutSpec, weights_from: str = "") -> dict[str, float]:
    """``evaluate``'s capability in one reference sim (a ``SimConfig``)."""
    envs = [sims.make(ref.name, **env_kwargs(ref, config.camera, agent.cfg.image_size))
            for _ in range(min(config.eval.episodes, config.envs_per_worker))]
    dropped: list[QuarantinedEpisode] = []
    with one_torch_thread():
        rows = collect(agent, envs, spec, quarantine=dropped)
    if not rows.n:
        raise every_episode_quarantined("evaluation", spec.episodes, dropped, weights_from, agent)
    result = episode_stats(rows)
    result.update(standard_errors(result))
    result["quarantined_episodes"] = len(dropped)
    # Evaluation's own steps, never in the run's totals (they train nothing), kept for benchmarks.
    result.update(env_steps=int(rows[STEPS].sum()), sim_steps=int(rows[SIM_STEPS].sum()))
    measure = ("success_rate", "success_stderr") if envs[0].defines_success else ("mean_return", "return_stderr")
    result["capability"], result["capability_stderr"] = result[measure[0]], result[measure[1]]
    for env in envs:
        env.close()
    return result


class EveryEpisodeQuarantined(ValueError):
    """Every episode of a rollout phase held a NaN or inf: nothing to learn from or measure.
    A ``ValueError`` so that ``flywheel run`` reports it in one line (exit code 2)."""


# The fields a NaN in which is the model's doing (``flywheel.rollout``), not the sim's.
MODEL_FIELDS = ("action", "imagined proprio (the model's)")


def every_episode_quarantined(what: str, episodes: int, dropped: list[QuarantinedEpisode], weights_from: str,
                              agent: Agent) -> EveryEpisodeQuarantined:
    """The error for ``what`` (a phase) whose every one of ``episodes`` was quarantined, naming
    the sim and, where the model made the NaN, the checkpoint its weights came from."""
    if not dropped:  # the store quarantined them all, for a NaN in their rows
        return EveryEpisodeQuarantined(f"{what}: every one of its {episodes} episodes held NaN or inf in its rows "
                                       "(quarantined by the store); nothing to train on")
    named = ", ".join(sorted({d.sim for d in dropped}))
    message = f"{what}: every one of its {episodes} episodes in {named} was quarantined for NaN or inf (first: " \
              f"{dropped[0].error})"
    if any(d.field in MODEL_FIELDS for d in dropped):
        bad = [k for k, v in agent.model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        held = f", which hold NaN or inf in {len(bad)} tensors (e.g. {bad[0]})" if bad else ""
        return EveryEpisodeQuarantined(f"{message}; the model produced it: the weights come from "
                                       f"{weights_from or 'an unnamed source'}{held}")
    return EveryEpisodeQuarantined(f"{message}; the sim returned it: `flywheel sims check {dropped[0].sim}` shows where")


def quarantined_by_sim(dropped: list[QuarantinedEpisode]) -> dict[str, int]:
    """How many episodes of each sim were quarantined (``cycles.jsonl``'s ``rollout``)."""
    return dict(Counter(d.sim for d in dropped))


@contextmanager
def one_torch_thread():
    """Evaluation's small batches on one thread, as the rollout actors run theirs. The driver's
    default (every core) spins its threads against any other load: on 2 busy cores, 4 evaluation
    episodes took 175 s on two threads and 4 s on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def progress_bar(description: str, total: int):
    """A rich progress bar on a terminal (transient); nothing in logs or tests."""
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
