"""Where a learned sim's world model comes from (as ``flywheel.pretrained`` is for the agent's weights).

A learned sim, ``learned/<engine sim>`` as the run's ``sim`` (or ``reference``), steps a fitted
world model corrected by ``<engine sim>`` every ``correct_every`` steps. Its checkpoint is the
sim's ``checkpoint`` or, unset, ``world_model_dir(<engine sim>, world_model.root)``:
``runs/world-model/<engine sim, '/' as '_'>``, where ``flywheel world-model fit`` writes by
default. When there is no checkpoint there, ``with_world_models`` fits one first with the
run's ``world_model`` recipe, saying so; every later run finds and reuses it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from configs.errors import ConfigError
from configs.run_schema import LearnedSimConfig, RunConfig
from configs.schema import SimConfig, WorldModelFitConfig, world_model_dir
from world_model.checkpoint import CONFIG, WEIGHTS, CheckpointError, load_checkpoint
from world_model.learned_env import PREFIX


def with_world_models(config: RunConfig, console=print) -> RunConfig:
    """``config`` with the checkpoint of every learned sim in it set, fitted first where there is none."""
    changes = {}
    for field in ("sim", "reference"):
        sim = getattr(config, field)
        if sim.name.startswith(PREFIX):
            path = world_model(field, sim, config.world_model, console)
            changes[field] = dataclasses.replace(sim, checkpoint=str(path))
    return dataclasses.replace(config, **changes)


def world_model(field: str, sim: SimConfig, recipe: LearnedSimConfig, console=print) -> Path:
    engine = sim.name.removeprefix(PREFIX)
    path = Path(sim.checkpoint or world_model_dir(engine, recipe.root))
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file():
        console(f"{sim.name}: world model {path}")
    else:
        console(f"{sim.name}: no world model at {path}; fitting one of {engine} there first "
                f"({recipe.collect.steps} transitions, {recipe.train.steps} steps; then reused)")
        report = fit(engine, path, recipe)
        console(f"fitted {path} in {report['seconds']:.0f} s; fidelity of the learned sim by correct_every: "
                + ", ".join(f"{r['correct_every']} {r['fidelity']:.3f}" for r in report["fidelity"]))
    try:
        load_checkpoint(path, reference=engine)
    except CheckpointError as exc:
        raise ConfigError(f"{field}.checkpoint={path}: {exc}") from exc
    return path


def fit(engine: str, path: Path, recipe: LearnedSimConfig) -> dict:
    """``flywheel world-model fit sim.name=<engine> out=<path>`` with the recipe's settings."""
    from flywheel.commands.world_model import fit_world_model

    recipe_fields = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(LearnedSimConfig) if f.name != "root"}
    return fit_world_model(WorldModelFitConfig(sim=SimConfig(name=engine), out=str(path), **recipe_fields))
