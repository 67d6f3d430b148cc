"""What one learner step costs, by how much prior data it also trains on and how many of the sim's
candidates per row the action expert also learns.

    python benchmarks/bench_learner_step.py [--pretrained DIR] [--prior-batch-sizes 0 16 32] [--threads 1 2]
        [--candidate-samples 0 4] [--ranker off on] [--steps 30]

A learner step (``flywheel.learners``) is the flywheel's loss on a batch of chunk rows
(``learner.batch_size``) plus, with ``learner.prior_coef`` > 0, the starter's pretraining
objectives on a prior batch per stage (``learner.prior_batch_size``; unset, as large as the
flywheel batch): forward, backward and AdamW update, on ``--threads`` torch threads (one, as a
learner reserving one CPU runs: ``learner_resources.num_cpus`` sets its threads). The rows
are the starter's own rollouts in the reacher (``flywheel.rollout.collect``, choosing among 16
candidates in the sim, as a cycle collects them), ``--candidate-samples`` sets
``learner.candidate_samples``, ``--ranker`` ``learner.ranker`` (the chunk ranker, grown into the
starter), the prior the starter's recipe data (``flywheel.prior``). Each setting is
timed in turns (A, B, C, A, B, C, ...) on the same process, so a drift of the shared machine
hits them alike; the table gives the median milliseconds per step and the ratio to the first
setting. Writes ``benchmarks/results/bench_learner_step.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sims  # noqa: E402
from configs.run_schema import LearnerConfig  # noqa: E402
from flywheel import prior  # noqa: E402
from flywheel.learners import _Objective, make_optimizer  # noqa: E402
from flywheel.rollout import RolloutSpec, collect  # noqa: E402
from flywheel.rows import ChunkRows  # noqa: E402
from policies.agent import Agent  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", default="runs/pretrain/small/checkpoint", help="a starter with its recipe beside it")
    ap.add_argument("--sim", default="mujoco/reacher-twin")
    ap.add_argument("--prior-batch-sizes", type=int, nargs="+", default=[32, 16, 0],
                    help="prior examples per stage; 0 = no prior data (learner.prior_coef=0)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads; each is a setting of its own")
    ap.add_argument("--candidate-samples", type=int, nargs="+", default=[0],
                    help="learner.candidate_samples; each is a setting of its own")
    ap.add_argument("--ranker", nargs="+", choices=["off", "on"], default=["off"],
                    help="learner.ranker; each is a setting of its own")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per setting, in turns of 5")
    ap.add_argument("--name", default="bench_learner_step")
    args = ap.parse_args()
    if not (Path(args.pretrained) / "config.json").is_file():
        sys.exit(f"--pretrained {args.pretrained}: no checkpoint there (`flywheel pretrain pretrain=small` makes it)")
    config = LearnerConfig()
    agent = Agent.from_checkpoint(args.pretrained)
    if "on" in args.ranker:
        agent.model.grow_ranker(seed=0)
    envs = [sims.make(args.sim) for _ in range(4)]
    rows = ChunkRows.of(collect(agent.eval(), envs, RolloutSpec(episodes=4, seed=0, n_candidates=16, choose="sim",
                                                                candidate_futures=max(args.candidate_samples) > 0)))
    spec = prior.resolve(args.pretrained, 1.0, config.train_experts, camera=False)
    if spec is None:
        sys.exit(f"--pretrained {args.pretrained}: no pretraining data beside it to train on")
    data = prior.PriorData(spec)
    settings = {}
    for size in args.prior_batch_sizes:
        uses = None
        if size:  # the same banks, read once; only the spec's batch size differs
            uses = copy.copy(data)
            uses.spec = dataclasses.replace(spec, batch_size=size)
        for threads in args.threads:
            for m in args.candidate_samples:
                for ranker in args.ranker:
                    settings[size, threads, m, ranker] = _Objective(
                        agent, dataclasses.replace(config, candidate_samples=m, ranker=ranker == "on"), uses)
    optimizer = make_optimizer(agent.model, config.train_experts, config.lr, config.weight_decay)
    rng = np.random.default_rng(0)
    times: dict[tuple, list[float]] = {setting: [] for setting in settings}
    step = 0
    with agent.model.text_prefixes():
        agent.model.train()
        for _ in range(-(-args.steps // 5) + 1):  # the first turn warms up and is dropped
            for setting, objective in settings.items():
                threads = setting[1]
                torch.set_num_threads(threads)
                spent = []
                for _ in range(5):
                    batch = rows.take(rng.choice(rows.n, config.batch_size, replace=False))
                    began = time.perf_counter()
                    optimizer.zero_grad(set_to_none=True)
                    objective(batch, (0, 0, step), 0, 1)["total"].backward()
                    optimizer.step()
                    spent.append(time.perf_counter() - began)
                    step += 1
                times[setting].extend(spent)
    first = next(iter(settings))
    table = []
    for (size, threads, m, ranker), spent in times.items():
        kept = spent[5:]
        table.append({"prior_batch_size": size, "threads": threads, "candidate_samples": m, "ranker": ranker == "on",
                      "prior_examples_per_step": size * len(spec.stages),
                      "flywheel_examples_per_step": config.batch_size,
                      "ms_per_step": 1000 * statistics.median(kept), "ms_q25": 1000 * float(np.quantile(kept, 0.25)),
                      "ms_q75": 1000 * float(np.quantile(kept, 0.75)), "steps": len(kept)})
    base = table[0]["ms_per_step"]
    for row in table:
        row["ratio_to_first"] = row["ms_per_step"] / base
    print(f"\nlearner step, flywheel batch {config.batch_size}, {len(spec.stages)} prior stages "
          f"({', '.join(spec.stages)}), median of {table[0]['steps']} steps (ratio to prior {first[0]} on "
          f"{first[1]} thread(s), {first[2]} candidates a row, ranker {first[3]})")
    print(f"{'prior per stage':>16} {'threads':>8} {'candidates':>10} {'ranker':>7} {'ms / step':>10} {'q25-q75':>16} "
          f"{'ratio':>7}")
    for row in table:
        print(f"{row['prior_batch_size'] or 'none':>16} {row['threads']:>8} {row['candidate_samples']:>10} "
              f"{'on' if row['ranker'] else 'off':>7} "
              f"{row['ms_per_step']:10.1f} "
              f"{row['ms_q25']:7.1f}-{row['ms_q75']:<7.1f} {row['ratio_to_first']:7.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", {
        "benchmark": "bench_learner_step", "pretrained": args.pretrained, "sim": args.sim, "rows": rows.n,
        "table": table, "machine": platform.platform(), "cpu_count": os.cpu_count()})
    write_figure_atomic(RESULTS / f"{args.name}.png", figure(table))
    print(f"wrote {RESULTS / args.name}.json and .png")


def figure(table: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    labels = [(f"prior {r['prior_batch_size']}/stage" if r["prior_batch_size"] else "no prior")
              + f"\n{r['threads']} thread" + ("s" if r["threads"] > 1 else "")
              + (f"\n{r['candidate_samples']} candidates" if r.get("candidate_samples") else "")
              + ("\nranker" if r.get("ranker") else "") for r in table]
    ms = [r["ms_per_step"] for r in table]
    errors = [[r["ms_per_step"] - r["ms_q25"] for r in table], [r["ms_q75"] - r["ms_per_step"] for r in table]]
    ax.bar(labels, ms, yerr=errors, capsize=4, color="tab:blue")
    ax.set_ylabel("ms per learner step (median, q25-q75)")
    ax.set_title("One learner step by prior batch, threads, candidates learned and ranker")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
