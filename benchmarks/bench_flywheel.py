"""Flywheel rollout throughput: agent-in-loop env steps/s over raw simulator steps/s.

    python benchmarks/bench_flywheel.py [--sim mujoco/reacher-twin] [--envs 16 64 256] [--repeats 3]

For each number of envs per worker, planning off and on, and 1 and 2 rollout workers, the
agent (Perceive -> [Imagine] -> Act over a batch of envs, chunks executed open-loop) is
timed against the raw simulator stepping random actions on the same cores, with episodes
of the same length (resets cost the same share of both). One worker runs in this process;
two run as Ray actors, one core each, against two raw sims stepping at once in two such
actors. One worker also runs with grading on, as a cycle's rollout actors do (the grader
holds every chunk's imagination against the physics while its start state is at hand). The model runs once per chunk for the whole batch, so its cost per env step falls
as the batch grows.

This machine is shared and its speed drifts by 2x over minutes, so each agent run is
bracketed by raw runs on the same cores just before and after it, and the ratio is taken
against their mean; the table shows the median ratio over ``--repeats`` such brackets (and
their range in the JSON). Target with planning off: at least 0.5 of raw. Writes
``benchmarks/results/bench_flywheel.json``.

The capability curve (eval capability over >= 8 cycles from a pretrained checkpoint) is
``benchmarks/bench_capability.py``.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import sims  # noqa: E402
from configs.learning import GradeConfig  # noqa: E402
from flywheel.rollout import RolloutSpec, collect  # noqa: E402
from flywheel.rows import STEPS  # noqa: E402
from policies.agent import Agent  # noqa: E402
from sims.files import write_json_atomic  # noqa: E402
from sims.local_ray import init_local_ray  # noqa: E402
from sims.timing import steps_per_second  # noqa: E402
from world_model.chunk_grader import ChunkGrader  # noqa: E402


RAW_STEPS = 3000


def agent_steps_per_second(agent: Agent, envs: list, episodes: int, planning: bool, n_candidates: int,
                           seed: int = 0, grader: ChunkGrader | None = None) -> float:
    spec = RolloutSpec(episodes=episodes, seed=seed, planning=planning, n_candidates=n_candidates)
    start = time.perf_counter()
    rows = collect(agent, envs, spec, grader)
    return float(rows[STEPS].sum()) / (time.perf_counter() - start)


def bracketed(raw, agent) -> dict:
    """Agent steps/s, and raw steps/s as the mean of a raw run just before and just after."""
    before = raw()
    sps = agent()
    after = raw()
    base = (before + after) / 2
    return {"agent": sps, "raw": base, "ratio": sps / base}


def summarize(envs: int, workers: int, planning: bool, runs: list[dict], graded: bool = False) -> dict:
    middle = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
    return {"envs": envs, "workers": workers, "planning": planning, "graded": graded,
            "agent_steps_per_s": round(middle["agent"], 1), "raw_steps_per_s": round(middle["raw"], 1),
            "ratio": round(middle["ratio"], 4),
            "ratio_range": [round(min(r["ratio"] for r in runs), 4), round(max(r["ratio"] for r in runs), 4)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", default="mujoco/reacher-twin")
    ap.add_argument("--agent", default="tiny", help="model size (policies.config.SIZES)")
    ap.add_argument("--envs", type=int, nargs="+", default=[16, 64, 256], help="envs per rollout worker")
    ap.add_argument("--episode-steps", type=int, default=48)
    ap.add_argument("--n-candidates", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="bracketed runs per setting (the median is shown)")
    ap.add_argument("--min-steps", type=int, default=4096,
                    help="env steps per worker per run at least: small batches run several episodes per env")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_flywheel.json"))
    args = ap.parse_args()
    if min(args.envs) < 1 or min(args.episode_steps, args.repeats, args.min_steps) < 1:
        ap.error("--envs, --episode-steps, --repeats and --min-steps must be >= 1")
    sims.check_config(args.sim, {})

    import ray
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(1)
    torch.manual_seed(0)
    agent = Agent(args.agent).eval()
    raw_env = sims.make(args.sim, max_episode_steps=args.episode_steps)

    def episodes(envs: int) -> int:
        """Whole rounds of episodes on every env (equal lengths: they all end together)."""
        return envs * max(1, math.ceil(args.min_steps / (envs * args.episode_steps)))

    rows = []
    for envs in args.envs:
        vector = [sims.make(args.sim, max_episode_steps=args.episode_steps) for _ in range(envs)]
        agent_steps_per_second(agent, vector, envs, False, args.n_candidates, seed=99)  # warm
        for planning in (False, True):
            for grader in (None, ChunkGrader(GradeConfig())):
                runs = [bracketed(lambda: steps_per_second(raw_env, steps=RAW_STEPS),
                                  lambda: agent_steps_per_second(agent, vector, episodes(envs), planning,
                                                                 args.n_candidates, seed, grader))
                        for seed in range(args.repeats)]
                rows.append(summarize(envs, 1, planning, runs, graded=grader is not None))

    init_local_ray(2)
    weights = ray.put(agent.model.state_dict())
    workers = [ray.remote(num_cpus=1)(Worker).remote(args.agent, weights, args.sim, args.episode_steps)
               for _ in range(2)]

    def raw_together() -> float:
        return sum(ray.get([w.raw.remote() for w in workers]))

    def agent_together(envs: int, planning: bool, seed: int) -> float:
        start = time.perf_counter()
        steps = sum(ray.get([w.run.remote(envs, episodes(envs), planning, args.n_candidates, 2 * seed + k)
                             for k, w in enumerate(workers)]))
        return steps / (time.perf_counter() - start)

    for envs in args.envs:
        ray.get([w.run.remote(envs, envs, False, args.n_candidates, 99) for w in workers])  # warm: imports, models, envs
        for planning in (False, True):
            runs = [bracketed(raw_together, lambda: agent_together(envs, planning, seed))
                    for seed in range(args.repeats)]
            rows.append(summarize(envs, 2, planning, runs))
    ray.shutdown()

    table = Table(title=f"Agent-in-loop over raw steps/s ({args.sim}, {args.episode_steps}-step episodes, "
                        f"agent={args.agent})")
    for column in ("envs per worker", "workers", "planning", "grading", "agent steps/s", "raw steps/s",
                   "agent / raw", "range"):
        table.add_column(column, justify="right")
    for r in sorted(rows, key=lambda r: (r["planning"], r["envs"], r["graded"], r["workers"])):
        lo, hi = r["ratio_range"]
        table.add_row(str(r["envs"]), str(r["workers"]), "on" if r["planning"] else "off",
                      "on" if r["graded"] else "off",
                      f"{r['agent_steps_per_s']:,.0f}", f"{r['raw_steps_per_s']:,.0f}", f"{r['ratio']:.3f}",
                      f"{lo:.2f}-{hi:.2f}")
    Console(width=120).print(table)
    write_json_atomic(args.out, {
        "benchmark": "bench_flywheel", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "settings": vars(args), "rows": rows,
    })
    print(f"wrote {args.out}")


class Worker:
    """One rollout worker: its agent and envs are built once, outside the timed runs."""

    def __init__(self, size, weights, sim, episode_steps) -> None:
        torch.set_num_threads(1)
        self.agent = Agent(size).eval()
        self.agent.model.load_state_dict(weights)
        self.sim, self.episode_steps, self.envs = sim, episode_steps, []
        self.raw_env = sims.make(sim, max_episode_steps=episode_steps)

    def raw(self) -> float:
        return steps_per_second(self.raw_env, steps=RAW_STEPS)

    def run(self, envs: int, episodes: int, planning: bool, n_candidates: int, seed: int) -> int:
        while len(self.envs) < envs:
            self.envs.append(sims.make(self.sim, max_episode_steps=self.episode_steps))
        spec = RolloutSpec(episodes=episodes, seed=seed, planning=planning, n_candidates=n_candidates)
        return int(collect(self.agent, self.envs[:envs], spec)[STEPS].sum())


if __name__ == "__main__":
    main()
