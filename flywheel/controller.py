"""The cycle controller: checks a run's config, finds its starting point, and turns the flywheel.

    run(config) -> run directory

A run directory (``run_directory``: never one that holds another run, unless resumed) holds
everything needed to resume or to report:

    config.json      the resolved RunConfig (its run_dir absolute)
    store/           graded rollouts: Parquet shards + manifest per cycle (flywheel.store)
    checkpoints/     run checkpoints (flywheel.checkpoint); ``latest`` names the newest
    cycles.jsonl     one line per completed cycle (capability ± its standard error, fidelity, grades, env steps...;
                     a multi-task run's capability is its tasks' mean, each task's under ``tasks``)
    start.json       the starting weights' capability, evaluated once before cycle 0
    capability.png   capability against cycle and steps, the start included (redrawn every cycle)
    tb/              TensorBoard events: rollout/, grade/, learner/, eval/, fidelity/, time/

A run directory may be remote storage named by a URI (``run_dir=s3://bucket/runs/a``,
``flywheel.storage``): the store lives there, and the driver writes the rest in a local staging
directory (``runs/flywheel/remote/s3/bucket/runs/a``) that is uploaded after the start's
evaluation and every commit; ``resume=URI`` downloads it, on any machine.

The phases of a cycle are ``flywheel.cycle.Cycle``'s; its record goes through
``flywheel.logger.CycleLogger``. Cycle ``c`` broadcasts weight version ``c`` (the weights
after ``c`` rounds of learning) to every rollout actor, once, through the Ray object store;
each chunk records the version it was produced with. A cycle is complete when its checkpoint
is written, and only then does its line go to ``cycles.jsonl`` (the checkpoint holds the line
too: a resume rebuilds one that a stop in between lost). Resuming starts after the
latest checkpoint; rollouts that an interrupted cycle had already committed are reused,
never collected twice.

SIGINT/SIGTERM ask the controller to stop: the current phase finishes, the run exits cleanly,
and ``resume=`` continues it. A run stopped before its last cycle raises ``RunStopped``, whose
``exit_code`` (130 for SIGINT, 143 for SIGTERM) ``flywheel run`` exits with, so that a script or
scheduler can tell an early stop from a finished run (exit code 0).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sims
from configs.errors import ConfigError
from configs.run_schema import RunConfig
from configs.schema import SimConfig
from flywheel import checkpoint as run_checkpoint
from flywheel import cluster, storage
from configs.learning import ObjectiveConfig
from flywheel.rollout import RolloutSpec
from policies.agent import Agent
from sims.files import write_json_atomic
from sims.local_ray import init_local_ray, single_machine_ray


@dataclasses.dataclass
class Stop:
    signum: int | None = None  # the signal that asked for the stop

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def handle(self, signum, frame) -> None:
        self.signum = signum
        print(f"\nflywheel: {signal.Signals(signum).name} received; finishing the current phase, then stopping")

    def claim_signals(self) -> None:
        """SIGINT/SIGTERM call ``handle``. Again after ``ray.init``: Ray installs its own SIGTERM
        handlers as it starts (the driver's aborts the process, rc 134)."""
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self.handle)


class RunStopped(Exception):
    """The run stopped on a signal before its last cycle, cleanly: every complete cycle is
    checkpointed and ``resume=`` continues it. ``exit_code`` is the shell's convention for a
    process ended by that signal, 128 + its number."""

    def __init__(self, run_dir: Path, signum: int, location: str | None = None) -> None:
        # ``location``: a remote run's URI, which resume= takes (``run_dir`` is its local copy)
        self.run_dir, self.signum = Path(run_dir), int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name} before the last cycle; "
                         f"resume={location or self.run_dir} continues it")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def validate(config: RunConfig) -> RolloutSpec:
    """Everything that can be checked without Ray or a model, field by field (``RunConfig``
    checks its own counts when it is built). Returns the spec every rollout worker gets."""
    try:  # its messages start with the field
        spec = RolloutSpec(episodes=config.episodes_per_cycle, seed=config.seed, planning=config.planning,
                           n_candidates=config.n_candidates, flow_steps=config.flow_steps, choose=config.choose,
                           lookahead_chunks=config.lookahead_chunks, discount=config.learner.discount,
                           camera=config.camera, engine=config.world_model.refit,
                           candidate_futures=config.learner.candidate_samples > 0)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for field, sim in task_sims(config):
        try:
            sims.check_config(sim.name, {"fidelity": sim.fidelity, "params": dict(sim.params)})
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{field}.name / {field}: {exc}") from exc
        check_learned(field, sim)
    check_refit(config)
    check_reference(config)
    check_embedded_ray(config)
    try:
        ObjectiveConfig.check(config.learner)  # again: a LearnerConfig may have changed since it was built
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc  # the objective's messages name the field
    return spec


def check_embedded_ray(config: RunConfig) -> None:
    """An embedded Ray has the CPUs it is given, this machine's GPUs and no custom resource:
    every actor must fit them, checked before it starts (memory and accelerator type are Ray's
    to measure: checked once it runs, as a joined cluster's are, by ``start_ray``)."""
    joined = cluster.address(config)
    if joined is not None:
        if config.ray.num_cpus is not None:
            raise ConfigError(f"ray.num_cpus={config.ray.num_cpus} sizes an embedded Ray, but this run joins the "
                              f"cluster at {joined} (ray.address or RAY_ADDRESS); unset it, or set ray.address=local")
        return
    has = {"CPU": float(config.ray.num_cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
    measured_later = ("memory", cluster.ACCELERATOR_PREFIX)
    cluster.check_totals([dataclasses.replace(d, resources={r: a for r, a in d.resources.items()
                                                            if not r.startswith(measured_later)})
                          for d in cluster.demands(config)], has)


def task_sims(config: RunConfig) -> list[tuple[str, SimConfig]]:
    """Every sim the run makes, each with the field that sets it (``tasks[1].reference`` in a
    multi-task run), training sims and references of every task."""
    if not config.tasks:
        return [("sim", config.sim), ("reference", config.reference)]
    return [(f"tasks[{i}].{field}", getattr(task, field)) for i, task in enumerate(config.tasks)
            for field in ("sim", "reference") if getattr(task, field) is not None]


def check_reference(config: RunConfig) -> None:
    """The training sim's fidelity is measured on the reference's probe set, which starts only
    the reference itself (at any fidelity), its learned sim or its cross-engine twin: the same
    body, in every task."""
    from world_model.learned_env import PREFIX
    from world_model.probes import can_start

    for i, task in enumerate(config.task_list()):
        field = f"tasks[{i}].reference" if config.tasks else "reference"
        if task.reference is None:  # its own engine's, filled in by ``with_own_reference``
            continue
        sim, reference = task.sim.name, task.reference.name
        if not can_start(reference, sim):
            raise ConfigError(f"{field}.name={reference}: it cannot measure the training sim {sim} (only itself, "
                              f"learned/{reference} or its cross-engine twin); set {field}.name="
                              f"{sim.removeprefix(PREFIX)}")


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


def check_refit(config: RunConfig) -> None:
    """``world_model.refit`` refits the training sim's world model: the sim must be a learned one."""
    from world_model.learned_env import PREFIX

    if config.world_model.refit and config.tasks:
        raise ConfigError("world_model.refit=true refits one learned training sim; a multi-task run (tasks=) is not "
                          "refitted: unset tasks or set world_model.refit=false")
    if config.world_model.refit and not config.sim.name.startswith(PREFIX):
        raise ConfigError(f"world_model.refit=true refits a learned training sim's world model, and sim.name="
                          f"{config.sim.name} is an engine; use sim.name={PREFIX}{config.sim.name} (with "
                          "sim.correct_every) or world_model.refit=false")


def check_critic(agent: Agent, config: RunConfig) -> None:
    """With ``learner.critic`` on, the model needs the critic's heads: a starting checkpoint
    without them grows them (freshly initialised, seeded by the run's seed); one whose critic
    has another ensemble size, or that cannot read a state, is a ``ConfigError``."""
    if not config.learner.critic:
        return
    model, wanted = agent.model, config.learner.ensemble
    if model.has_critic:
        if model.cfg.critic_ensemble != wanted:
            raise ConfigError(f"learner.ensemble={wanted}, but the starting checkpoint's critic has "
                              f"{model.cfg.critic_ensemble} Q heads; set learner.ensemble={model.cfg.critic_ensemble}")
        return
    try:
        model.grow_critic(wanted, seed=config.seed)
    except ValueError as exc:
        raise ConfigError(f"learner.critic=true: the starting checkpoint has no critic and cannot grow one: {exc}") from exc


def check_ranker(agent: Agent, config: RunConfig) -> None:
    """With ``learner.ranker`` on, a starting checkpoint without a chunk ranker grows one (seeded
    by the run's seed); one that cannot read a state is a ``ConfigError``."""
    if not config.learner.ranker or agent.model.has_ranker:
        return
    try:
        agent.model.grow_ranker(seed=config.seed)
    except ValueError as exc:
        raise ConfigError(f"learner.ranker=true: the starting checkpoint has no chunk ranker and cannot grow one: "
                          f"{exc}") from exc


def check_camera(agent: Agent, config: RunConfig) -> None:
    """A camera run renders at the agent's own frame size (its pretraining's, and its imagined
    frames' size): a ``sim.image_size`` / ``reference.image_size`` set to another is a
    ``ConfigError`` naming it, and so is a model that reads no frames, or one that imagines them
    where the action expert is to learn the sim's candidates (whose frames no row keeps)."""
    if not config.camera:
        return
    size = agent.cfg.image_size
    if "frame" not in agent.model.tokenizers:
        raise ConfigError("camera=true: the starting model reads no frames (its config has no 'frame' modality "
                          "with its expert); run with camera=false")
    if config.learner.candidate_samples and agent.cfg.future_frames:
        raise ConfigError(f"learner.candidate_samples={config.learner.candidate_samples}: this model imagines "
                          "frames, and a camera run's rows keep only its candidates' imagined proprio; set "
                          "learner.candidate_samples=0 or camera=false")
    for field, sim in task_sims(config):
        chosen = sim.image_size
        if chosen is not None and chosen != size:
            raise ConfigError(f"{field}.image_size={chosen}: the agent takes {size}x{size} frames (its image_size, "
                              f"the size it was pretrained on); leave {field}.image_size unset or set it to {size}")


def check_embodiment(agent: Agent, config: RunConfig) -> None:
    """The model must be able to drive the reference (and training) sim's body, and its chunk
    (the critic's n-step backup) must fit in an episode, in every task; in a camera run, the sims
    must render (``sims.rendering``: a machine without a GL context fails here, before Ray)."""
    from flywheel.rollout import env_kwargs

    for field, sim in task_sims(config):
        try:
            env = sims.make(sim.name, **env_kwargs(sim, config.camera, agent.cfg.image_size))
        except sims.RenderingUnavailable as exc:
            raise ConfigError(f"camera=true: {exc}") from exc
        emb, length = env.embodiment, env.max_episode_steps
        env.close()
        if length < agent.cfg.chunk:
            raise ConfigError(
                f"{field}.max_episode_steps={length} is shorter than the model's chunk of {agent.cfg.chunk} steps: "
                "every chunk would be cut by the episode's end, and the critic's n-step backup never reach a next "
                f"chunk; set {field}.max_episode_steps >= {agent.cfg.chunk}")
        if emb.proprio_dim > agent.cfg.proprio_pad or emb.action_dim > agent.cfg.action_pad:
            raise ConfigError(
                f"{field}.name={sim.name!r}: its body ({emb.proprio_dim} proprio, {emb.action_dim} actions) does "
                f"not fit the model's pads ({agent.cfg.proprio_pad}, {agent.cfg.action_pad})")


@contextmanager
def stop_on_signals(stop: Stop):
    """SIGINT/SIGTERM set ``stop.requested``; the loop checks it between phases."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop.claim_signals()
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def json_config(config: RunConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def run(config: RunConfig, console=print, fault: dict[str, int] | None = None) -> Path:
    """Run (or resume) the flywheel; returns the run directory, or raises ``RunStopped`` when a
    signal stopped it before its last cycle. ``fault`` is a test hook (``flywheel.actors.WorkerSpec.fault``)."""
    from flywheel.cycle import Flywheel
    from flywheel.logger import CycleLogger

    config, run_dir, rollout_spec, mirror = prepare(config, console)
    upload = mirror.upload if mirror is not None else lambda: None
    agent, optimizer_state, start_cycle, weights_from = _starting_point(run_dir, config, console)
    check_camera(agent, config)
    check_embodiment(agent, config)
    check_critic(agent, config)
    check_ranker(agent, config)
    prior = prior_of(config, console)
    world_model, measured = practised_in(config, run_dir, start_cycle, console)
    logger = CycleLogger(run_dir, json_config(config), start_cycle, console,
                         checkpointed=lambda cycle: run_checkpoint.record(run_dir, cycle))
    stop, finished = Stop(), False
    with stop_on_signals(stop):
        try:
            placement = start_ray(config, console, stop)
            if stop.requested:  # while Ray started or the cluster made room: nothing to finish
                if placement is not None:
                    placement.release()
                raise RunStopped(run_dir, stop.signum, config.run_dir)
            flywheel = Flywheel.start(config, run_dir, agent, optimizer_state, rollout_spec, measured, logger, fault,
                                      prior, weights_from, placement, world_model)
        except BaseException:
            logger.close()
            raise
        try:
            if start_cycle == 0 and logger.start is None and not stop.requested:
                evaluate_start(flywheel)
                upload()
            for index in range(start_cycle, config.cycles):
                if stop.requested:
                    break
                cycle = flywheel.cycle(index)
                cycle.collect()
                if stop.requested:
                    break
                cycle.learn()
                if stop.requested:
                    break
                cycle.refit()
                cycle.evaluate()
                cycle.commit()
                upload()
            else:
                finished = True  # a stop asked for during the last cycle's commit still finished the run
        finally:
            flywheel.close()
    upload()  # the TensorBoard events the logger flushed as it closed
    if not finished:
        raise RunStopped(run_dir, stop.signum, config.run_dir)
    return run_dir


def practised_in(config: RunConfig, run_dir: Path, start_cycle: int,
                 console=print) -> tuple[str | None, dict[str, Any]]:
    """The world model cycle ``start_cycle`` practises in when the run refits one (the latest
    refit's, which the last checkpoint records, else the sim's own; None without a refit), and
    the training sim's fidelity measured with it."""
    if not config.world_model.refit:
        return None, training_fidelity(config, console=console)
    from flywheel.refit import in_use

    world_model = in_use(config, run_dir, run_checkpoint.record(run_dir, start_cycle - 1) if start_cycle else None)
    sim = dataclasses.replace(config.sim, checkpoint=world_model)
    return world_model, training_fidelity(dataclasses.replace(config, sim=sim), console=console)


def prior_of(config: RunConfig, console=print):
    """The starter's pretraining data for the learners (``learner.prior_coef``), generated now
    if its cache is gone; None when the coefficient is 0."""
    if not config.learner.prior_coef:
        return None
    from flywheel import prior
    from flywheel.pretrained import starter

    return prior.resolve(starter(config, console), config.learner.prior_coef, config.learner.train_experts,
                         config.camera, console, batch_size=config.learner.prior_batch_size)


def evaluate_start(flywheel) -> None:
    """The starting weights' capability, for the curve's first point: cycle 0's record is
    already after one round of learning. Evaluation seeds its own generator and trains nothing,
    so no rollout or learner number changes; ``start.json`` keeps it across resumes."""
    began = time.perf_counter()
    evaluation = flywheel.evaluate()
    flywheel.logger.log_start(evaluation, time.perf_counter() - began)


def prepare(config: RunConfig, console=print) -> tuple[RunConfig, Path, RolloutSpec, storage.Mirror | None]:
    """The config as the run uses it, checked, its directory claimed and its ``config.json``
    written; nothing here needs Ray. The run directory goes into the config as an absolute path,
    resolved once, here: the actors write their shards under it, and on another node a relative
    path would name that node's working directory. A remote run keeps its URI there; the local
    directory returned is its staging copy, which the mirror returned uploads."""
    from flywheel.learned_sim import with_world_models
    from flywheel.pretrained import check_starter

    config = with_own_reference(config, console)
    rollout_spec = validate(config)
    check_starter(config)
    location = config.resume or config.run_dir
    if storage.is_uri(location):
        run_dir, resuming, mirror = remote_run_directory(config)
    else:
        (run_dir, resuming), mirror = run_directory(config), None
    config = with_world_models(config, console)  # a learned sim's checkpoint, fitted first if missing
    config = dataclasses.replace(config, run_dir=location if mirror is not None else str(run_dir))
    if resuming:
        check_same_run(run_dir, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / CONFIG, json_config(dataclasses.replace(config, resume=None)))
    if mirror is not None:
        mirror.upload()  # claims the URI: config.json is what marks a run there
        console(f"run directory {location}: rollout store there, the rest staged in {run_dir} and uploaded "
                "after every cycle")
    return config, run_dir, rollout_spec, mirror


CONFIG = "config.json"  # the first file a run writes: a directory holding one holds a run
DEFAULT_ROOT = Path("runs") / "flywheel"


def run_directory(config: RunConfig) -> tuple[Path, bool]:
    """The run's directory, absolute, and whether the run continues one already there.

    A new run never writes into a directory that holds a run: it would resume it under the new
    config and rewrite its ``config.json``. A directory the user named (``name=``, ``run_dir=``)
    is refused, naming it: a run put elsewhere than asked is a run looked for in the wrong place.
    The default one, ``runs/flywheel/default``, is followed by a fresh timestamped sibling
    instead (``default-20260101-120000``, as CleanRL and Ray Tune name runs), so that ``make
    run`` works every time and a multirun without a run directory gives each job its own; the
    run prints its directory when it ends. ``resume=DIR`` and ``if_exists=resume`` continue one.
    """
    if config.resume:
        run_dir = Path(config.resume).resolve()
        if not (run_dir / CONFIG).is_file():
            raise ConfigError(f"resume={config.resume}: not a run directory (no {CONFIG} in {run_dir})")
        stored = _stored_config(run_dir).get("run_dir")
        if storage.is_uri(stored):  # its store is there, not here: resumed from here, it would collect anew
            raise ConfigError(f"resume={config.resume}: this is the local copy of the run at {stored}; resume it "
                              f"by its URI: resume=\"{stored}\"")
        return run_dir, True
    run_dir = Path(config.run_dir or DEFAULT_ROOT / config.name).resolve()
    if not (run_dir / CONFIG).is_file():
        return run_dir, False
    if config.if_exists == "resume":
        return run_dir, True
    if config.run_dir is None and config.name == RunConfig.name:
        return fresh_directory(run_dir), False
    named = f"run_dir={config.run_dir}" if config.run_dir else f"name={config.name}"
    raise ConfigError(f"{named}: {run_dir} already holds a run; pass resume={run_dir} to continue it, or "
                      "another name= or run_dir= to start a new one")


def remote_run_directory(config: RunConfig) -> tuple[Path, bool, storage.Mirror]:
    """``run_directory`` for a URI (``flywheel.storage``): its local staging directory, whether the
    run continues one already there, and the mirror between them, downloaded when it does.

    The storage is probed first (written, read back), so an unknown scheme, a missing package,
    an unreachable endpoint or missing credentials fail here, naming the URI. A URI that holds
    a run is refused as a named ``run_dir=`` is, unless resumed."""
    field = "resume" if config.resume else "run_dir"
    uri = config.resume or config.run_dir
    remote = storage.check_writable(uri, field)
    holds = remote.exists(CONFIG)
    if config.resume and not holds:
        raise ConfigError(f"resume={uri}: not a run directory (no {CONFIG} there)")
    if holds and not config.resume and config.if_exists != "resume":
        raise ConfigError(f"run_dir={uri}: it already holds a run; pass resume={uri} to continue it, or another "
                          "run_dir= to start a new one")
    mirror = storage.Mirror(remote, storage.staging_dir(uri, DEFAULT_ROOT))
    if holds:
        mirror.download(skip=run_checkpoint.superseded(remote.read("checkpoints/latest")))
    else:
        mirror.clear()
    return mirror.staging, holds, mirror


def fresh_directory(taken: Path) -> Path:
    """A new sibling of ``taken``, timestamped, created here so that no other run claims it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fresh, n = taken.with_name(f"{taken.name}-{stamp}"), 1
    while True:
        try:
            fresh.mkdir(parents=True)
            return fresh
        except FileExistsError:  # another run this second
            n += 1
            fresh = taken.with_name(f"{taken.name}-{stamp}-{n}")


# What a resumed run may change: how long it runs, where its directory is, and which Ray runs it.
RESUMABLE = ("cycles", "resume", "run_dir", "name", "if_exists", "ray")


def check_same_run(run_dir: Path, config: RunConfig) -> None:
    """A resumed run continues the run it resumes: a config that differs from its ``config.json``
    in anything but ``RESUMABLE`` is a ``ConfigError`` naming every such field. Fields that the
    stored config lacks (written by an older version) count as their defaults."""
    stored = _stored_config(run_dir)
    was = {**_flat(json_config(RunConfig())), **_flat(stored)}
    now = _flat(json_config(config))
    changed = [key for key in sorted(was.keys() | now.keys())
               if key.split(".")[0] not in RESUMABLE and was.get(key, "unset") != now.get(key, "unset")]
    if changed:
        listed = ", ".join(f"{key}={now.get(key, 'unset')} (the run has {was.get(key, 'unset')})" for key in changed)
        how = f"resume={run_dir}" if config.resume else f"if_exists=resume, and {run_dir} holds a run"
        raise ConfigError(f"{how}: {listed}; a resumed run may change only {', '.join(RESUMABLE)}: start a new "
                          "run (another name=, run_dir= or hydra.sweep.dir=) for another configuration")


def _stored_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"resume={run_dir}: cannot read {path} ({exc})") from exc


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def with_own_reference(config: RunConfig, console=print) -> RunConfig:
    """A run on a sim that the default reference cannot measure (another task: the reference's
    probe set starts only itself, its learned sim or its cross-engine twin) is scored in the
    training sim's own engine, at full fidelity and the same episode length, when the reference
    was left at its default;
    the fidelity sweep's twins keep theirs. A reference that was set is checked by ``validate``."""
    from world_model.learned_env import PREFIX
    from world_model.probes import can_start

    def own(sim: SimConfig) -> SimConfig:
        return SimConfig(name=sim.name.removeprefix(PREFIX), max_episode_steps=sim.max_episode_steps)

    if config.tasks:  # a task's unset reference is its own, always
        tasks = [task if task.reference else dataclasses.replace(task, reference=own(task.sim))
                 for task in config.tasks]
        return config if tasks == config.tasks else dataclasses.replace(config, tasks=tasks)
    default = RunConfig.__dataclass_fields__["reference"].default_factory()
    if config.reference != default or can_start(default.name, config.sim.name):
        return config
    console(f"reference sim: {own(config.sim).name}, the training sim's own (the default reference {default.name} "
            f"cannot measure {config.sim.name}; reference.name= to choose another)")
    return dataclasses.replace(config, reference=own(config.sim))



def start_ray(config: RunConfig, console=print, stop: Stop | None = None) -> cluster.Placement | None:
    """An embedded Ray listening on loopback only, no dashboard (or the cluster at
    ``cluster.address``), then checked before any actor starts: every actor fits the cluster and
    one node, the run directory (``config.run_dir``, when set) is the same storage on every
    node, and the cluster makes room for every actor at once (``flywheel.cluster``): the
    placement the actors start into. A signal during the wait for room ends it and returns None
    (``stop.requested``); the caller stops the run."""
    import ray

    stop = stop or Stop()
    joined = cluster.address(config)
    if not ray.is_initialized():
        if joined is None:
            init_local_ray(config.ray.num_cpus)
        else:
            with single_machine_ray() if cluster.on_loopback(joined) else nullcontext():
                ray.init(address=joined, include_dashboard=False, log_to_driver=False)
        stop.claim_signals()
    nodes, demands = cluster.alive_nodes(), cluster.demands(config)
    totals = ray.cluster_resources()
    console(f"Ray: {'embedded' if joined is None else f'joined the cluster at {joined}'}, {len(nodes)} node(s), "
            f"{totals.get('CPU', 0):g} CPUs, {totals.get('GPU', 0):g} GPUs")
    cluster.check_totals(demands, totals)
    cluster.check_nodes(demands, [node["Resources"] for node in nodes])
    if config.run_dir is not None:
        cluster.check_storage(config.run_dir, nodes)
    return cluster.reserve(demands, config.ray.reserve_timeout_s, stopped=lambda: stop.requested)


def training_fidelity(config: RunConfig, probes: int = 8, horizon: int = 50, console=print) -> dict[str, Any]:
    """The training sim's fidelity against the reference, measured on the reference's probe set.
    A multi-task run's is the mean over its tasks, each task's under ``tasks`` (by training sim)."""
    from world_model.fidelity import fidelity

    measured = {}
    for task in config.task_list():
        sim, reference = task.sim, task.reference
        kwargs = {k: v for k, v in sim.make_kwargs().items() if k not in ("max_episode_steps", "camera", "image_size")}
        result = fidelity(sim.name, reference.name, probes=probes, horizon=horizon, seed=config.seed, **kwargs)
        measured[sim.name] = {"fidelity": result.fidelity, "mean_error": result.score.mean_error,
                              "diverges_at": result.score.diverges_at, "probes": probes, "horizon": horizon}
        console(f"training sim {sim.name} (fidelity knob {sim.fidelity}) measures fidelity "
                f"{result.fidelity:.3f} against the reference {reference.name}")
    if not config.tasks:
        return measured[config.sim.name]
    return {"fidelity": float(np.mean([m["fidelity"] for m in measured.values()])), "tasks": measured}


def _starting_point(run_dir: Path, config: RunConfig, console):
    """(agent, optimizer state or None, first cycle to run, where its weights come from): the
    latest checkpoint, or the pretrained one."""
    latest = run_checkpoint.latest(run_dir)
    if latest is not None:
        model, _, state = run_checkpoint.load(latest)
        console(f"resuming {run_dir} after cycle {state.cycle}")
        return Agent(model=model), run_checkpoint.optimizer_state(latest), state.cycle + 1, str(latest)
    from flywheel.pretrained import starting_agent

    agent, source = starting_agent(config, run_dir, console)
    return agent, None, 0, source
