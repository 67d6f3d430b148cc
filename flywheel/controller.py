"""The cycle controller: rollouts -> grading -> store -> learning -> evaluation -> checkpoint.

    run(config) -> run directory

A run directory holds everything needed to resume or to report:

    config.json      the resolved RunConfig
    store/           graded rollouts: Parquet shards + manifest per cycle (flywheel.store)
    checkpoints/     run checkpoints (flywheel.checkpoint); ``latest`` names the newest
    cycles.jsonl     one line per completed cycle (capability, fidelity, grades, env steps...)
    tb/              TensorBoard events: rollout/, grade/, learner/, eval/, fidelity/, time/

Cycle ``c`` broadcasts weight version ``c`` (the weights after ``c`` rounds of learning) to
every rollout actor, once, through the Ray object store; each chunk records the version it
was produced with. A cycle is complete when its checkpoint is written, and only then does
its line go to ``cycles.jsonl``. Resuming starts after the latest checkpoint; rollouts that
an interrupted cycle had already committed are reused, never collected twice.

SIGINT/SIGTERM ask the controller to stop: the current phase finishes, the run exits cleanly,
and ``resume=`` continues it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sims
from configs.errors import ConfigError
from configs.run_schema import RunConfig
from flywheel import checkpoint as run_checkpoint
from flywheel.atomic import write_bytes_atomic, write_json_atomic
from flywheel.objective import ObjectiveConfig
from flywheel.rollout import RolloutSpec, collect, episode_stats
from flywheel.store import RolloutStore
from policies.agent import Agent


@dataclasses.dataclass
class Stop:
    requested: bool = False


def validate(config: RunConfig) -> None:
    """Everything that can be checked without Ray or a model, field by field (``RunConfig``
    checks its own counts when it is built)."""
    try:  # the spec every rollout worker will get; its messages start with the field
        RolloutSpec(episodes=config.episodes_per_cycle, planning=config.planning,
                    n_candidates=config.n_candidates, choose=config.choose)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if config.eval.n_candidates is not None and config.eval.n_candidates < 1:
        raise ConfigError(f"eval.n_candidates must be >= 1 (or unset), got {config.eval.n_candidates}")
    for field in ("sim", "reference"):
        sim = getattr(config, field)
        try:
            sims.check_config(sim.name, {"fidelity": sim.fidelity, "params": dict(sim.params)})
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{field}.name / {field}: {exc}") from exc
        check_learned(field, sim)
    if config.ray.address is None:  # an embedded Ray has what we give it: check before starting it
        cpus = config.ray.num_cpus or os.cpu_count() or 1
        check_resources(config, {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())})
    try:
        ObjectiveConfig.of(config.learner)
    except ValueError as exc:
        raise ConfigError(f"learner.{exc}") from exc  # the objective's messages start with the field
    if config.learner.act_on == "imagined" and not config.planning:
        raise ConfigError("learner.act_on=imagined trains on the plans rollouts imagined, so it needs planning=true")
    if config.learner.steps < 1 or config.learner.batch_size < config.num_learners:
        raise ConfigError(f"learner.steps must be >= 1 and learner.batch_size >= num_learners, got "
                          f"{config.learner.steps} and {config.learner.batch_size}")


def check_resources(config: RunConfig, available: dict[str, float]) -> None:
    """Every actor must fit at once, or Ray would wait forever for the last one."""
    for resource, per_worker, per_learner in (
        ("CPU", config.rollout_resources.num_cpus, config.learner_resources.num_cpus),
        ("GPU", config.rollout_resources.num_gpus, config.learner_resources.num_gpus),
    ):
        needed = config.num_rollout_workers * per_worker + config.num_learners * per_learner
        if needed > available.get(resource, 0.0) + 1e-9:
            raise ConfigError(
                f"num_rollout_workers={config.num_rollout_workers} x rollout_resources.num_{resource.lower()}s="
                f"{per_worker} plus num_learners={config.num_learners} x learner_resources.num_{resource.lower()}s="
                f"{per_learner} need {needed:g} {resource}s, but Ray has {available.get(resource, 0.0):g}")


def check_learned(field: str, sim) -> None:
    """``checkpoint`` and ``correct_every`` belong to learned sims, and a learned sim needs ``correct_every``."""
    from world_model.learned_env import PREFIX, parse_correct_every

    if not sim.name.startswith(PREFIX):
        for key in ("checkpoint", "correct_every"):
            if getattr(sim, key) is not None:
                raise ConfigError(f"{field}.{key}={getattr(sim, key)}: only a learned sim ({PREFIX}<engine sim>) "
                                  f"takes it, and {field}.name is {sim.name!r}")
        return
    if sim.correct_every is None:
        raise ConfigError(f"{field}.correct_every: {field}.name={sim.name!r} is a learned sim; say how often the "
                          "engine corrects it: a positive int (1 = the engine itself) or never")
    try:
        parse_correct_every(sim.correct_every)
    except ValueError as exc:
        raise ConfigError(f"{field}.correct_every: {exc}") from exc


def check_embodiment(agent: Agent, config: RunConfig) -> None:
    """The model must be able to drive the reference (and training) sim's body."""
    for field in ("sim", "reference"):
        sim = getattr(config, field)
        emb = sims.make(sim.name, **sim.make_kwargs()).embodiment
        if emb.proprio_dim > agent.cfg.proprio_pad or emb.action_dim > agent.cfg.action_pad:
            raise ConfigError(
                f"{field}.name={sim.name!r}: its body ({emb.proprio_dim} proprio, {emb.action_dim} actions) does "
                f"not fit the model's pads ({agent.cfg.proprio_pad}, {agent.cfg.action_pad})")


@contextmanager
def progress_bar(description: str, total: int):
    """A rich progress bar on a terminal (transient); nothing in logs or tests."""
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


@contextmanager
def stop_on_signals(stop: Stop):
    """SIGINT/SIGTERM set ``stop.requested``; the loop checks it between phases."""

    def handler(signum, frame):
        stop.requested = True
        print(f"\nflywheel: {signal.Signals(signum).name} received; finishing the current phase, then stopping")

    saved = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def evaluate(agent: Agent, config: RunConfig) -> dict[str, float]:
    """Capability in the reference sim (never the training sim), on fixed seeds."""
    ref = config.reference
    envs = [sims.make(ref.name, **ref.make_kwargs()) for _ in range(min(config.eval.episodes, config.envs_per_worker))]
    spec = RolloutSpec(episodes=config.eval.episodes, seed=config.eval.seed, planning=config.eval.planning,
                       n_candidates=config.eval.n_candidates or config.n_candidates, flow_steps=config.flow_steps)
    rows = collect(agent, envs, spec)
    result = episode_stats(rows)
    result["capability"] = result["success_rate"] if envs[0].defines_success else result["mean_return"]
    for env in envs:
        env.close()
    return result


def read_cycles(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "cycles.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_cycles(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Rewritten whole and atomically: a crash never leaves half a line."""
    write_bytes_atomic(run_dir / "cycles.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())


# Which "applies" flag guards each optional grade column (world_model.chunk_grader).
_GUARDED_BY = {"success": "success", "imagination": "imagination", "imagination_error": "imagination",
               "physics": "physics", "physics_gap": "physics", "physics_worst": "physics",
               "obeys_physics": "physics"}


def grade_summary(columns: dict[str, np.ndarray]) -> dict[str, float]:
    """Means of the grade columns, each over the chunks where its answer applies."""
    summary = {"weight": float(np.mean(columns["weight"]))}
    for key, value in columns.items():
        name = key.removeprefix("grade_")
        if name == key or name.endswith("_applies"):
            continue
        guard = _GUARDED_BY.get(name)
        selected = value if guard is None else value[columns[f"grade_{guard}_applies"].astype(bool)]
        if len(selected):
            summary[name] = float(np.mean(selected))
    return summary


def elapsed(since: float) -> float:
    return round(time.perf_counter() - since, 3)


def json_config(config: RunConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def run(config: RunConfig, console=print, fault: dict[str, int] | None = None) -> Path:
    """Run (or resume) the flywheel; returns the run directory. ``fault`` is a test hook
    (``flywheel.actors.WorkerSpec.fault``)."""
    validate(config)
    run_dir = Path(config.resume or config.run_dir or Path("runs") / "flywheel" / config.name)
    if config.resume:
        if not (run_dir / "config.json").is_file():
            raise ConfigError(f"resume={run_dir}: not a run directory (no config.json)")
    from flywheel.learned_sim import with_world_models

    config = with_world_models(config, console)  # a learned sim's checkpoint, fitted first if missing
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", json_config(dataclasses.replace(config, resume=None)))

    import ray
    from torch.utils.tensorboard import SummaryWriter

    from flywheel.actors import RolloutWorker, WorkerSpec
    from flywheel.learners import LearnerPool

    agent, optimizer_state, start_cycle = _starting_point(run_dir, config, console)
    check_embodiment(agent, config)
    measured = training_fidelity(config)
    console(f"training sim {config.sim.name} (fidelity knob {config.sim.fidelity}) measures fidelity "
            f"{measured['fidelity']:.3f} against the reference {config.reference.name}")
    records = [r for r in read_cycles(run_dir) if r["cycle"] < start_cycle]
    write_cycles(run_dir, records)
    env_steps = records[-1]["env_steps_total"] if records else 0

    if not ray.is_initialized():
        ray.init(address=config.ray.address, num_cpus=config.ray.num_cpus if config.ray.address is None else None,
                 include_dashboard=False, log_to_driver=False)
    check_resources(config, ray.cluster_resources())
    store = RolloutStore(run_dir / "store")
    spec = WorkerSpec(config.sim.name, config.sim.make_kwargs(), config.envs_per_worker, agent.cfg.to_dict(),
                      str(store.root), dataclasses.asdict(config.grade), fault=fault)
    options = {"num_cpus": config.rollout_resources.num_cpus, "num_gpus": config.rollout_resources.num_gpus}
    workers = {i: RolloutWorker.options(**options).remote(i, spec) for i in range(config.num_rollout_workers)}
    pool = LearnerPool.from_config(agent.cfg, config)
    if optimizer_state is not None:
        pool.load_optimizer(optimizer_state)
    writer = SummaryWriter(str(run_dir / "tb"))
    stop = Stop()
    try:
        with stop_on_signals(stop):
            for cycle in range(start_cycle, config.cycles):
                began = time.perf_counter()
                timings: dict[str, float] = {}
                # 1-4. rollouts, graded, into the store (reused if this cycle was committed before a stop)
                t = time.perf_counter()
                manifest = store.manifest(cycle)
                if manifest is None:
                    weights = ray.put({k: v.detach().cpu() for k, v in agent.model.state_dict().items()})
                    manifest = _collect_cycle(ray, workers, RolloutWorker, options, spec, weights, cycle, config, store)
                timings["rollout"] = time.perf_counter() - t
                if stop.requested:
                    break
                # 5. learning on the replay window
                t = time.perf_counter()
                rows, report = store.replay_window(cycle, config.replay_cycles)
                result = pool.train(agent.model.state_dict(), cycle, rows, config.learner.steps,
                                    config.learner.batch_size)
                agent.model.load_state_dict(result.state_dict)
                timings["learn"] = time.perf_counter() - t
                if stop.requested:
                    break
                # 6. evaluation in the reference sim
                t = time.perf_counter()
                evaluation = evaluate(agent, config)
                timings["eval"] = time.perf_counter() - t
                # 7. checkpoint, then the cycle's line
                cycle_rows, _ = store.read([cycle])
                env_steps += int(cycle_rows["steps"].sum())
                record = {
                    "cycle": cycle, "weight_version": cycle + 1,
                    "capability": evaluation["capability"], "eval": evaluation,
                    "fidelity": measured["fidelity"], "fidelity_detail": measured,
                    "grades": grade_summary(cycle_rows),
                    "rollout": {"episodes": manifest.episodes, "chunks": manifest.rows,
                                "quarantined_episodes": manifest.quarantined_episodes,
                                "success_rate": episode_stats(cycle_rows)["success_rate"],
                                "weight_versions": sorted({int(v) for v in cycle_rows["weight_version"]})},
                    "learner": result.metrics,
                    "policy_lag": float(cycle - np.mean(rows["weight_version"])),
                    "replay": {"cycles": sorted({int(c) for c in rows["cycle"]}), "chunks": report.rows,
                               "corrupt_shards": report.corrupt_shards},
                    "env_steps": int(cycle_rows["steps"].sum()), "env_steps_total": env_steps,
                    "seconds": {k: round(v, 3) for k, v in timings.items()} | {"cycle": elapsed(began)},
                }
                run_checkpoint.save(run_dir, agent.model, result.optimizer_state,
                                    run_checkpoint.TrainerState(cycle, cycle + 1, record["replay"]["cycles"], record))
                records.append(record)
                write_cycles(run_dir, records)
                _log(writer, record)
                _log_imagination(writer, cycle_rows, record["env_steps_total"])
                console(f"cycle {cycle}: capability {record['capability']:.3f}, grade weight "
                        f"{record['grades']['weight']:.3f}, {record['env_steps']} env steps, {elapsed(began):.1f} s")
                if stop.requested:
                    break
    finally:
        writer.close()
        pool.shutdown()
        for worker in workers.values():
            ray.kill(worker)
    return run_dir


def training_fidelity(config: RunConfig, probes: int = 8, horizon: int = 50) -> dict[str, Any]:
    """The training sim's fidelity against the reference, measured on the reference's probe set."""
    from world_model.fidelity import fidelity

    kwargs = {k: v for k, v in config.sim.make_kwargs().items() if k not in ("max_episode_steps", "camera", "image_size")}
    result = fidelity(config.sim.name, config.reference.name, probes=probes, horizon=horizon, seed=config.seed, **kwargs)
    return {"fidelity": result.fidelity, "mean_error": result.score.mean_error,
            "diverges_at": result.score.diverges_at, "probes": probes, "horizon": horizon}


def _starting_point(run_dir: Path, config: RunConfig, console):
    """(agent, optimizer state or None, first cycle to run): the latest checkpoint, or the pretrained one."""
    latest = run_checkpoint.latest(run_dir)
    if latest is not None:
        model, _, state = run_checkpoint.load(latest)
        console(f"resuming {run_dir} after cycle {state.cycle}")
        return Agent(model=model), run_checkpoint.optimizer_state(latest), state.cycle + 1
    from flywheel.pretrained import starting_agent

    return starting_agent(config, run_dir, console), None, 0


def _collect_cycle(ray, workers, worker_cls, options, spec, weights, cycle: int, config: RunConfig,
                   store: RolloutStore):
    """Every worker collects its share; a worker that dies is replaced and its share re-collected."""
    share = np.array_split(np.arange(config.episodes_per_cycle), len(workers))

    def start(i: int):
        workers[i].load_weights.remote(weights, cycle)
        return workers[i].collect.remote(cycle, len(share[i]), config.seed * 7919 + cycle * 101 + i,
                                         config.planning, config.n_candidates, config.flow_steps, config.choose)

    pending = {i: start(i) for i in workers}
    results, retries = {}, 0
    with progress_bar(f"cycle {cycle} rollouts", config.episodes_per_cycle) as advance:
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=1)
            i = next(k for k, ref in pending.items() if ref == ready[0])
            try:
                results[i] = ray.get(ready[0])
                del pending[i]
                advance(len(share[i]))
            except ray.exceptions.RayActorError:
                retries += 1
                if retries > 3 * len(workers):
                    raise RuntimeError(f"cycle {cycle}: rollout workers keep dying; giving up after {retries} retries")
                workers[i] = worker_cls.options(**options).remote(i, spec)
                pending[i] = start(i)
    return store.commit_cycle(cycle, [r["shard"] for r in results.values()],
                              [r["quarantined"] for r in results.values()],
                              meta={"weight_version": cycle, "retries": retries})


def imagination_figure(rows: dict[str, np.ndarray], chunks: int = 3, dims: int = 2):
    """Imagined (dashed) against realized (solid) proprio for a few chunks of a cycle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = np.linspace(0, len(rows["steps"]) - 1, chunks).astype(int)
    fig, axes = plt.subplots(1, chunks, figsize=(3.2 * chunks, 2.6), squeeze=False)
    for ax, i in zip(axes[0], picks):
        n = int(rows["steps"][i])
        for d in range(min(dims, int(rows["proprio_dim"][i]))):
            (line,) = ax.plot(rows["realized"][i, :n, d], label=f"dim {d} realized")
            ax.plot(rows["imagined"][i, :n, d], linestyle="--", color=line.get_color(), label=f"dim {d} imagined")
        ax.set(title=f"{rows['sim'][i]} ep {rows['episode'][i] % 100_000} chunk {rows['chunk'][i]}", xlabel="step")
        ax.title.set_fontsize(7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _log_imagination(writer, rows: dict[str, np.ndarray], step: int) -> None:
    if "imagined" in rows and len(rows["steps"]):
        writer.add_figure("rollout/imagined_vs_realized", imagination_figure(rows), step)
        writer.flush()


def _log(writer, record: dict[str, Any]) -> None:
    step = record["env_steps_total"]
    writer.add_scalar("eval/capability", record["capability"], step)
    writer.add_scalar("eval/mean_return", record["eval"]["mean_return"], step)
    writer.add_scalar("fidelity/measured", record["fidelity"], step)
    writer.add_scalar("rollout/success_rate", record["rollout"]["success_rate"], step)
    writer.add_scalar("rollout/quarantined_episodes", record["rollout"]["quarantined_episodes"], step)
    for key, value in record["grades"].items():
        writer.add_scalar(f"grade/{key}", value, step)
    for key, value in record["learner"].items():
        if isinstance(value, (int, float)):
            writer.add_scalar(f"learner/{key}", value, step)
    writer.add_scalar("learner/policy_lag", record["policy_lag"], step)
    for key, value in record["seconds"].items():
        writer.add_scalar(f"time/{key}", value, step)
    writer.flush()
