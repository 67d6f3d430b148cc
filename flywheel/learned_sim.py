"""Where a learned sim's world model comes from (as ``flywheel.pretrained`` is for the agent's weights).

A learned sim, ``learned/<engine sim>`` as the run's ``sim`` (or ``reference``), steps a fitted
world model corrected by ``<engine sim>`` every ``correct_every`` steps. Its checkpoint is the
sim's ``checkpoint`` or, unset, ``world_model_dir(<engine sim>, world_model.root)``:
``runs/world-model/<engine sim, '/' as '_'>``, where ``flywheel world-model fit`` writes by
default. When there is no checkpoint there, ``with_world_models`` fits one first with the
run's ``world_model`` recipe, saying so; every later run finds and reuses it.

The recipe itself, ``fit_world_model``, lives here too: ``flywheel world-model fit`` calls it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from configs.errors import ConfigError
from configs.run_schema import LearnedSimConfig, RunConfig
from configs.schema import SimConfig, WorldModelFitConfig, WorldModelRecipe, world_model_dir
from sims.files import exclusive, write_json_atomic
from world_model.checkpoint import CONFIG, WEIGHTS, CheckpointError, load_checkpoint
from world_model.learned_env import PREFIX


def with_world_models(config: RunConfig, console=print) -> RunConfig:
    """``config`` with the checkpoint of every learned sim in it set, fitted first where there is none."""
    def fitted(field: str, sim: SimConfig) -> SimConfig:
        if not sim.name.startswith(PREFIX):
            return sim
        return dataclasses.replace(sim, checkpoint=str(world_model(field, sim, config.world_model, console)))

    if config.tasks:  # the first task's are ``sim`` and ``reference``: RunConfig keeps them so
        tasks = [dataclasses.replace(task, sim=fitted(f"tasks[{i}].sim", task.sim),
                                     reference=fitted(f"tasks[{i}].reference", task.reference))
                 for i, task in enumerate(config.tasks)]
        return dataclasses.replace(config, tasks=tasks, sim=tasks[0].sim, reference=tasks[0].reference)
    return dataclasses.replace(config, sim=fitted("sim", config.sim), reference=fitted("reference", config.reference))


def world_model(field: str, sim: SimConfig, recipe: LearnedSimConfig, console=print) -> Path:
    engine = sim.name.removeprefix(PREFIX)
    path = Path(sim.checkpoint or world_model_dir(engine, recipe.root))

    def fitted() -> bool:
        return (path / CONFIG).is_file() and (path / WEIGHTS).is_file()

    if not fitted():
        with exclusive(path):  # runs of a parallel sweep: one fits it, the others wait, then reuse it
            if not fitted():
                console(f"{sim.name}: no world model at {path}; fitting one of {engine} there first "
                        f"({recipe.collect.steps} transitions, {recipe.train.steps} steps; then reused)")
                report = fit(engine, path, recipe)
                console(f"fitted {path} in {report['seconds']:.0f} s; fidelity of the learned sim by correct_every: "
                        + ", ".join(f"{r['correct_every']} {r['fidelity']:.3f}" for r in report["fidelity"]))
    console(f"{sim.name}: world model {path}")
    try:
        load_checkpoint(path, reference=engine)
    except CheckpointError as exc:
        raise ConfigError(f"{field}.checkpoint={path}: {exc}") from exc
    return path


def fit(engine: str, path: Path, recipe: LearnedSimConfig) -> dict:
    """``flywheel world-model fit sim.name=<engine> out=<path>`` with the recipe's settings."""
    recipe_fields = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(WorldModelRecipe)}
    return fit_world_model(WorldModelFitConfig(sim=SimConfig(name=engine), out=str(path), **recipe_fields))


# ---------------------------------------------------------------------- the fitting recipe


def fit_world_model(config: WorldModelFitConfig, console=print) -> dict[str, Any]:
    """Collect, fit, save, evaluate (``flywheel world-model fit``); returns the report written to ``fidelity.json``.

    Writes into ``config.out`` (default ``world_model_dir(config.sim.name)``): ``checkpoint.safetensors``
    + ``config.json``, ``fidelity.json`` and ``fidelity.png``, each atomically.
    """
    import sims
    import world_model as wm
    from world_model.fidelity import plot_curves

    name = config.sim.name
    sim_kwargs = config.sim.make_kwargs()
    if sim_kwargs.pop("camera"):
        console("camera ignored: the learned simulator is proprio-only")
    sims.check_config(name, sim_kwargs)  # bad names and settings fail before any work
    schedule = [wm.parse_correct_every(k) for k in config.report.correct_every]
    if config.collect.steps < 20:
        raise ValueError(f"collect.steps must be >= 20, got {config.collect.steps}")
    out = Path(config.out or world_model_dir(name))

    began = time.perf_counter()
    with _progress() as progress:
        data, held_out = _transitions(config, sim_kwargs, progress)
        task = progress.add_task("fitting", total=config.train.steps)
        simulator = wm.fit(data, config.model, config.train,
                           progress=lambda step, loss: progress.update(task, completed=step,
                                                                       description=f"fitting (loss {loss:.2e})"))
        wm.save_checkpoint(simulator, out)
        scale = wm.spread(held_out.proprio)
        errors = {f"{k}_step": wm.k_step_errors(simulator, held_out, k, scale) for k in (1, 10)
                  if len(held_out.windows(k, history=1))}
        probes = wm.probe_set(name, seed=config.report.seed, probes=config.report.probes, horizon=config.report.horizon)
        task = progress.add_task("fidelity of the learned sim", total=len(schedule))
        results = []
        for k in schedule:
            results.append(wm.fidelity(f"{wm.PREFIX}{name}", probes, checkpoint=str(out), correct_every=k))
            progress.advance(task)

    report = {
        "sim": name,
        "out": str(out),
        "transitions": len(data),
        "held_out_transitions": len(held_out),
        "model": asdict(config.model),
        "train": asdict(config.train),
        "final_loss": simulator.metadata["final_loss"],
        "prediction_error": errors,
        "fidelity": [{"correct_every": correct_every_label(k), **r.as_dict()} for k, r in zip(schedule, results)],
        "probes": {"count": probes.size, "horizon": probes.horizon, "seed": probes.seed},
        "seconds": round(time.perf_counter() - began, 2),
    }
    write_json_atomic(out / "fidelity.json", report)
    plot_curves(results, str(out / "fidelity.png"), labels=[f"correct_every={correct_every_label(k)}" for k in schedule],
                title=f"Learned simulator of {name}: error against horizon")
    return report


def _transitions(config: WorldModelFitConfig, sim_kwargs: dict[str, Any], progress):
    """The training transitions and a held-out quarter (at least 20), from other seeds."""
    import world_model as wm

    held_out_steps = max(config.collect.steps // 4, 20)
    task = progress.add_task("collecting transitions", total=config.collect.steps + held_out_steps)
    collect_args = dict(demo_fraction=config.collect.demo_fraction, noise=config.collect.noise, **sim_kwargs)
    data = wm.collect(config.sim.name, config.collect.steps, seed=config.collect.seed,
                      progress=lambda n: progress.update(task, completed=n), **collect_args)
    held_out = wm.collect(config.sim.name, held_out_steps, seed=config.collect.seed + 1,
                          progress=lambda n: progress.update(task, completed=config.collect.steps + n), **collect_args)
    return data, held_out


def correct_every_label(correct_every: int | None) -> str:
    return "never" if correct_every is None else str(correct_every)


def _progress():
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), transient=True)
