"""``flywheel world-model``: fit the learned simulator of a sim.

    flywheel world-model fit [sim=<file in configs/sim>] [sim.name=SIM] [out=DIR]
                             [collect.steps=N] [train.steps=N] [model.hidden=N] ...

``fit`` collects transitions from the sim (demonstrator with noise, and random actions),
fits the ensemble, and writes into ``out``: ``checkpoint.safetensors`` + ``config.json`` (the
checkpoint ``sims.make("learned/<sim>", checkpoint=out)`` loads), ``fidelity.json`` (held-out
one- and ten-step error against a constant-velocity baseline, and fidelity of the learned sim
at each ``report.correct_every``) and ``fidelity.png`` (error against horizon). Every file
is written atomically.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flywheel.atomic import write_json_atomic

console = Console()
if not console.is_terminal:
    console.width = 160


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "fit":
        from flywheel.hydra import run_hydra

        return run_hydra("flywheel world-model fit", "world_model/fit", fit_task, rest)
    print(f"flywheel world-model: unknown command {command!r} (expected fit)", file=sys.stderr)
    return 2


def fit_task(cfg) -> int:
    from configs.schema import WorldModelFitConfig, to_dataclass

    config = to_dataclass(cfg, WorldModelFitConfig)
    report = fit_world_model(config)
    print_report(report)
    console.print(f"wrote {report['out']}/checkpoint.safetensors, config.json, fidelity.json, fidelity.png")
    return 0


def fit_world_model(config) -> dict[str, Any]:
    """Collect, fit, save, evaluate; returns the report written to ``fidelity.json``."""
    import sims
    import world_model as wm
    from configs.schema import world_model_dir
    from world_model.fidelity import plot_curves

    name = config.sim.name
    sim_kwargs = config.sim.make_kwargs()
    if sim_kwargs.pop("camera"):
        console.print("[yellow]camera ignored: the learned simulator is proprio-only[/yellow]")
    sims.check_config(name, sim_kwargs)  # bad names and settings fail before any work
    model = wm.ModelConfig(**asdict(config.model))
    fit_config = wm.FitConfig(**asdict(config.train))
    schedule = [wm.parse_correct_every(k) for k in config.report.correct_every]
    if config.collect.steps < 20:
        raise ValueError(f"collect.steps must be >= 20, got {config.collect.steps}")
    out = Path(config.out or world_model_dir(name))

    began = time.perf_counter()
    held_out_steps = max(config.collect.steps // 4, 20)
    with _progress() as progress:
        task = progress.add_task("collecting transitions", total=config.collect.steps + held_out_steps)
        collect_args = dict(demo_fraction=config.collect.demo_fraction, noise=config.collect.noise, **sim_kwargs)
        data = wm.collect(name, config.collect.steps, seed=config.collect.seed,
                          progress=lambda n: progress.update(task, completed=n), **collect_args)
        held_out = wm.collect(name, held_out_steps, seed=config.collect.seed + 1,
                              progress=lambda n: progress.update(task, completed=config.collect.steps + n),
                              **collect_args)
        task = progress.add_task("fitting", total=fit_config.steps)
        simulator = wm.fit(data, model, fit_config,
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
        "fidelity": [{"correct_every": _label(k), **r.as_dict()} for k, r in zip(schedule, results)],
        "probes": {"count": probes.size, "horizon": probes.horizon, "seed": probes.seed},
        "seconds": round(time.perf_counter() - began, 2),
    }
    write_json_atomic(out / "fidelity.json", report)
    plot_curves(results, str(out / "fidelity.png"), labels=[f"correct_every={_label(k)}" for k in schedule],
                title=f"Learned simulator of {name}: error against horizon")
    return report


def print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"Learned simulator of {report['sim']} ({report['transitions']} transitions, "
                        f"{report['seconds']:.1f} s)")
    for column in ("held-out error (normalized)", "learned", "constant velocity"):
        table.add_column(column, justify="left" if column.startswith("held") else "right")
    for key, row in report["prediction_error"].items():
        table.add_row(key.replace("_", " "), f"{row['learned']:.2e}", f"{row['constant_velocity']:.2e}")
    console.print(table)
    table = Table(title=f"Fidelity against {report['sim']} ({report['probes']['count']} probes x "
                        f"{report['probes']['horizon']} steps)")
    for column in ("correct_every", "fidelity", "mean error", "diverges at"):
        table.add_column(column, justify="right")
    for row in report["fidelity"]:
        table.add_row(row["correct_every"], f"{row['fidelity']:.4f}", f"{row['mean_error']:.2e}",
                      "never" if row["diverges_at"] is None else str(row["diverges_at"]))
    console.print(table)


def _label(correct_every: int | None) -> str:
    return "never" if correct_every is None else str(correct_every)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=console, transient=True)
