"""Does sharing the backbone help? One multi-task run against the same budget split across single-task runs.

    python benchmarks/bench_multitask.py [--cycles 6] [--episodes 16] [--pretrained DIR] [key=value ...]

Three ``flywheel run``s from the same starting weights (default: the multi-task starter,
``configs/pretrain/small_multitask.yaml``, pretrained first if missing), the same seed and the
same cycles:

- **multi**: one run on both tasks (``tasks=``, weight 1 each), ``--episodes`` a cycle, so each
  task gets half of them;
- **single**: one run per task, ``--episodes / 2`` a cycle.

Each task so gets the same episodes (and, the learner steps following ``learner.utd``, the same
optimizer steps per env step) in both arms; what differs is whether one model learns from both
tasks' rows. Capability and the evaluation's mean return are measured per task in the task's
reference on the same fixed evaluation episodes in both arms (paired). The verdict per task and
measure compares the mean over the later half of the cycles, multi minus single, against two
standard errors of that difference: positive transfer, negative transfer, or within noise. The
return is there for a task that no episode succeeds in yet (its capability stays 0 in both arms).

Writes ``benchmarks/results/<name>.json`` and ``<name>.png`` (capability and return per task
against that task's own env steps, both arms) and prints the table. ``key=value`` are ``flywheel run``
overrides for every run (e.g. ``eval.episodes=32``). Run directories go under ``--root`` and
resume when run again.
"""

from __future__ import annotations

import argparse
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
from flywheel.pretrained import MULTITASK_PRESET, SCRATCH, preset_checkpoint  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("mujoco/reacher-twin", "mujoco/cartpole-swingup-twin")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=6)
    ap.add_argument("--episodes", type=int, default=16, help="the multi-task run's episodes per cycle (even)")
    ap.add_argument("--pretrained", default=None, help=f"checkpoint directory or {SCRATCH} (default: the "
                                                        "multi-task starter)")
    ap.add_argument("--max-episode-steps", type=int, default=None, help="every task's episode length (tiny tries)")
    ap.add_argument("--root", default="runs/bench-multitask")
    ap.add_argument("--name", default="bench_multitask")
    ap.add_argument("overrides", nargs="*", help="flywheel run overrides for every run")
    args = ap.parse_args()
    if args.episodes < 2 or args.episodes % 2:
        sys.exit(f"--episodes {args.episodes}: an even number >= 2, half of it for each task's single run")
    pretrained = args.pretrained or str(preset_checkpoint(MULTITASK_PRESET))
    common = [f"pretrained={pretrained}", f"cycles={args.cycles}", "if_exists=resume", *args.overrides]
    sims = {task: {"name": task, "max_episode_steps": args.max_episode_steps} for task in TASKS}
    dirs = {"multi": Path(args.root) / "multi"} | {t: Path(args.root) / f"single-{t.replace('/', '_')}" for t in TASKS}
    arms = {"multi": {"episodes_per_cycle": args.episodes, "tasks": [{"sim": sim} for sim in sims.values()]}}
    arms |= {task: {"episodes_per_cycle": args.episodes // 2, "sim": sims[task], "reference": sims[task]}
             for task in TASKS}
    for arm, changes in arms.items():
        config = to_dataclass(OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.from_dotlist(common),
                                              {"run_dir": str(dirs[arm]), **changes}), RunConfig)
        run(config, console=print)
    # From the runs' own records, so that a benchmark run again over finished runs reports their time.
    wall = {arm: run_seconds(run_dir) for arm, run_dir in dirs.items()}
    curves = {task: {"multi": curve(dirs["multi"], task), "single": curve(dirs[task], None)} for task in TASKS}
    rows = [verdict(task, arms_of, key) for task, arms_of in curves.items() for key in MEASURES]
    print_table(rows)
    result = {"benchmark": "bench_multitask", "cycles": args.cycles, "episodes_per_cycle": args.episodes,
              "pretrained": pretrained, "overrides": args.overrides, "max_episode_steps": args.max_episode_steps,
              "tasks": rows, "curves": curves, "wall_seconds": wall, "machine": platform.platform()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", result)
    write_figure_atomic(RESULTS / f"{args.name}.png", figure(curves))
    print(f"wrote {RESULTS / args.name}.json and .png")


# What each arm is compared on: capability (the task's success rate, where it defines one), and the
# evaluation's mean return, which still moves where no episode succeeds (a swing-up from a small starter).
MEASURES = ("capability", "return")


def curve(run_dir: Path, task: str | None) -> list[dict]:
    """Capability and evaluation return, each ± standard error, against the task's own cumulative
    env steps, the start first: from a multi-task run's ``tasks[task]`` (and ``eval.tasks[task]``),
    or a single-task run's own numbers."""
    points, env_steps = [], 0
    for record in [read_start(run_dir), *read_cycles(run_dir)]:
        own = record if task is None else record["tasks"][task]
        evaluation = record["eval"] if task is None else record["eval"]["tasks"][task]
        if record["cycle"] >= 0:
            env_steps += record["env_steps"] if task is None else own["env_steps"]
        points.append({"cycle": record["cycle"], "env_steps": env_steps, "capability": own["capability"],
                       "capability_stderr": own["capability_stderr"], "return": evaluation["mean_return"],
                       "return_stderr": evaluation["return_stderr"]})
    return points


def run_seconds(run_dir: Path) -> float:
    """The run's evaluation of its start and its cycles, in seconds, as it recorded them."""
    start = read_start(run_dir)
    return float(start["seconds"]["eval"] + sum(r["seconds"]["cycle"] for r in read_cycles(run_dir)))


def later_half(points: list[dict], key: str) -> tuple[float, float]:
    """Mean ``key`` over the later half of the cycles (the start left out) and its standard error."""
    later = points[1:][(len(points) - 1) // 2:]
    errors = np.array([p[f"{key}_stderr"] for p in later])
    return float(np.mean([p[key] for p in later])), float(np.sqrt(np.sum(errors ** 2)) / len(later))


def verdict(task: str, arms: dict[str, list[dict]], key: str) -> dict:
    (multi, multi_se), (single, single_se) = later_half(arms["multi"], key), later_half(arms["single"], key)
    gain, stderr = multi - single, float(np.hypot(multi_se, single_se))
    word = ("positive transfer" if gain > 2 * stderr else "negative transfer" if gain < -2 * stderr
            else "within noise")
    return {"task": task, "measure": key, "start": arms["single"][0][key], "single": single,
            "single_stderr": single_se, "multi": multi, "multi_stderr": multi_se, "multi_minus_single": gain,
            "stderr": stderr, "verdict": word}


def print_table(rows: list[dict]) -> None:
    print("\nper task, mean over the later half of the cycles (± standard error)")
    print(f"{'task':32} {'measure':>10} {'start':>8} {'single':>17} {'multi':>17} {'multi - single':>18}  verdict")
    for r in rows:
        print(f"{r['task']:32} {r['measure']:>10} {r['start']:8.3f} {r['single']:8.3f} ± {r['single_stderr']:6.3f} "
              f"{r['multi']:8.3f} ± {r['multi_stderr']:6.3f} {r['multi_minus_single']:+9.3f} ± {r['stderr']:6.3f}  "
              f"{r['verdict']}")


def figure(curves: dict[str, dict[str, list[dict]]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(MEASURES), len(curves), figsize=(5 * len(curves), 3.4 * len(MEASURES)),
                             squeeze=False)
    for row, key in zip(axes, MEASURES):
        for ax, (task, arms) in zip(row, curves.items()):
            for arm, points in arms.items():
                x = [p["env_steps"] for p in points]
                y = np.array([p[key] for p in points])
                se = np.array([p[f"{key}_stderr"] for p in points])
                ax.plot(x, y, marker="o", label=f"{arm}-task run")
                ax.fill_between(x, y - se, y + se, alpha=0.2)
            ax.set_title(task)
            ax.set_xlabel("env steps of this task")
            ax.set_ylabel(f"{'evaluation return' if key == 'return' else key} (± 1 s.e.)")
            ax.legend()
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
