"""``flywheel report RUN_DIR... [--out DIR]``: the fidelity report over flywheel runs.

A single directory that is not itself a run but holds run directories (a sweep) reports
every run in it. ``--out`` defaults to ``report/`` beside the first run. What the report
holds and how the compounding rate is defined: ``flywheel.report`` and ``docs/report.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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
    run_dirs = expand(Path(d) for d in args.run_dirs)
    runs = [report.load_run(d) for d in run_dirs]
    report.check_comparable(runs)
    out = Path(args.out) if args.out else run_dirs[0].parent / "report"
    written = report.write_report(runs, out)
    print_table(runs)
    console.print(report.finding(runs))
    for run in runs:
        if run.missing:
            console.print(f"{run.path}: incomplete, missing cycles {', '.join(map(str, run.missing))}")
    console.print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def expand(dirs) -> list[Path]:
    """Run directories as given, or the runs inside a single sweep directory."""
    dirs = list(dirs)
    if len(dirs) == 1 and not (dirs[0] / "config.json").is_file() and dirs[0].is_dir():
        # One level only: checkpoints below a run hold config.json files of their own.
        inside = sorted(d for d in dirs[0].iterdir() if (d / "config.json").is_file())
        if not inside:
            raise ValueError(f"{dirs[0]}: neither a flywheel run directory nor a sweep of them (no config.json in it "
                             "or in its subdirectories)")
        return inside
    return dirs


def print_table(runs: list[report.Run]) -> None:
    table = Table(title="flywheel report")
    for column in report.TABLE_HEADER:
        table.add_column(column, justify="left" if column in ("run", "training sim") else "right", overflow="fold")
    for row in report.table_rows(runs):
        table.add_row(*row)
    console.print(table)
