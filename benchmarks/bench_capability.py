"""The capability curve: does the flywheel improve a pretrained agent, cycle after cycle?

    python benchmarks/bench_capability.py [--pretrained DIR] [--cycles 8] [key=value ...]

``key=value`` are any other ``flywheel run`` overrides. Without ``--pretrained`` the
checkpoint is the one ``flywheel run`` would start from (``runs/pretrain/default/checkpoint``,
else the small starter, pretrained first if missing). Runs ``flywheel run`` from it for ``--cycles`` cycles (embedded Ray)
and measures capability (success rate in the reference sim on fixed seeds) and the mean
eval return before the first cycle and after each one. Prints a table, writes
``benchmarks/results/<name>.json`` and a PNG of both against cycle and against
environment steps. Each evaluation is a binomial draw, so the verdict compares the mean
capability of the later half of the cycles with the start, against two standard errors;
a second verdict does the same for the return, with the episodes' spread of returns.

``--sac-seeds 0,1`` then trains Stable-Baselines3's SAC (``benchmarks/baselines/sac.py``,
default hyperparameters, from scratch, the ``[bench]`` extra) in the same script and on the
same cores, once per seed, on the training sim for as many env steps as the flywheel
executed, evaluated on the same fixed episodes after every cycle's worth of env steps, and
writes ``<name>_vs_sac.json`` and a PNG: success and return of both against env steps, sim
steps (every engine step: the flywheel's look-ahead and grading included) and training wall
time (evaluation excluded on both sides). The flywheel's head start, its pretrained
checkpoint, is named beside it: SAC starts from nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from configs.run_schema import RunConfig  # noqa: E402
from configs.schema import to_dataclass  # noqa: E402
from flywheel.controller import RunStopped, run  # noqa: E402
from flywheel.cycle import evaluate  # noqa: E402
from flywheel.logger import read_cycles, read_start  # noqa: E402
from flywheel.pretrained import DEFAULT, small_checkpoint  # noqa: E402
from policies.agent import Agent  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", default=None, help="checkpoint directory (default: as flywheel run)")
    ap.add_argument("--cycles", type=int, default=8)
    ap.add_argument("--run-dir", default="runs/flywheel/bench-capability")
    ap.add_argument("--name", default="bench_capability", help="results file stem (for comparing settings)")
    # One comma-separated value, so that the run overrides after it are not read as seeds.
    ap.add_argument("--sac-seeds", type=seeds, default=[], help="also run SAC with these seeds, e.g. 0,1")
    ap.add_argument("overrides", nargs="*", help="flywheel run overrides, e.g. eval.episodes=30")
    args = ap.parse_args()
    if args.pretrained is None:
        args.pretrained = str(DEFAULT if (DEFAULT / "config.json").is_file() else small_checkpoint())
    if not (Path(args.pretrained) / "config.json").is_file():
        sys.exit(f"--pretrained {args.pretrained}: no checkpoint there (run `flywheel pretrain` first)")
    run_dir = Path(args.run_dir)
    if run_dir.exists() and not read_cycles(run_dir):
        sys.exit(f"--run-dir {run_dir} exists without a completed cycle: remove it or pick another")
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.from_dotlist(
        [f"pretrained={args.pretrained}", f"cycles={args.cycles}", f"run_dir={run_dir}", "if_exists=resume",
         *args.overrides]))
    config = to_dataclass(cfg, RunConfig)

    try:
        run(config, console=print)
    except RunStopped as exc:  # a clean stop (SIGINT/SIGTERM): every complete cycle is kept
        print(f"bench_capability: {exc} (here: run the same command again)")
        sys.exit(exc.exit_code)
    records = read_cycles(run_dir)
    if not records:
        sys.exit(f"no cycle completed in {run_dir} (stopped early?); run again to resume it")
    # The run evaluated its starting weights once, before cycle 0, on the same episodes (start.json).
    start = read_start(run_dir)
    before = start["eval"] if start else evaluate(Agent.from_checkpoint(args.pretrained), config)
    # The cycles' own seconds, not this process's: a resumed run was timed over several processes.
    wall = sum(r["seconds"]["cycle"] for r in records)
    curve = [{"cycle": -1, "capability": before["capability"], "mean_return": before["mean_return"],
              "return_std": before["return_std"], "env_steps_total": 0, "sim_steps_total": 0,
              "eval_sim_steps": before["sim_steps"]}] + [
        {"cycle": r["cycle"], "capability": r["capability"], "mean_return": r["eval"]["mean_return"],
         "return_std": r["eval"].get("return_std", float("nan")),
         "env_steps_total": r["env_steps_total"], "sim_steps_total": r["sim_steps_total"],
         "eval_sim_steps": r["eval"]["sim_steps"],
         "grade_weight": r["grades"]["weight"], "rollout_success": r["rollout"]["success_rate"],
         "seconds": r["seconds"]["cycle"], "eval_seconds": r["seconds"].get("eval", 0.0)} for r in records]
    # One evaluation is a binomial draw of eval.episodes episodes, so single cycles are noisy:
    # the verdict compares the mean of the later half of the cycles with the start, against
    # two standard errors of that difference.
    n = config.eval.episodes
    noise = 1.0 / n
    start = curve[0]["capability"]
    later = [c["capability"] for c in curve[1:]][len(records) // 2:]
    late_mean = float(np.mean(later))
    pooled = min(max((start + late_mean) / 2, 1.0 / n), 1 - 1.0 / n)
    stderr = float(np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / (n * len(later)))))
    gain = late_mean - start
    best = max(c["capability"] for c in curve[1:])
    verdict = judge(gain, stderr)
    # The eval return is a second, less coarse reading of the same episodes (fixed seeds).
    late_returns = [c["mean_return"] for c in curve[1:]][len(records) // 2:]
    return_gain = float(np.mean(late_returns)) - curve[0]["mean_return"]
    spread = float(np.nanmean([c["return_std"] for c in curve]))
    return_stderr = spread * float(np.sqrt(1 / n + 1 / (n * len(later))))
    return_verdict = judge(return_gain, return_stderr)
    print(f"\ncapability in {config.reference.name} over {config.eval.episodes} fixed episodes "
          f"(one episode = {noise:.3f})")
    print(f"{'cycle':>6} {'capability':>10} {'eval return':>11} {'env steps':>10} {'rollout success':>15} "
          f"{'grade weight':>12}")
    for c in curve:
        label = "start" if c["cycle"] < 0 else str(c["cycle"])
        print(f"{label:>6} {c['capability']:>10.3f} {c['mean_return']:>11.2f} {c['env_steps_total']:>10} "
              f"{c.get('rollout_success', float('nan')):>15.3f} {c.get('grade_weight', float('nan')):>12.3f}")
    print(f"start {start:.3f} -> mean of the last {len(later)} cycles {late_mean:.3f} (2 s.e. {2 * stderr:.3f}; "
          f"best {best:.3f}) over {curve[-1]['env_steps_total']} env steps, {wall / 60:.1f} min of cycles: {verdict}")
    print(f"eval return {curve[0]['mean_return']:.2f} -> mean of the last {len(later)} cycles "
          f"{curve[0]['mean_return'] + return_gain:.2f} (2 s.e. {2 * return_stderr:.2f}): {return_verdict}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", {
        "pretrained": args.pretrained, "config": json.loads(json.dumps(OmegaConf.to_container(cfg))),
        "curve": curve, "late_mean": late_mean, "gain": gain, "stderr": stderr, "best": best,
        "eval_noise": noise, "verdict": verdict,
        "return_gain": return_gain, "return_stderr": return_stderr, "return_verdict": return_verdict,
        "wall_seconds": round(wall, 1), "machine": {"cpus": __import__("os").cpu_count(),
                                                     "platform": platform.platform()}})
    plot(curve, config, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / args.name}.json and .png")
    if args.sac_seeds:
        beside_sac(curve, config, args)


def flywheel_checkpoints(curve: list[dict]) -> list[dict]:
    """The flywheel's curve in the SAC harness's checkpoint schema: cumulative env steps, sim
    steps and training wall time (each cycle's seconds without its evaluation), per evaluation."""
    rows, wall = [], 0.0
    for c in curve:
        wall += c.get("seconds", 0.0) - c.get("eval_seconds", 0.0)
        rows.append({"env_steps": c["env_steps_total"], "sim_steps": c["sim_steps_total"], "wall_s": round(wall, 3),
                     "success_rate": c["capability"], "mean_return": c["mean_return"]})
    return rows


def beside_sac(curve: list[dict], config: RunConfig, args) -> None:
    """SAC from scratch on the same sim, budget and fixed episodes (module docstring)."""
    from benchmarks.baselines import sac

    steps = int(curve[-1]["env_steps_total"])
    every = int(curve[1]["env_steps_total"])  # one cycle's env steps
    runs = []
    for seed in args.sac_seeds:
        began = time.perf_counter()
        runs.append(sac.train_sac(config.sim.name, config.sim.make_kwargs(), steps, every, config.eval.episodes,
                                  config.eval.seed, seed))
        print(f"SAC seed {seed}: {steps} env steps in {time.perf_counter() - began:.0f} s", flush=True)
    summary = sac.summarize(runs)
    print(sac.format_table(summary, config.sim.name, config.eval.episodes))
    mine = sac.summarize([{"checkpoints": flywheel_checkpoints(curve)}])
    label = f"flywheel (pretrained start: {Path(args.pretrained).parent.name}), seed {config.seed}"
    write_json_atomic(RESULTS / f"{args.name}_vs_sac.json", {
        "flywheel": {"label": label, "pretrained": args.pretrained, "checkpoints": mine},
        "sac": {"seeds": args.sac_seeds, "summary": summary, "runs": runs},
        "eval_episodes": config.eval.episodes, "sim": config.sim.name})
    sac.plot({label: mine, f"SAC from scratch, {len(runs)} seed(s)": summary},
             f"{config.sim.name}: the flywheel beside SAC ({config.eval.episodes} fixed eval episodes)",
             RESULTS / f"{args.name}_vs_sac.png")
    print(f"wrote {RESULTS / args.name}_vs_sac.json and .png")


def seeds(text: str) -> list[int]:
    """``0,1`` -> [0, 1]."""
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, e.g. 0,1; got {text!r}") from None


def judge(gain: float, stderr: float) -> str:
    return "improved" if gain > 2 * stderr else "got worse" if gain < -2 * stderr else "no change beyond evaluation noise"


def plot(curve: list[dict], config: RunConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    cycles = [c["cycle"] + 1 for c in curve]  # 0 = the pretrained start
    steps = [c["env_steps_total"] for c in curve]
    caps = [c["capability"] for c in curve]
    returns = [c["mean_return"] for c in curve]
    for ax, x, label in ((axes[0], cycles, "cycles completed"), (axes[1], steps, "environment steps")):
        ax.plot(x, caps, marker="o", label="success rate")
        ax.axhline(caps[0], color="grey", linestyle=":", label="pretrained start")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        twin.plot(x, returns, color="tab:orange", linestyle="--", marker=".", label="eval return")
        twin.tick_params(axis="y", colors="tab:orange")
    twin.set_ylabel("mean eval return", color="tab:orange")
    axes[0].set_ylabel(f"success rate, {config.reference.name}")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"flywheel capability from a pretrained checkpoint ({config.eval.episodes} eval episodes)")
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=110)


if __name__ == "__main__":
    main()
