"""Flywheel rollout throughput: agent-in-loop env steps/s over raw simulator steps/s.

    python benchmarks/bench_flywheel.py [--sim mujoco/reacher-twin] [--envs 16 64 256] [--agent tiny]

For each number of envs per worker, planning off and on, and 1 and 2 rollout workers, the
agent (Perceive -> [Imagine] -> Act over a batch of envs, chunks executed open-loop) is
timed against the raw simulator stepping random actions on the same cores, with episodes
of the same length (resets cost the same share of both). One worker runs in this
process; two run as Ray actors, one core each, against twice the one-core raw rate. The
model runs once per chunk for the whole batch, so its cost per env step falls as the
batch grows. Ratios from one run are what to quote: the machine is shared and noisy.
Target with planning off: at least 0.5 of raw. Writes ``benchmarks/results/bench_flywheel.json``.

The capability curve (eval capability over >= 8 cycles from a pretrained checkpoint) is
``benchmarks/bench_capability.py``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import sims  # noqa: E402
from flywheel.atomic import write_json_atomic  # noqa: E402
from flywheel.rollout import RolloutSpec, collect  # noqa: E402
from policies.agent import Agent  # noqa: E402
from sims.timing import steps_per_second  # noqa: E402


def agent_steps_per_second(agent: Agent, sim: str, envs: int, episode_steps: int, planning: bool,
                           n_candidates: int, seed: int = 0) -> float:
    vector = [sims.make(sim, max_episode_steps=episode_steps) for _ in range(envs)]
    spec = RolloutSpec(episodes=envs, seed=seed, planning=planning, n_candidates=n_candidates)
    start = time.perf_counter()
    rows = collect(agent, vector, spec)
    return float(rows["steps"].sum()) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", default="mujoco/reacher-twin")
    ap.add_argument("--agent", default="tiny", help="model size (policies.config.SIZES)")
    ap.add_argument("--envs", type=int, nargs="+", default=[16, 64, 256], help="envs per rollout worker")
    ap.add_argument("--episode-steps", type=int, default=48)
    ap.add_argument("--n-candidates", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_flywheel.json"))
    args = ap.parse_args()
    if min(args.envs) < 1 or args.episode_steps < 1:
        ap.error("--envs and --episode-steps must be >= 1")
    sims.check_config(args.sim, {})

    import ray
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(1)
    torch.manual_seed(0)
    agent = Agent(args.agent).eval()
    raw = steps_per_second(sims.make(args.sim, max_episode_steps=args.episode_steps), steps=5000)
    rows = []
    for envs in args.envs:
        agent_steps_per_second(agent, args.sim, envs, args.episode_steps, False, args.n_candidates, seed=99)  # warm
        for planning in (False, True):
            sps = agent_steps_per_second(agent, args.sim, envs, args.episode_steps, planning, args.n_candidates)
            rows.append({"envs": envs, "workers": 1, "planning": planning, "agent_steps_per_s": round(sps, 1),
                         "raw_steps_per_s": round(raw, 1), "ratio": round(sps / raw, 4)})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    weights = ray.put(agent.model.state_dict())
    workers = [ray.remote(num_cpus=1)(Worker).remote(args.agent, weights, args.sim, args.episode_steps)
               for _ in range(2)]
    for envs in args.envs:
        ray.get([w.run.remote(envs, False, args.n_candidates, 99) for w in workers])  # warm: imports, models, envs
        for planning in (False, True):
            start = time.perf_counter()
            steps = sum(ray.get([w.run.remote(envs, planning, args.n_candidates, seed)
                                 for seed, w in enumerate(workers)]))
            sps = steps / (time.perf_counter() - start)
            rows.append({"envs": envs, "workers": 2, "planning": planning, "agent_steps_per_s": round(sps, 1),
                         "raw_steps_per_s": round(2 * raw, 1), "ratio": round(sps / (2 * raw), 4)})
    ray.shutdown()

    table = Table(title=f"Agent-in-loop over raw steps/s ({args.sim}, {args.episode_steps}-step episodes, "
                        f"agent={args.agent})")
    for column in ("envs per worker", "workers", "planning", "agent steps/s", "raw steps/s", "agent / raw"):
        table.add_column(column, justify="right")
    for r in sorted(rows, key=lambda r: (r["planning"], r["envs"], r["workers"])):
        table.add_row(str(r["envs"]), str(r["workers"]), "on" if r["planning"] else "off",
                      f"{r['agent_steps_per_s']:,.0f}", f"{r['raw_steps_per_s']:,.0f}", f"{r['ratio']:.3f}")
    Console().print(table)
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

    def run(self, envs: int, planning: bool, n_candidates: int, seed: int) -> int:
        while len(self.envs) < envs:
            self.envs.append(sims.make(self.sim, max_episode_steps=self.episode_steps))
        spec = RolloutSpec(episodes=envs, seed=seed, planning=planning, n_candidates=n_candidates)
        return int(collect(self.agent, self.envs[:envs], spec)["steps"].sum())


if __name__ == "__main__":
    main()
