"""What frames in the loop cost: one flywheel cycle with the camera off and on, the same run otherwise.

    python benchmarks/bench_camera.py [--pretrained DIR] [--pairs 1] [--out NAME] [key=value ...]

``key=value`` are any other ``flywheel run`` overrides (the defaults below keep it to a few
minutes on 2 cores). Each pair runs ``flywheel run`` for one cycle with ``camera=false``, then
``camera=true``, from the same checkpoint and seed (embedded Ray, run directories under a
temporary directory), and reads, per run:

- rollout throughput: env steps / wall seconds of the rollout phase (``cycles.jsonl``), and of
  the learner phase per learner step;
- store bytes per env step: the cycle's shards on disk (zstd, ``flywheel.store``) over its env
  steps, with the frames' share, and what the same rows take with snappy (pyarrow's default);
- learner peak memory: the learner process's peak RSS (``learner.peak_rss_mb``), and the driver's.

The machine's speed drifts, so with ``--pairs`` > 1 the pairs alternate their order and the
table shows each run. Writes ``benchmarks/results/<out>.json``.
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from configs.run_schema import RunConfig  # noqa: E402
from configs.schema import to_dataclass  # noqa: E402
from flywheel.controller import run  # noqa: E402
from flywheel.logger import read_cycles  # noqa: E402
from flywheel.pretrained import small_checkpoint  # noqa: E402
from flywheel.rows import FRAME_COLUMNS, IMAGINED_FRAMES  # noqa: E402
from flywheel.store import RolloutStore, to_table  # noqa: E402
from sims.files import write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# One small cycle of the default run: its planning, 16 candidates and grading, fewer episodes and steps.
SMALL = ["cycles=1", "episodes_per_cycle=8", "learner.steps=100", "eval.episodes=8"]


def measure(config: RunConfig) -> dict:
    """One cycle of ``config``: its throughput, store bytes and peak memory."""
    began = time.perf_counter()
    run_dir = run(config, console=lambda line: None)
    wall = time.perf_counter() - began
    (record,) = read_cycles(run_dir)
    store = RolloutStore(run_dir / "store")
    shards = [run_dir / "store" / s.path for s in store.manifest(0).shards]
    rows, _ = store.read([0])
    env_steps, seconds = record["env_steps"], record["seconds"]
    frame_columns = [c.name for c in FRAME_COLUMNS] + [IMAGINED_FRAMES]
    raw_frames = sum(rows[c].nbytes for c in frame_columns if c in rows)
    snappy = io.BytesIO()
    pq.write_table(to_table(rows), snappy, compression="snappy")
    return {
        "camera": config.camera, "env_steps": env_steps, "sim_steps": record["sim_steps"],
        "rollout_env_steps_per_s": env_steps / seconds["rollout"],
        "learn_s_per_step": seconds["learn"] / record["learner"]["steps"], "eval_s": seconds["eval"],
        "store_bytes_per_env_step": sum(p.stat().st_size for p in shards) / env_steps,
        "snappy_bytes_per_env_step": snappy.tell() / env_steps,
        "raw_frame_bytes_per_env_step": raw_frames / env_steps,
        "imagined_frames": IMAGINED_FRAMES in rows,
        "learner_peak_rss_mb": record["learner"]["peak_rss_mb"],
        "driver_peak_rss_mb": record["replay"]["driver_peak_rss_mb"], "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", default=None, help="checkpoint directory (default: the small starter)")
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--out", default="bench_camera", help="results file stem")
    ap.add_argument("overrides", nargs="*", help="flywheel run overrides, e.g. n_candidates=4")
    args = ap.parse_args()
    pretrained = args.pretrained or str(small_checkpoint())
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        for pair in range(args.pairs):
            for camera in ((False, True) if pair % 2 == 0 else (True, False)):
                dotlist = [f"pretrained={pretrained}", *SMALL, *args.overrides, f"camera={camera}",
                           f"run_dir={tmp}/pair{pair}-camera-{'on' if camera else 'off'}"]
                config = to_dataclass(OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.from_dotlist(dotlist)),
                                      RunConfig)
                runs.append(measure(config))
                print(runs[-1], flush=True)
    print("| camera | env steps/s (rollouts) | learner s/step | store bytes/env step (zstd; snappy) "
          "| frames, raw bytes/env step | learner peak RSS MB |")
    for r in runs:
        print(f"| {'on' if r['camera'] else 'off'} | {r['rollout_env_steps_per_s']:.1f} | {r['learn_s_per_step']:.3f} | "
              f"{r['store_bytes_per_env_step']:,.0f}; {r['snappy_bytes_per_env_step']:,.0f} | "
              f"{r['raw_frame_bytes_per_env_step']:,.0f} | {r['learner_peak_rss_mb']:.0f} |")
    write_json_atomic(RESULTS / f"{args.out}.json",
                      {"runs": runs, "pretrained": pretrained, "overrides": [*SMALL, *args.overrides],
                       "machine": platform.platform(), "processor": platform.processor(), "cores": _cores()})


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    main()
