"""``flywheel export RUN_DIR --format minari [--out DIR] [--force]``: a run's graded rollouts as
datasets another library loads (``flywheel.export``; docs/export.md)."""

from __future__ import annotations

import argparse
import sys

from flywheel import export


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="flywheel export",
                                 description="Write a run's graded rollouts as Minari datasets (one per training sim).")
    ap.add_argument("run_dir", metavar="RUN_DIR")
    ap.add_argument("--format", choices=export.FORMATS, required=True)
    ap.add_argument("--out", help="the datasets root to write (default: RUN_DIR/export/minari)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = ap.parse_args(argv)
    try:
        report = export.export_minari(args.run_dir, args.out, force=args.force)
    except ImportError as exc:  # an optional dependency: one line saying what to install
        print(f"flywheel export: {exc}", file=sys.stderr)
        return 2
    for dataset, episodes in report.datasets.items():
        print(f"{dataset}: {episodes} episodes")
    print(f"{report.steps} steps; left out: {report.quarantined_episodes} quarantined episode(s), "
          f"{len(report.skipped_shards)} unreadable shard(s){': ' if report.skipped_shards else ''}"
          f"{', '.join(report.skipped_shards)}")
    first = next(iter(report.datasets))
    print(f"wrote {report.out}\nload it: MINARI_DATASETS_PATH={report.out} python -c "
          f"\"import minari; print(minari.load_dataset('{first}'))\"")
    return 0
