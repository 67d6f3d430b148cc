"""``flywheel world-model``: fit the learned simulator of a sim.

    flywheel world-model fit [sim=<file in configs/sim>] [sim.name=SIM] [out=DIR]
                             [collect.steps=N] [train.steps=N] [model.hidden=N] ...

``fit`` runs the recipe ``flywheel.learned_sim.fit_world_model`` (which a run also uses for
a learned sim with no checkpoint yet): it collects transitions from the sim (demonstrator
with noise, and random actions), fits the ensemble, and writes into ``out``: ``checkpoint.safetensors`` + ``config.json`` (the
checkpoint ``sims.make("learned/<sim>", checkpoint=out)`` loads), ``fidelity.json`` (held-out
one- and ten-step error against a constant-velocity baseline, and fidelity of the learned sim
at each ``report.correct_every``) and ``fidelity.png`` (error against horizon). Every file
is written atomically.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table

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
    from flywheel.learned_sim import fit_world_model

    config = to_dataclass(cfg, WorldModelFitConfig)
    report = fit_world_model(config, console=lambda line: console.print(line, style="yellow"))
    print_report(report)
    console.print(f"wrote {report['out']}/checkpoint.safetensors, config.json, fidelity.json, fidelity.png")
    return 0


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
