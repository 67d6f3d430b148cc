"""``flywheel report RUN_DIR... [--out DIR]``: the fidelity report over flywheel runs.

A single directory that is not itself a run but holds run directories (a sweep) reports
every run in it, one report per reference sim: the largest group in ``report/``, each other
in ``report/reference-<sim>/``. A multi-task run is one run per task (``report.load_runs``),
each reported with its own reference's group. Single-task run directories named one by one
must share their reference.
``--out`` defaults to ``report/`` beside the first run. What the report holds and how the
compounding rate is defined: ``flywheel.report`` and ``docs/report.md``.

``ReportWhenSweepEnds`` is the Hydra callback with which ``flywheel run
experiment=fidelity_sweep`` writes this report once all its runs are done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra.experimental.callback import Callback
from rich.console import Console
from rich.table import Table

from flywheel import report

console = Console()
if not console.is_terminal:
    console.width = 160


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="flywheel report",
                                 description="Capability against fidelity over flywheel run directories.")
    ap.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, or one sweep directory")
    ap.add_argument("--out", help="report folder (default: report/ beside the first run)")
    args = ap.parse_args(argv)
    given = [Path(d) for d in args.run_dirs]
    run_dirs = expand(given)
    runs = [run for d in run_dirs for run in report.load_runs(d)]
    sweep = len(given) == 1 and is_sweep(given[0])
    groups = report.by_reference(runs) if sweep or any(r.multitask for r in runs) else [runs]
    for group in groups:
        report.check_comparable(group)  # before anything is written
    out = Path(args.out) if args.out else run_dirs[0].parent / "report"
    folders = [out] + [out / report.reference_slug(group[0]) for group in groups[1:]]
    see_also = [f"- `{group[0].config['reference']['name']}`: {', '.join(f'`{r.name}`' for r in group)} "
                f"([report]({folder.name}/report.md))" for group, folder in zip(groups[1:], folders[1:])]
    for group, folder in zip(groups, folders):
        written = report.write_report(group, folder, see_also if folder == out else ())
        if len(groups) > 1:
            console.print(f"\nreference sim {group[0].config['reference']['name']}: {len(group)} runs")
        print_table(group)
        console.print(report.finding(group))
        for run in group:
            if run.missing:
                console.print(f"{run.path}: incomplete, missing cycles {', '.join(map(str, run.missing))}")
        console.print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def is_sweep(path: Path) -> bool:
    return path.is_dir() and not (path / "config.json").is_file()


def expand(dirs) -> list[Path]:
    """Run directories as given, or the runs inside a single sweep directory."""
    dirs = list(dirs)
    if len(dirs) == 1 and is_sweep(dirs[0]):
        # One level only: checkpoints below a run hold config.json files of their own.
        inside = sorted(d for d in dirs[0].iterdir() if (d / "config.json").is_file())
        if not inside:
            raise ValueError(f"{dirs[0]}: neither a flywheel run directory nor a sweep of them (no config.json in it "
                             "or in its subdirectories)")
        return inside
    return dirs


class ReportWhenSweepEnds(Callback):
    """Hydra callback: ``flywheel report SWEEP_DIR`` once every run of the multirun has returned."""

    def on_multirun_end(self, config, **kwargs) -> None:
        from flywheel.hydra import report_user_errors

        sweep_dir = str(config.hydra.sweep.dir)
        console.print(f"\nevery run of the sweep is done: flywheel report {sweep_dir}")
        report_user_errors(main, [sweep_dir])


def print_table(runs: list[report.Run]) -> None:
    table = Table(title="flywheel report")
    for column in report.TABLE_HEADER:
        table.add_column(column, justify="left" if column in ("run", "training sim") else "right", overflow="fold")
    for row in report.table_rows(runs):
        table.add_row(*row)
    console.print(table)
