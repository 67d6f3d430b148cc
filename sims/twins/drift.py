"""How far twin engines drift apart: same start state, same actions, error against horizon.

For each twin pair, both engines start every probe from the same state (reset with the
same seed, then the reference's joint state copied into the other engine) and execute the
same random action sequence open-loop. The error at step t is ``|other - reference|`` per
proprio dimension divided by that dimension's standard deviation over the reference
trajectories (so "1.0" means as far apart as the motion itself spans), averaged over probes.

What to expect (measured, see ``python -m sims.twins``): away from joint limits both
engines integrate the same articulated-body dynamics with semi-implicit Euler and agree to
rounding (normalized errors around 1e-15, on noise-free float64 proprio). They part where
they really differ: MuJoCo's joint limits are soft constraints, PyBullet's are solved as
hard ones, so once the actions drive a joint into its limit the trajectories diverge
(normalized errors of 1e-3 to 1e-2 within a few seconds).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from sims.files import write_figure_atomic
from sims.registry import make
from sims.timing import steps_per_second

# name -> (reference sim, its twin). MuJoCo is the reference of every pair.
TWIN_PAIRS: dict[str, tuple[str, str]] = {
    "cartpole-swingup": ("mujoco/cartpole-swingup-twin", "pybullet/cartpole-swingup"),
    "cartpole-balance": ("mujoco/cartpole-balance-twin", "pybullet/cartpole-balance"),
    "reacher": ("mujoco/reacher-twin", "pybullet/reacher"),
}
REPORT_STEPS = (1, 10, 25, 50, 100, 200)
# Random actions are held for this many control steps (an open-loop chunk), which moves the
# robots further than independent per-step noise that averages out.
ACTION_HOLD = 8
# Normalized error below which the engines count as agreeing (rounding level is ~1e-15).
AGREEMENT = 1e-6


@dataclass
class TwinDrift:
    pair: str
    reference: str
    twin: str
    error: np.ndarray  # (horizon + 1, proprio_dim): mean normalized error, row 0 = start state
    scale: np.ndarray  # (proprio_dim,): the per-dimension normalizer
    steps_per_second: dict[str, float] = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return self.error.shape[0] - 1

    def mean_error(self) -> np.ndarray:
        """Normalized error averaged over dimensions, per step."""
        return self.error.mean(axis=1)

    def first_step_beyond(self, tolerance: float) -> int | None:
        """The first step at which some dimension's normalized error exceeds ``tolerance``."""
        above = np.flatnonzero(self.error.max(axis=1) > tolerance)
        return int(above[0]) if above.size else None

    def as_dict(self) -> dict:
        return {
            "pair": self.pair,
            "reference": self.reference,
            "twin": self.twin,
            "horizon": self.horizon,
            "mean_error": self.mean_error().tolist(),
            "error_per_dim": self.error.tolist(),
            "scale": self.scale.tolist(),
            "steps_per_second": self.steps_per_second,
        }


def twin_drift(pair: str, *, probes: int = 8, horizon: int = 100, seed: int = 0,
               measure_speed: bool = True, speed_steps: int = 1000) -> TwinDrift:
    """Run ``probes`` same-state, same-action rollouts of ``horizon`` steps in both engines."""
    if pair not in TWIN_PAIRS:
        raise ValueError(f"unknown twin pair {pair!r}; known: {sorted(TWIN_PAIRS)}")
    if probes < 1 or horizon < 1:
        raise ValueError(f"probes and horizon must be >= 1, got {probes} and {horizon}")
    ref_name, twin_name = TWIN_PAIRS[pair]
    ref, twin = (make(n, max_episode_steps=horizon + 1) for n in (ref_name, twin_name))
    try:
        rng = np.random.default_rng(seed)
        trajectories = []
        for probe in range(probes):
            ref.reset(seed=seed + probe)
            twin.reset(seed=seed + probe)  # draws the same task (target...) from the same seed
            twin.set_joint_state(*ref.joint_state())
            chunks = rng.uniform(-1.0, 1.0, (-(-horizon // ACTION_HOLD), ref.embodiment.action_dim))
            actions = np.repeat(chunks, ACTION_HOLD, axis=0)[:horizon]
            pair_traj = []
            for env in (ref, twin):
                rows = [env._proprio()]
                for action in actions:
                    env.step(action)
                    rows.append(env._proprio())  # noise-free, float64
                pair_traj.append(np.array(rows))
            trajectories.append(pair_traj)
        refs = np.array([t[0] for t in trajectories])
        twins = np.array([t[1] for t in trajectories])
        scale = np.maximum(refs.reshape(-1, refs.shape[-1]).std(axis=0), 1e-6)
        error = (np.abs(twins - refs) / scale).mean(axis=0)
        speeds = {}
        if measure_speed:
            for env in (ref, twin):
                speeds[env.name] = steps_per_second(env, steps=speed_steps)
        return TwinDrift(pair, ref_name, twin_name, error, scale, speeds)
    finally:
        ref.close()
        twin.close()


def format_drift(results: list[TwinDrift], steps: tuple[int, ...] = REPORT_STEPS) -> str:
    """A plain-text table: mean normalized error at chosen horizons, worst dimension, speed."""
    shown = [s for s in steps if s <= max(r.horizon for r in results)]
    head = (f"{'twin pair':18} " + " ".join(f"{'t=' + str(s):>9}" for s in shown)
            + f"   {'apart at':>8}   steps/s (reference | twin)")
    lines = [head, "-" * len(head)]
    for r in results:
        cells = " ".join(f"{r.mean_error()[s]:9.1e}" if s <= r.horizon else f"{'':9}" for s in shown)
        apart = r.first_step_beyond(AGREEMENT)
        speed = " | ".join(f"{r.steps_per_second.get(n, float('nan')):,.0f}" for n in (r.reference, r.twin))
        lines.append(f"{r.pair:18} {cells}   {'never' if apart is None else apart:>8}   {speed}")
        worst = r.error.max(axis=1)
        lines.append(f"{'  worst dimension':18} " + " ".join(
            f"{worst[s]:9.1e}" if s <= r.horizon else f"{'':9}" for s in shown))
    lines.append("error: |twin - reference| per proprio dimension / that dimension's std, mean over probes;")
    lines.append(f"apart at: first step where some dimension's error exceeds {AGREEMENT:g}")
    return "\n".join(lines)


def plot_drift(results: list[TwinDrift], path: str) -> None:
    """PNG of mean and worst-dimension normalized error against horizon, one line per pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        steps = np.arange(1, r.horizon + 1)
        (line,) = ax.plot(steps, r.mean_error()[1:], label=f"{r.pair} (mean)")
        ax.plot(steps, r.error.max(axis=1)[1:], color=line.get_color(), linestyle=":", label=f"{r.pair} (worst dim)")
    ax.axhline(AGREEMENT, color="grey", linewidth=0.8, linestyle="--", label=f"agreement {AGREEMENT:g}")
    ax.set(yscale="log", xlabel="control steps from the same state", ylabel="normalized |twin - reference|",
           title="Twin drift: PyBullet against MuJoCo, same state, same actions")
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=120)


def main(argv: list[str] | None = None, prog: str = "python -m sims.twins") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="*", default=list(TWIN_PAIRS), choices=list(TWIN_PAIRS))
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PNG", help="also draw error against horizon into this PNG")
    args = parser.parse_args(argv)
    results = [twin_drift(p, probes=args.probes, horizon=args.horizon, seed=args.seed) for p in args.pairs]
    print(format_drift(results))
    if args.plot:
        plot_drift(results, args.plot)
        print(f"wrote {args.plot}")
    return 0
