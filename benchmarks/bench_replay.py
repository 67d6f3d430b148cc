"""Replay memory: sampling a cycle's batches from a store that grows, against reading it whole.

    python benchmarks/bench_replay.py [--sizes 10000,100000,1000000] [--read-up-to 100000] [--cycle]

Builds a synthetic store once: rows from the real ``flywheel.rollout.collect`` (the tiny
scratch agent on the reacher twin, choose=sim with 16 candidates, as the default run
collects), written as one real shard, whose bytes are then copied as more shards and cycles
(two shards of 200 chunks a cycle, as the default run's two workers write) until the store
holds each size in ``--sizes`` chunks; it stops at the first size the free disk cannot
hold. For each size, a fresh process (so its peak is its own) samples one cycle's batches
(``--steps`` x ``--batch``, 200 x 32 by default) with ``RolloutStore.sample`` as the driver
does: without the columns the default loss never reads (``flywheel.objective.unread_columns``,
the candidates the sim ran), and once more with every column, as a run with the critic or the
ranker must read them; up to
``--read-up-to`` chunks, another fresh process reads the whole replay as the driver did
before (``RolloutStore.read``). Reported: each process's peak RSS (``ru_maxrss``) and the
time per sample or read, and the bytes a held row takes. The sample's peak must stay flat as
the store grows.

``--cycle`` also runs one tiny real cycle (embedded Ray, ``learner.steps`` unset) and reports
the driver's and the learners' peak RSS from its record.

Writes ``benchmarks/results/bench_replay.json`` and ``.png``; the store (under ``--root``) is
deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs.run_schema import LearnerConfig  # noqa: E402
from flywheel.objective import unread_columns  # noqa: E402
from flywheel.store import RolloutStore, ShardInfo  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHARDS_PER_CYCLE = 2


def template_shard(store: RolloutStore, chunks: int) -> ShardInfo:
    """One real shard of ``chunks`` rows from ``collect`` (cycle 0, worker 0)."""
    import sims
    from flywheel.rollout import RolloutSpec, collect
    from policies.agent import Agent

    agent = Agent("tiny")
    envs = [sims.make("mujoco/reacher-twin") for _ in range(4)]
    episodes = -(-chunks // 25)  # 200 steps of 8-step chunks
    rows = collect(agent, envs, RolloutSpec(episodes=episodes, planning=True, n_candidates=16, choose="sim"))
    info, _ = store.write_shard(0, 0, rows.take(slice(0, chunks)))
    return info


def grow(store: RolloutStore, template: ShardInfo, chunks: int) -> int:
    """Add cycles of copied shards until the store holds ``chunks`` rows; returns its cycles."""
    cycles = store.committed_cycles()
    cycle = cycles[-1] + 1 if cycles else 0
    while cycle * SHARDS_PER_CYCLE * template.rows < chunks:
        shards = []
        for worker in range(SHARDS_PER_CYCLE):
            path = f"cycle-{cycle:06d}/worker-{worker:02d}.parquet"
            if path != template.path:
                (store.root / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(store.root / template.path, store.root / path)
            shards.append(ShardInfo(path, template.rows, template.episodes, template.sha256))
        store.commit_cycle(cycle, shards)
        cycle += 1
    return cycle


def measure(root: str, mode: str, n: int, repeats: int) -> dict:
    """In this (fresh) process: sample ``n`` rows or read the whole store; peak RSS and seconds."""
    store = RolloutStore(root)
    cycles = store.committed_cycles()
    # The imports' transient peak would hide the work's: reset the kernel's peak (VmHWM) first.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mb("VmRSS")
    seconds = []
    for r in range(repeats):
        began = time.perf_counter()
        if mode in ("sample", "sample_all"):
            skip = unread_columns(LearnerConfig()) if mode == "sample" else ()
            sample, report = store.sample(cycles, n, seed=(0, r), skip=skip)
            held, row_bytes = sample.rows.n, sum(v.nbytes for v in sample.rows.values()) / sample.rows.n
        else:
            rows, report = store.read(cycles)
            held, row_bytes = rows.n, sum(v.nbytes for v in rows.values()) / rows.n
        seconds.append(time.perf_counter() - began)
        del report
    peak = _status_mb("VmHWM")
    return {"mode": mode, "peak_rss_mb": round(peak, 1), "rss_before_mb": round(before, 1),
            "seconds": round(min(seconds), 3), "rows_held": held, "row_kb": round(row_bytes / 1e3, 2),
            "shards": SHARDS_PER_CYCLE * len(cycles)}


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (kB there), in MB."""
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def in_fresh_process(root: Path, mode: str, n: int, repeats: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", str(root), "--mode", mode, "--n", str(n),
                          "--repeats", str(repeats)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def tiny_cycle(run_dir: Path) -> dict:
    """One real cycle with the learners' steps from the UTD: the driver's and learners' peaks."""
    from configs.run_schema import RunConfig
    from configs.schema import SimConfig
    from flywheel.controller import run
    from flywheel.logger import read_cycles

    sim = SimConfig(name="mujoco/reacher-twin", max_episode_steps=16)
    config = RunConfig(run_dir=str(run_dir), cycles=1, pretrained="scratch", num_rollout_workers=2,
                       envs_per_worker=2, episodes_per_cycle=4, n_candidates=2, sim=sim, reference=sim)
    config.learner.batch_size, config.eval.episodes, config.learner.utd = 8, 2, 0.25
    run(config, console=lambda *a: None)
    (record,) = read_cycles(run_dir)
    learner = record["learner"]
    return {"env_steps": record["env_steps"], "steps": learner["steps"], "utd": learner["utd"],
            "samples_per_env_step": learner["samples_per_env_step"], "learner_peak_rss_mb": learner["peak_rss_mb"],
            "driver_peak_rss_mb": record["replay"]["driver_peak_rss_mb"]}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, sec) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, style in (("sample", "o-"), ("sample_all", "^:"), ("read", "s--")):
        points = [(r["chunks"], r[mode]) for r in results if r.get(mode)]
        if points:
            mem.plot([c for c, _ in points], [m["peak_rss_mb"] for _, m in points], style, label=mode)
            sec.plot([c for c, _ in points], [m["seconds"] for _, m in points], style, label=mode)
    for ax, label in ((mem, "peak RSS of the process (MB)"), (sec, "seconds per sample / read")):
        ax.set_xscale("log")
        ax.set_xlabel("chunks in the store")
        ax.set_ylabel(label)
        ax.legend()
    mem.set_title("driver memory: sample (flat; the loss's columns or all) vs read whole")
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--read-up-to", type=int, default=100000, help="largest store also read whole (old path)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--root", default="/tmp/bench_replay_store")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--cycle", action="store_true", help="also one tiny real cycle: learner and driver peaks")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="sample", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.mode, args.n, args.repeats)))
        return
    run_benchmark(args)


def _peak(m: dict) -> str:
    return f"{m['peak_rss_mb']:.0f} MB (+{m['peak_rss_mb'] - m['rss_before_mb']:.0f} over the imports)"


def run_benchmark(args: argparse.Namespace) -> None:
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    store = RolloutStore(root)
    began = time.perf_counter()
    template = template_shard(store, 200)
    shard_bytes = (root / template.path).stat().st_size
    print(f"template shard: {template.rows} chunks, {shard_bytes / 1e6:.2f} MB on disk "
          f"({shard_bytes / template.rows / 1e3:.1f} kB a chunk), built in {time.perf_counter() - began:.0f} s")
    results = []
    try:
        for chunks in (int(s) for s in args.sizes.split(",")):
            need = chunks / template.rows * shard_bytes
            free = shutil.disk_usage(root).free
            if need > 0.5 * free:
                print(f"stopping before {chunks:,} chunks: {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free")
                break
            grow(store, template, chunks)
            draws = args.steps * args.batch
            row = {"chunks": chunks, "store_gb": round(need / 1e9, 3),
                   "sample": in_fresh_process(root, "sample", draws, args.repeats),
                   "sample_all": in_fresh_process(root, "sample_all", draws, args.repeats)}
            if chunks <= args.read_up_to:
                row["read"] = in_fresh_process(root, "read", 0, 1)
            results.append(row)
            read = row.get("read")
            lean, every = row["sample"], row["sample_all"]
            print(f"{chunks:>9,} chunks ({row['store_gb']:.2f} GB): sample peak {_peak(lean)} "
                  f"in {lean['seconds']:.2f} s, {lean['row_kb']:.1f} kB a held row; every column "
                  f"{_peak(every)} in {every['seconds']:.2f} s, {every['row_kb']:.1f} kB a row"
                  + (f"; read whole peak {_peak(read)} in {read['seconds']:.2f} s" if read else ""), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    cycle = tiny_cycle(root.with_name(root.name + "_run")) if args.cycle else None
    if cycle:
        shutil.rmtree(root.with_name(root.name + "_run"), ignore_errors=True)
        print(f"tiny real cycle: {cycle}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "bench_replay.json", {
        "settings": {"steps": args.steps, "batch": args.batch, "repeats": args.repeats,
                     "unread_by_default": list(unread_columns(LearnerConfig())),
                     "shard_chunks": template.rows, "shard_bytes": shard_bytes},
        "sizes": results, "tiny_cycle": cycle})
    plot(results, RESULTS / "bench_replay.png")
    print(f"wrote {RESULTS / 'bench_replay.json'} and .png")


if __name__ == "__main__":
    main()
