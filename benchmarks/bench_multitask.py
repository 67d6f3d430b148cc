"""Does sharing the backbone help? One multi-task run against the same budget split across single-task runs.

    python benchmarks/bench_multitask.py [--cycles 6] [--episodes 16] [--seeds 0 1] [--pretrained DIR] [key=value ...]

Per seed, three ``flywheel run``s from the same starting weights (default: the multi-task
starter, ``configs/pretrain/small_multitask.yaml``, pretrained first if missing), that seed and
the same cycles:

- **multi**: one run on both tasks (``tasks=``, weight 1 each), ``--episodes`` a cycle, so each
  task gets half of them;
- **single**: one run per task, ``--episodes / 2`` a cycle.

Each task so gets the same episodes (and, the learner steps following ``learner.utd``, the same
optimizer steps per env step) in both arms; what differs is whether one model learns from both
tasks' rows. Capability and the evaluation's mean return are measured per task in the task's
reference on the same fixed evaluation episodes in both arms (paired). The verdict per task and
measure compares the mean over the later half of the cycles, multi minus single, averaged over
the seeds, against two standard errors of that difference: positive transfer, negative
transfer, or within noise. The standard error is the larger of the evaluation episodes' (each
seed's, combined) and the seeds' scatter (with two seeds or more), so neither a lucky seed nor
a few evaluation episodes decide alone. The return is there for a task that no episode
succeeds in yet (its capability stays 0 in both arms).

``--seeds-from RESULT.json`` adds the seeds of an earlier result of this benchmark, measured with
the same settings (checked: cycles, episodes, starter, overrides and the learner's settings), to
the ones run now: its runs need not be on this machine.

Writes ``benchmarks/results/<name>.json`` and ``<name>.png`` (capability and return per task
against that task's own env steps, both arms) and prints the table. ``key=value`` are ``flywheel run``
overrides for every run (e.g. ``eval.episodes=32``). Run directories go under ``--root`` and
resume when run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from configs.run_schema import RunConfig  # noqa: E402
from configs.schema import to_dataclass  # noqa: E402
from flywheel.controller import run  # noqa: E402
from flywheel.logger import read_cycles, read_start  # noqa: E402
from flywheel.pretrained import SCRATCH, SMALL_PRESET, preset_checkpoint  # noqa: E402
from flywheel.report import load_runs  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("mujoco/reacher-twin", "mujoco/cartpole-swingup-twin")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=6)
    ap.add_argument("--episodes", type=int, default=16, help="the multi-task run's episodes per cycle (even)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="run seeds: each arm runs once per seed")
    ap.add_argument("--seeds-from", help="an earlier result of this benchmark, same settings: its seeds join these")
    ap.add_argument("--pretrained", default=None, help=f"checkpoint directory or {SCRATCH} (default: the "
                                                        "multi-task starter)")
    ap.add_argument("--max-episode-steps", type=int, default=None, help="every task's episode length (tiny tries)")
    ap.add_argument("--root", default="runs/bench-multitask")
    ap.add_argument("--name", default="bench_multitask")
    ap.add_argument("overrides", nargs="*", help="flywheel run overrides for every run")
    args = ap.parse_args()
    if args.episodes < 2 or args.episodes % 2:
        sys.exit(f"--episodes {args.episodes}: an even number >= 2, half of it for each task's single run")
    if len(set(args.seeds)) != len(args.seeds):
        sys.exit(f"--seeds {' '.join(map(str, args.seeds))}: each seed once")
    pretrained = args.pretrained or str(preset_checkpoint(SMALL_PRESET.with_name("small_multitask.yaml")))
    # What the learners ran with (defaults and overrides): results of other learner settings do not mix.
    learner = dataclasses.asdict(to_dataclass(OmegaConf.merge(OmegaConf.structured(RunConfig),
                                                              OmegaConf.from_dotlist(args.overrides)), RunConfig).learner)
    curves, wall = earlier(args, pretrained, learner) if args.seeds_from else ({}, {})
    sims = {task: {"name": task, "max_episode_steps": args.max_episode_steps} for task in TASKS}
    arms = {"multi": {"episodes_per_cycle": args.episodes, "tasks": [{"sim": sim} for sim in sims.values()]}}
    arms |= {task: {"episodes_per_cycle": args.episodes // 2, "sim": sims[task], "reference": sims[task]}
             for task in TASKS}
    for seed in args.seeds:
        common = [f"pretrained={pretrained}", f"cycles={args.cycles}", "if_exists=resume", f"seed={seed}",
                  *args.overrides]
        dirs = run_dirs(Path(args.root), seed)
        for arm, changes in arms.items():
            config = to_dataclass(OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.from_dotlist(common),
                                                  {"run_dir": str(dirs[arm]), **changes}), RunConfig)
            run(config, console=print)
        # From the runs' own records, so that a benchmark run again over finished runs reports their time.
        wall[seed] = {arm: run_seconds(run_dir) for arm, run_dir in dirs.items()}
        curves[seed] = {task: {"multi": curve(dirs["multi"], task), "single": curve(dirs[task], None)}
                        for task in TASKS}
    seeds = sorted(curves)
    rows = [verdict(task, [curves[seed][task] for seed in seeds], key) for task in TASKS for key in MEASURES]
    print_table(rows)
    result = {"benchmark": "bench_multitask", "cycles": args.cycles, "episodes_per_cycle": args.episodes,
              "seeds": seeds, "pretrained": pretrained, "overrides": args.overrides, "learner": learner,
              "max_episode_steps": args.max_episode_steps, "tasks": rows, "curves": curves, "wall_seconds": wall,
              "machine": platform.platform()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", result)
    write_figure_atomic(RESULTS / f"{args.name}.png", figure(curves))
    print(f"wrote {RESULTS / args.name}.json and .png")


def earlier(args, pretrained: str, learner: dict) -> tuple[dict, dict]:
    """The curves and run seconds by seed of ``--seeds-from``, after checking that it measured
    what this invocation measures (a result that did not record its learner settings cannot be
    checked, and is refused)."""
    import json

    old = json.loads(Path(args.seeds_from).read_text())
    mine = {"cycles": args.cycles, "episodes_per_cycle": args.episodes, "pretrained": pretrained,
            "overrides": args.overrides, "max_episode_steps": args.max_episode_steps, "learner": learner}
    differ = {k: (old.get(k), v) for k, v in mine.items() if old.get(k) != v}
    if differ:
        sys.exit(f"--seeds-from {args.seeds_from}: measured with other settings ({differ}: theirs, ours)")
    seeds = old["seeds"]
    curves, wall = old["curves"], old["wall_seconds"]
    clash = set(seeds) & set(args.seeds)
    if clash:
        sys.exit(f"--seeds-from {args.seeds_from} has seeds {sorted(clash)} already: run other seeds")
    return {int(s): c for s, c in curves.items()}, {int(s): w for s, w in wall.items()}


def run_dirs(root: Path, seed: int) -> dict[str, Path]:
    """Each arm's run directory for ``seed`` (seed 0's where the benchmark kept them before it had seeds)."""
    base = root if seed == 0 else root / f"seed{seed}"
    return {"multi": base / "multi"} | {t: base / f"single-{t.replace('/', '_')}" for t in TASKS}


# What each arm is compared on: capability (the task's success rate, where it defines one), and the
# evaluation's mean return, which still moves where no episode succeeds (a swing-up from a small starter).
MEASURES = ("capability", "return")


def curve(run_dir: Path, task: str | None) -> list[dict]:
    """Capability and evaluation return, each ± standard error, against the task's own cumulative
    env steps, the start first: the report's view of ``task`` in a multi-task run
    (``flywheel.report.load_runs``), or a single-task run's own numbers."""
    runs = load_runs(run_dir)
    run = runs[0] if task is None else next(r for r in runs if r.sim == task)
    return [{"cycle": record["cycle"], "env_steps": record["env_steps_total"], "capability": record["capability"],
             "capability_stderr": record["capability_stderr"], "return": record["eval"]["mean_return"],
             "return_stderr": record["eval"]["return_stderr"]} for record in [run.start, *run.cycles]]


def run_seconds(run_dir: Path) -> float:
    """The run's evaluation of its start and its cycles, in seconds, as it recorded them."""
    start = read_start(run_dir)
    return float(start["seconds"]["eval"] + sum(r["seconds"]["cycle"] for r in read_cycles(run_dir)))


def later_half(points: list[dict], key: str) -> tuple[float, float]:
    """Mean ``key`` over the later half of the cycles (the start left out) and its standard error."""
    later = points[1:][(len(points) - 1) // 2:]
    errors = np.array([p[f"{key}_stderr"] for p in later])
    return float(np.mean([p[key] for p in later])), float(np.sqrt(np.sum(errors ** 2)) / len(later))


def verdict(task: str, seeds: list[dict[str, list[dict]]], key: str) -> dict:
    """The task's verdict on ``key`` over the seeds' arms (module docstring: which standard error)."""
    halves = [{arm: later_half(arms[arm], key) for arm in ("multi", "single")} for arms in seeds]
    multi, single = (float(np.mean([h[arm][0] for h in halves])) for arm in ("multi", "single"))
    multi_se, single_se = (float(np.sqrt(sum(h[arm][1] ** 2 for h in halves)) / len(halves))
                           for arm in ("multi", "single"))
    gains = np.array([h["multi"][0] - h["single"][0] for h in halves])
    episodes_se = float(np.hypot(multi_se, single_se))
    seeds_se = float(np.std(gains, ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else 0.0
    gain, stderr = float(gains.mean()), max(episodes_se, seeds_se)
    word = ("positive transfer" if gain > 2 * stderr else "negative transfer" if gain < -2 * stderr
            else "within noise")
    return {"task": task, "measure": key, "seeds": len(seeds), "start": seeds[0]["single"][0][key], "single": single,
            "single_stderr": single_se, "multi": multi, "multi_stderr": multi_se, "multi_minus_single": gain,
            "multi_minus_single_by_seed": gains.tolist(), "stderr_episodes": episodes_se,
            "stderr_seeds": seeds_se, "stderr": stderr, "verdict": word}


def print_table(rows: list[dict]) -> None:
    print(f"\nper task, mean over the later half of the cycles and over {rows[0]['seeds']} seed(s) (± standard error)")
    print(f"{'task':32} {'measure':>10} {'start':>8} {'single':>17} {'multi':>17} {'multi - single':>18}  verdict")
    for r in rows:
        print(f"{r['task']:32} {r['measure']:>10} {r['start']:8.3f} {r['single']:8.3f} ± {r['single_stderr']:6.3f} "
              f"{r['multi']:8.3f} ± {r['multi_stderr']:6.3f} {r['multi_minus_single']:+9.3f} ± {r['stderr']:6.3f}  "
              f"{r['verdict']}")


def figure(curves: dict[int, dict[str, dict[str, list[dict]]]]):
    """Each task's capability and return against its env steps, both arms: the mean over the seeds,
    ± 1 standard error of that mean over the evaluation episodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(MEASURES), len(TASKS), figsize=(5 * len(TASKS), 3.4 * len(MEASURES)),
                             squeeze=False)
    for row, key in zip(axes, MEASURES):
        for ax, task in zip(row, TASKS):
            for arm in ("multi", "single"):
                runs = [curves[seed][task][arm] for seed in curves]
                x = np.mean([[p["env_steps"] for p in points] for points in runs], axis=0)
                y = np.mean([[p[key] for p in points] for points in runs], axis=0)
                se = np.sqrt(np.sum([[p[f"{key}_stderr"] ** 2 for p in points] for points in runs], axis=0)) / len(runs)
                ax.plot(x, y, marker="o", label=f"{arm}-task run" + (f", mean of {len(runs)} seeds" if len(runs) > 1
                                                                     else ""))
                ax.fill_between(x, y - se, y + se, alpha=0.2)
            ax.set_title(task)
            ax.set_xlabel("env steps of this task")
            ax.set_ylabel(f"{'evaluation return' if key == 'return' else key} (± 1 s.e.)")
            ax.legend()
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
