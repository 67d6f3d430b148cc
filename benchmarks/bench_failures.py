"""Which reacher episodes an agent fails, and how: never reaching the target, or not holding it.

    python benchmarks/bench_failures.py CHECKPOINT [CHECKPOINT ...] [--label NAME ...]
        [--episodes 100] [--name bench_failures] [key=value ...]

A CHECKPOINT is what ``bench_planning.py`` takes (a model directory, a run checkpoint or a run
directory). Each is evaluated as ``flywheel.cycle.evaluate`` does (the reference sim, fixed
seeds, the run's evaluation settings; ``key=value`` are ``flywheel run`` overrides such as
``eval.n_candidates=4``), and every episode is read back from its rows: the fingertip's distance
to the target at each step (the reacher's reward is minus it), the target's distance from the
shoulder (6-20 cm; close targets need the elbow near its limit) and the start distance.

Success needs the fingertip within 2 cm for 10 consecutive steps (``sims.twins.reacher``). A
failed episode either **never reached** (never within 2 cm), or **reached but did not hold**
(within 2 cm, never for 10 steps running). The table gives both counts, success by the target's
distance from the shoulder, and the failed episodes' closest approach; the PNG shows success by
target distance and each failed episode's distance over time. Reacher tasks only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from benchmarks.bench_planning import model_dir  # noqa: E402
from configs.run_schema import RunConfig  # noqa: E402
from configs.schema import to_dataclass  # noqa: E402
from flywheel.cycle import evaluation_spec  # noqa: E402
from flywheel.rollout import collect  # noqa: E402
from flywheel.rows import CHUNK, EPISODE, PROPRIO, REWARDS, SIM, STEPS, SUCCESS  # noqa: E402
from policies.agent import Agent  # noqa: E402
from sims import make  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402
from sims.twins.reacher import HOLD_STEPS, TARGET_DISTANCE  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# Target distance from the shoulder, in bins across the task's 6-20 cm.
RADIUS_EDGES = np.linspace(*TARGET_DISTANCE, 5)


def longest_run(inside: np.ndarray) -> int:
    best = run = 0
    for flag in inside:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def episodes(rows: dict) -> list[dict]:
    """Each episode of ``collect``'s rows: its per-step distance, target and start geometry."""
    arm = make(str(rows[SIM][0]))  # the twin's own kinematics: the fingertip from the joint angles
    radius = arm.description.target_radius
    out = []
    for e in np.unique(rows[EPISODE]):
        idx = np.flatnonzero(rows[EPISODE] == e)
        idx = idx[np.argsort(rows[CHUNK][idx])]
        distance = np.concatenate([-rows[REWARDS][i][: rows[STEPS][i]] for i in idx])
        cos1, sin1, cos2, sin2, _, _, dx, dy = rows[PROPRIO][idx[0]][-1][:8]
        tip = arm.fingertip((np.arctan2(sin1, cos1), np.arctan2(sin2, cos2)))
        inside = distance < radius
        out.append({"success": bool(rows[SUCCESS][idx[-1]]), "target_radius": float(np.linalg.norm(tip + [dx, dy])),
                    "start_distance": float(np.hypot(dx, dy)), "min_distance": float(distance.min()),
                    "longest_hold": longest_run(inside), "steps_inside": int(inside.sum()),
                    "final_distance": float(distance[-1]), "distance": [round(float(d), 4) for d in distance]})
    arm.close()
    return out


def summarize(eps: list[dict]) -> dict:
    failed = [e for e in eps if not e["success"]]
    never = [e for e in failed if e["longest_hold"] == 0]
    unheld = [e for e in failed if e["longest_hold"] > 0]
    radius = np.array([e["target_radius"] for e in eps])
    success = np.array([e["success"] for e in eps], dtype=float)
    bins = np.clip(np.digitize(radius, RADIUS_EDGES[1:-1]), 0, len(RADIUS_EDGES) - 2)
    by_radius = [{"from_cm": round(100 * RADIUS_EDGES[b], 1), "to_cm": round(100 * RADIUS_EDGES[b + 1], 1),
                  "episodes": int((bins == b).sum()),
                  "success": float(success[bins == b].mean()) if (bins == b).any() else float("nan")}
                 for b in range(len(RADIUS_EDGES) - 1)]
    return {"episodes": len(eps), "success": float(success.mean()), "failed": len(failed),
            "never_reached": len(never), "reached_not_held": len(unheld),
            "failed_min_distance_cm": [round(100 * e["min_distance"], 1) for e in failed],
            "unheld_longest_hold": [e["longest_hold"] for e in unheld],
            "failed_final_distance_cm": [round(100 * e["final_distance"], 1) for e in failed],
            "by_target_radius": by_radius}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="model dirs, run checkpoints or run dirs (then key=value overrides)")
    ap.add_argument("--label", action="append", default=None, help="one per checkpoint (default: the path)")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--name", default="bench_failures", help="results file stem")
    args = ap.parse_args(argv)
    overrides = [a for a in args.checkpoints if "=" in a]
    paths = [a for a in args.checkpoints if "=" not in a]
    labels = args.label or paths
    if len(labels) != len(paths):
        sys.exit(f"{len(labels)} --label for {len(paths)} checkpoints")
    cfg = to_dataclass(OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.from_dotlist(
        [f"eval.episodes={args.episodes}", *overrides])), RunConfig)
    if "reacher" not in cfg.reference.name:
        sys.exit(f"reference.name={cfg.reference.name}: bench_failures reads the reacher's distance and target")

    table = []
    for label, path in zip(labels, paths):
        agent = Agent.from_checkpoint(model_dir(path))
        envs = [make(cfg.reference.name, **cfg.reference.make_kwargs())
                for _ in range(min(cfg.eval.episodes, cfg.envs_per_worker))]
        eps = episodes(collect(agent, envs, evaluation_spec(cfg)))
        for env in envs:
            env.close()
        summary = summarize(eps)
        table.append({"checkpoint": label, **summary, "per_episode": eps})
        print(f"{label}: success {summary['success']:.3f} on {summary['episodes']} episodes; failed "
              f"{summary['failed']}: never within 2 cm {summary['never_reached']}, within but held < "
              f"{HOLD_STEPS} steps {summary['reached_not_held']}", flush=True)
        print("  success by target distance from the shoulder: " + ", ".join(
            f"{b['from_cm']:.1f}-{b['to_cm']:.1f} cm {b['success']:.2f} ({b['episodes']})"
            for b in summary["by_target_radius"]))
        print(f"  failed episodes' closest approach (cm): {sorted(summary['failed_min_distance_cm'])}")
        print(f"  reached-not-held longest hold (steps): {sorted(summary['unheld_longest_hold'])}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", {
        "episodes": args.episodes, "overrides": overrides, "table": table,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}})
    plot(table, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / args.name}.json and .png")


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(table), figsize=(4.5 * (1 + len(table)), 3.6), squeeze=False)
    axes = axes[0]
    width = 0.8 / len(table)
    for j, entry in enumerate(table):
        bins = entry["by_target_radius"]
        x = np.arange(len(bins)) + (j - (len(table) - 1) / 2) * width
        axes[0].bar(x, [b["success"] for b in bins], width, label=entry["checkpoint"])
        ax = axes[1 + j]
        for e in entry["per_episode"]:
            if not e["success"]:
                ax.plot(100 * np.asarray(e["distance"]), lw=0.8,
                        color="tab:red" if e["longest_hold"] == 0 else "tab:orange")
        ax.axhline(2.0, color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("env step")
        ax.set_ylabel("fingertip to target (cm)")
        ax.set_title(f"{entry['checkpoint']}: {entry['failed']} failed\n(red never within 2 cm, orange not held)",
                     fontsize=8)
    bins = table[0]["by_target_radius"]
    axes[0].set_xticks(np.arange(len(bins)), [f"{b['from_cm']:.0f}-{b['to_cm']:.0f}" for b in bins])
    axes[0].set_xlabel("target distance from the shoulder (cm)")
    axes[0].set_title("success by target distance")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=100)


if __name__ == "__main__":
    main()
