"""Stable-Baselines3 SAC on a flywheel sim, evaluated exactly as the flywheel evaluates.

    python benchmarks/baselines/sac.py --sim mujoco/reacher-twin --steps 60000 \
        --eval-every 10000 --eval-episodes 100 --seeds 0 1

Why: the flywheel's capability only means something beside a standard RL learner given
the same budget. SAC (SB3 defaults, no tuning) learns from the sim's proprio vector
through the sim's gymnasium interface; every ``--eval-every`` env steps it is evaluated
on the flywheel's own fixed episodes (``flywheel.cycle.evaluate``): episode ``i``
resets with seed ``flywheel.rollout.reset_seed(eval_seed, i)``, succeeds if ``info["success"]`` was true at
any step (reset included), and returns the sum of its rewards until ``terminated or
truncated``. Each checkpoint records env steps, sim steps (every engine step; SAC never
looks ahead, so they equal env steps), training wall time (evaluation excluded, and timed
separately), success rate and mean return.

Prints a table (mean over seeds, standard error std(ddof=1)/sqrt(n)), writes
``<out>/sac_<sim-slug>.json`` and a PNG of success and return against env steps and
against wall time. stable-baselines3 is a benchmark-only dependency:
``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import sims  # noqa: E402
from flywheel.rollout import reset_seed  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
INSTALL_HINT = 'pip install -e ".[bench]"'

Predict = Callable[[np.ndarray], np.ndarray]


class ProprioEnv(gym.Env):
    """A sim seen as a plain gymnasium env: observation = the proprio vector, action = the
    sim's action box. Rewards, termination, truncation (the sim's own ``max_episode_steps``)
    and info pass through untouched; ``engine_steps`` counts every ``step`` call."""

    metadata = {"render_modes": []}

    def __init__(self, sim: str, **make_kwargs: Any) -> None:
        self.sim = sims.make(sim, **make_kwargs)
        self.observation_space = self.sim.observation_space["proprio"]
        self.action_space = self.sim.action_space
        self.engine_steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.sim.reset(seed=seed, options=options)
        return obs["proprio"], info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.sim.step(action)
        self.engine_steps += 1
        return obs["proprio"], reward, terminated, truncated, info

    def close(self) -> None:
        self.sim.close()


def eval_reset_seeds(seed: int, episodes: int) -> list[int]:
    """The reset seed of each evaluation episode, in start order, as the flywheel draws them."""
    return [reset_seed(seed, i) for i in range(episodes)]


def evaluate_policy_fixed(predict: Predict, sim: str, make_kwargs: dict[str, Any], episodes: int,
                          seed: int) -> dict[str, Any]:
    """Run ``predict(proprio) -> action`` on the flywheel's fixed evaluation episodes.

    Same seeds and the same rule as ``flywheel.cycle.evaluate``; returns the keys of
    ``flywheel.rollout.episode_stats`` (plus ``capability``, as ``evaluate`` adds it) and the
    per-episode ``successes`` and ``returns`` in start order.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = ProprioEnv(sim, **make_kwargs)
    successes, returns = [], []
    try:
        for episode_seed in eval_reset_seeds(seed, episodes):
            proprio, info = env.reset(seed=episode_seed)
            # As in ``collect``: success at reset counts too.
            success, total, done = bool(info.get("success", False)), 0.0, False
            while not done:
                proprio, reward, terminated, truncated, info = env.step(predict(proprio))
                total += reward
                success |= bool(info.get("success", False))
                done = terminated or truncated
            successes.append(success)
            returns.append(total)
        defines_success = env.sim.defines_success
    finally:
        env.close()
    result = {"success_rate": float(np.mean(successes)), "mean_return": float(np.mean(returns)),
              "return_std": float(np.std(returns)),  # ddof=0, as episode_stats
              "episodes": episodes, "successes": successes, "returns": returns}
    result["capability"] = result["success_rate"] if defines_success else result["mean_return"]
    return result


def train_sac(sim: str, make_kwargs: dict[str, Any], total_steps: int, eval_every: int, eval_episodes: int,
              eval_seed: int, seed: int, threads: int = 1, device: str = "cpu") -> dict[str, Any]:
    """Train SB3 SAC (default hyperparameters) for ``total_steps`` env steps, evaluating on the
    fixed episodes at step 0, every ``eval_every`` steps and at the end.

    ``device`` defaults to the CPU: SAC's networks are small MLPs, and the flywheel's
    benchmarks run there too, so wall times compare like with like.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 1 <= eval_every <= total_steps:
        raise ValueError(f"eval_every must be in [1, total_steps={total_steps}], got {eval_every}")
    if eval_episodes < 1:
        raise ValueError(f"eval_episodes must be >= 1, got {eval_episodes}")
    try:
        import stable_baselines3
        from stable_baselines3 import SAC
        from stable_baselines3.common.callbacks import BaseCallback
    except ImportError as exc:
        raise ImportError(f"train_sac needs stable-baselines3, a benchmark-only dependency: {INSTALL_HINT}") from exc
    import torch

    torch.set_num_threads(threads)
    env = ProprioEnv(sim, **make_kwargs)  # an unknown sim fails here, before any training
    checkpoints: list[dict[str, Any]] = []

    class FixedEval(BaseCallback):
        """Evaluates on the fixed episodes every ``eval_every`` env steps; the evaluation's
        own time is kept out of the training wall clock."""

        def _on_training_start(self) -> None:
            self.started, self.eval_s = time.perf_counter(), 0.0
            self.evaluate()

        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0 or self.num_timesteps == total_steps:
                self.evaluate()
            return True

        def evaluate(self) -> None:
            wall = time.perf_counter() - self.started - self.eval_s
            began = time.perf_counter()
            stats = evaluate_policy_fixed(lambda p: self.model.predict(p, deterministic=True)[0],
                                          sim, make_kwargs, eval_episodes, eval_seed)
            eval_s = time.perf_counter() - began
            self.eval_s += eval_s
            checkpoints.append({"env_steps": int(self.num_timesteps), "sim_steps": env.engine_steps,
                                "wall_s": round(wall, 3), "eval_s": round(eval_s, 3), **stats})

    model = SAC("MlpPolicy", env, seed=seed, verbose=0, device=device)
    model.learn(total_timesteps=total_steps, callback=FixedEval())
    env.close()
    return {"sim": sim, "make_kwargs": make_kwargs, "seed": seed, "total_steps": total_steps,
            "eval_every": eval_every, "eval_episodes": eval_episodes, "eval_seed": eval_seed,
            "learner": "stable-baselines3 SAC, MlpPolicy, default hyperparameters",
            "sb3_version": stable_baselines3.__version__, "device": device, "threads": threads,
            "checkpoints": checkpoints}


# ---------------------------------------------------------------------- the CLI


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error over seeds, std(ddof=1)/sqrt(n); NaN s.e. for one seed."""
    arr = np.asarray(values, dtype=np.float64)
    se = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return float(arr.mean()), se


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per checkpoint, the mean and standard error over seeds (every run has the same schedule)."""
    rows = []
    for points in zip(*(run["checkpoints"] for run in runs)):
        row: dict[str, Any] = {"env_steps": points[0]["env_steps"], "seeds": len(points)}
        for key in ("sim_steps", "wall_s", "success_rate", "mean_return"):
            mean, se = mean_se([p[key] for p in points])
            row[key], row[f"{key}_se"] = mean, (None if np.isnan(se) else se)  # JSON has no NaN
        rows.append(row)
    return rows


def format_table(summary: Sequence[dict[str, Any]], sim: str, episodes: int) -> str:
    def pm(mean: float, se: float | None, digits: int) -> str:
        return f"{mean:.{digits}f} ± {'n/a' if se is None else f'{se:.{digits}f}'}"

    lines = [f"SB3 SAC on {sim}: {episodes} fixed eval episodes, mean ± s.e. over {summary[0]['seeds']} seed(s)",
             f"{'env steps':>9} {'sim steps':>9} {'success':>15} {'return':>19} {'wall s':>15}"]
    for r in summary:
        lines.append(f"{r['env_steps']:>9} {r['sim_steps']:>9.0f} {pm(r['success_rate'], r['success_rate_se'], 3):>15} "
                     f"{pm(r['mean_return'], r['mean_return_se'], 2):>19} {pm(r['wall_s'], r['wall_s_se'], 1):>15}")
    return "\n".join(lines)


def plot(curves: Mapping[str, Sequence[dict[str, Any]]], title: str, path: Path) -> None:
    """Success and return (mean, s.e. band over seeds) against env steps, sim steps and wall
    time, one line per learner: ``curves`` maps a label to rows in ``summarize``'s schema, so
    a comparison can draw the flywheel's curve beside SAC's on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = (("env_steps", "env steps"), ("sim_steps", "sim steps (engine steps, look-ahead included)"),
          ("wall_s", "training wall time (s)"))
    ys = (("success_rate", "success rate"), ("mean_return", "mean eval return"))
    fig, axes = plt.subplots(len(ys), len(xs), figsize=(14, 6.4), sharey="row")
    for label, summary in curves.items():
        for col, (xkey, xlabel) in enumerate(xs):
            x = [r[xkey] for r in summary]
            for row, (ykey, ylabel) in enumerate(ys):
                ax = axes[row, col]
                mean = np.array([r[ykey] for r in summary])
                se = np.array([np.nan if r.get(f"{ykey}_se") is None else r[f"{ykey}_se"] for r in summary])
                line, = ax.plot(x, mean, marker="o", label=label)
                ax.fill_between(x, mean - se, mean + se, color=line.get_color(), alpha=0.2)
                ax.set_xlabel(xlabel)
                ax.grid(alpha=0.3)
                if col == 0:
                    ax.set_ylabel(ylabel)
    axes[0, 0].set_ylim(-0.05, 1.05)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=110)


def main(argv: Sequence[str] | None = None) -> None:
    # Defaults from the flywheel's own run config, so the two sides cannot drift apart.
    from configs.run_schema import EvalConfig, RunConfig
    from configs.schema import SimConfig

    reference = RunConfig().reference
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", default=reference.name, help="registered sim (default: the flywheel's reference)")
    ap.add_argument("--max-episode-steps", type=int, default=None, help="episode length (default: the sim's)")
    ap.add_argument("--steps", type=int, default=60_000, help="env steps of training per seed")
    ap.add_argument("--eval-every", type=int, default=10_000, help="env steps between evaluations")
    # More than the flywheel's default eval.episodes: the first episodes are the same ones
    # (same seeds), and more of them shrink the binomial noise of one evaluation.
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--eval-seed", type=int, default=EvalConfig().seed, help="as the flywheel's eval.seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (>= 2 for an s.e.)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(RESULTS), help="directory for the JSON and PNG")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    if not 1 <= args.eval_every <= args.steps:
        ap.error(f"--eval-every must be in [1, --steps={args.steps}], got {args.eval_every}")
    if args.eval_episodes < 1:
        ap.error(f"--eval-episodes must be >= 1, got {args.eval_episodes}")
    if len(set(args.seeds)) != len(args.seeds):
        ap.error(f"--seeds must be distinct, got {args.seeds}")
    make_kwargs = SimConfig(name=args.sim, max_episode_steps=args.max_episode_steps).make_kwargs()

    runs = []
    for seed in args.seeds:
        started = time.perf_counter()
        runs.append(train_sac(args.sim, make_kwargs, args.steps, args.eval_every, args.eval_episodes,
                              args.eval_seed, seed, threads=args.threads, device=args.device))
        last = runs[-1]["checkpoints"][-1]
        print(f"seed {seed}: success {last['success_rate']:.3f}, return {last['mean_return']:.2f} "
              f"after {last['env_steps']} env steps ({time.perf_counter() - started:.0f} s with evaluations)")
    summary = summarize(runs)
    print()
    print(format_table(summary, args.sim, args.eval_episodes))

    out = Path(args.out)
    stem = "sac_" + args.sim.replace("/", "_")
    write_json_atomic(out / f"{stem}.json", {
        "sim": args.sim, "make_kwargs": make_kwargs, "steps": args.steps, "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes, "eval_seed": args.eval_seed, "seeds": args.seeds,
        "summary": summary, "runs": runs,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "threads": args.threads, "device": args.device}})
    plot({"SAC (SB3 defaults)": summary}, f"SB3 SAC on {args.sim}: {args.eval_episodes} fixed eval episodes, "
         f"mean ± s.e. over {len(args.seeds)} seed(s)", out / f"{stem}.png")
    print(f"wrote {out / stem}.json and .png")


if __name__ == "__main__":
    main()
