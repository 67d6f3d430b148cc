"""Planning without the sim vs acting without planning, on the same fixed evaluation episodes.

    python benchmarks/bench_planning.py CHECKPOINT [CHECKPOINT ...] [--label NAME ...]
        [--episodes 40] [--candidates 1 4 16] [--name bench_planning] [key=value ...]

A CHECKPOINT is a model directory (``config.json`` + weights: a pretrained starter), a run
checkpoint (``checkpoints/cycle-000005``) or a run directory (its ``checkpoints/latest``).
Each is evaluated as ``flywheel.cycle.evaluate`` does at the end of a cycle (the reference
sim, fixed seeds ``eval.seed``, ..., never consulted while choosing) with ``eval.planning=false``
(the plain policy route: one chunk from the observation) and with ``eval.planning=true`` for
each ``--candidates`` n: imagine n futures, act on each, keep the best by the agent's own
score (the chunk ranker's where the model has one, else mean Q of the chunk where it has a
critic, else the return head). n = 1 is the
control: the imagination route with nothing to choose between. ``--oracle`` adds, for each n >
1, the reference sim's own pick among the n (each run in it, the best chunk reward kept, as
``choose=sim`` trains): not planning without the sim, but the most any scorer of one chunk
could make of the same candidates.

Prints a table (success with its binomial standard error, mean return with the episodes'
spread / sqrt(n), and each planned row's paired return difference against no planning on
the same episodes, with its standard error) and writes ``benchmarks/results/<name>.json``
and a PNG. ``key=value`` are ``flywheel run`` overrides (e.g. ``reference.name=...``).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from flywheel import checkpoint as run_checkpoint  # noqa: E402
from flywheel.cycle import evaluation_spec  # noqa: E402
from flywheel.rollout import collect, episode_lengths_and_returns, episode_stats  # noqa: E402
from flywheel.rows import EPISODE, SIM_STEPS, STEPS, SUCCESS  # noqa: E402
from policies.agent import Agent  # noqa: E402
from sims import make  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def model_dir(path: str) -> Path:
    """The model directory a CHECKPOINT argument names."""
    p = Path(path)
    if (p / "checkpoints" / "latest").is_file():  # a run directory (its config.json is the run's)
        return run_checkpoint.latest(p) / "model"
    if (p / "model" / "config.json").is_file():
        return p / "model"
    if (p / "checkpoint" / "config.json").is_file():  # a pretraining run directory
        return p / "checkpoint"
    if (p / "config.json").is_file():
        return p
    sys.exit(f"{path}: neither a model directory, a run checkpoint, a pretraining run directory nor a run "
             "directory with checkpoints/latest")


def measure(agent: Agent, config: RunConfig, oracle: bool = False, lookahead_chunks: int = 0) -> dict:
    """``flywheel.cycle.evaluate``, keeping each episode's success and return for paired comparisons;
    ``oracle``: the reference sim runs every candidate and keeps the best (as ``choose=sim`` trains),
    each continued ``lookahead_chunks`` chunks by the policy first."""
    spec = evaluation_spec(config)
    if oracle:
        spec = dataclasses.replace(spec, choose="sim", lookahead_chunks=lookahead_chunks)
    ref = config.reference
    envs = [make(ref.name, **ref.make_kwargs()) for _ in range(min(config.eval.episodes, config.envs_per_worker))]
    began = time.perf_counter()
    rows = collect(agent, envs, spec)
    seconds = time.perf_counter() - began
    for env in envs:
        env.close()
    stats = episode_stats(rows)
    _, returns = episode_lengths_and_returns(rows)
    # Per episode, in id order (as ``episode_lengths_and_returns``): success as ``episode_stats`` reads it.
    last = {e: i for i, e in enumerate(rows[EPISODE])}
    success = np.array([bool(rows[SUCCESS][last[e]]) for e in np.unique(rows[EPISODE])], dtype=float)
    n = len(returns)
    p = stats["success_rate"]
    return {"success": p, "success_se": float(np.sqrt(p * (1 - p) / n)),
            "mean_return": float(returns.mean()), "return_se": float(returns.std() / np.sqrt(n)),
            "episodes": n, "env_steps": int(rows[STEPS].sum()), "sim_steps": int(rows[SIM_STEPS].sum()),
            "seconds": round(seconds, 1), "per_episode_return": [round(float(r), 4) for r in returns],
            "per_episode_success": [int(s) for s in success]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="model dirs, run checkpoints or run dirs (then key=value overrides)")
    ap.add_argument("--label", action="append", default=None, help="one per checkpoint (default: the path)")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--candidates", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--name", default="bench_planning", help="results file stem")
    ap.add_argument("--oracle", action="store_true",
                    help="also let the reference sim pick among the same n candidates by their chunk reward "
                         "(it consults the sim: the most any one-chunk scorer could add)")
    ap.add_argument("--lookahead-chunks", type=int, nargs="+", default=[0],
                    help="with --oracle: chunks the policy acts past each candidate before the sim ranks them "
                         "(flywheel.rollout; one oracle row per value)")
    args = ap.parse_args()
    overrides = [a for a in args.checkpoints if "=" in a]
    paths = [a for a in args.checkpoints if "=" not in a]
    labels = args.label or paths
    if len(labels) != len(paths):
        sys.exit(f"{len(labels)} --label for {len(paths)} checkpoints")

    table = []
    for label, path in zip(labels, paths):
        directory = model_dir(path)
        agent = Agent.from_checkpoint(directory)
        scorer = ("chunk ranker" if agent.model.has_ranker else "critic (mean Q)" if agent.model.has_critic
                  else "return head")
        # (label, planning, n, oracle: None, or the sim's pick continued this many chunks)
        settings = [("no planning", False, None, None)] + [(f"plan n={n}", True, n, None) for n in args.candidates]
        settings += [(f"sim picks n={n}" + (f" +{h}" if h else ""), True, n, h) for n in args.candidates
                     for h in args.lookahead_chunks if args.oracle and n > 1]
        baseline = None
        for setting, planning, n, oracle in settings:
            cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.from_dotlist(
                [f"eval.episodes={args.episodes}", f"eval.planning={planning}",
                 *([f"eval.n_candidates={n}"] if n else []), *overrides]))
            result = measure(agent, to_dataclass(cfg, RunConfig), oracle is not None, oracle or 0)
            result.update(checkpoint=label, model_dir=str(directory),
                          scorer="the sim (oracle)" if oracle is not None else scorer if planning else "-",
                          setting=setting, planning=planning, n_candidates=n, lookahead_chunks=oracle or 0)
            if baseline is None:
                baseline = result
            else:
                diff = np.asarray(result["per_episode_return"]) - np.asarray(baseline["per_episode_return"])
                dsucc = np.asarray(result["per_episode_success"]) - np.asarray(baseline["per_episode_success"])
                result.update(return_gain=float(diff.mean()),
                              return_gain_se=float(diff.std(ddof=1) / np.sqrt(len(diff))),
                              success_gain=float(dsucc.mean()),
                              success_gain_se=float(dsucc.std(ddof=1) / np.sqrt(len(dsucc))))
            table.append(result)
            print(f"{label:>22} {setting:>12} {result['scorer']:>16}  success {result['success']:.3f} "
                  f"+- {result['success_se']:.3f}  return {result['mean_return']:8.2f} +- {result['return_se']:.2f}"
                  + (f"  vs none {result['return_gain']:+.2f} +- {result['return_gain_se']:.2f}"
                     if "return_gain" in result else "") + f"  ({result['seconds']} s)", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", {
        "episodes": args.episodes, "overrides": overrides, "table": table,
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()}})
    plot(table, labels, RESULTS / f"{args.name}.png", args.episodes)
    print(f"wrote {RESULTS / args.name}.json and .png")


def plot(table: list[dict], labels: list[str], path: Path, episodes: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    settings = list(dict.fromkeys(r["setting"] for r in table))
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        rows = {r["setting"]: r for r in table if r["checkpoint"] == label}
        x = np.arange(len(settings)) + (j - (len(labels) - 1) / 2) * width
        for ax, key, se in ((axes[0], "success", "success_se"), (axes[1], "mean_return", "return_se")):
            ax.bar(x, [rows[s][key] for s in settings], width, yerr=[rows[s][se] for s in settings], capsize=3,
                   label=label)
    for ax, title in ((axes[0], "success rate"), (axes[1], "mean eval return")):
        ax.set_xticks(np.arange(len(settings)), settings, rotation=25, ha="right")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"planning without the sim vs no planning ({episodes} fixed eval episodes, +-1 s.e.)")
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=100)


if __name__ == "__main__":
    main()
