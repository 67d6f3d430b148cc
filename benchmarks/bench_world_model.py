"""The learned world simulator against physics: speed, fidelity, error against horizon, calibration.

    python benchmarks/bench_world_model.py [--sim dmc/cartpole-swingup] [--transitions 20000]
        [--fit-steps 2000] [--probes 8] [--horizon 100] [--out FILE]

Fits a learned simulator of ``--sim`` on collected transitions, then prints tables and writes
JSON (default ``benchmarks/results/bench_world_model.json``) plus two PNGs beside it:

- speed: env-steps/s of the physics engine (one env, stepped in a loop) and of the learned
  simulator batched over N envs (one forward pass per step for all N), on the same cores
  (torch limited to one thread, as the engine uses one); the machine is shared and noisy,
  so the number to quote is the learned / engine ratio measured in one run;
- held-out one- and ten-step error of the learned simulator and of constant velocity;
- fidelity and error against horizon on the probe set: the learned simulator at
  ``correct_every`` in {1, 4, 16, never}, the perturbed engine at fidelity {1.0, 0.8, 0.5,
  0.2}, and each PyBullet twin against its MuJoCo original (on that original's probe set);
- calibration of the error estimate: along the purely learned probe rollouts, the ensemble
  spread against the true error, binned by spread (rank correlation, and true / estimated).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sims  # noqa: E402
import world_model as wm  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402
from sims.timing import steps_per_second  # noqa: E402
from sims.twins import TWIN_PAIRS  # noqa: E402
from world_model.fidelity import plot_curves  # noqa: E402

CORRECT_EVERY = (1, 4, 16, None)
KNOB = (1.0, 0.8, 0.5, 0.2)
BATCH_SIZES = (1, 16, 256, 4096)
REPORT_HORIZONS = (1, 10, 25, 50, 100)


def learned_steps_per_second(simulator: wm.LearnedSimulator, n: int, probes: wm.ProbeSet, steps: int) -> float:
    rng = np.random.default_rng(0)
    starts = probes.reference.reshape(-1, simulator.proprio_dim)
    batch = wm.LearnedBatch(simulator, starts[rng.integers(len(starts), size=n)])
    actions = rng.uniform(simulator.action_low, simulator.action_high, (steps, n, simulator.action_dim))
    batch.step(actions[0])  # warm-up
    began = time.perf_counter()
    for a in actions:
        batch.step(a)
    return n * steps / (time.perf_counter() - began)


def calibration(result: wm.FidelityResult, reference: np.ndarray, bins: int = 10) -> dict:
    """Binned true error against the ensemble's estimate, per step and dimension (nonzero estimates)."""
    estimate = result.error_estimate.ravel()
    error = np.abs(result.trajectories - reference).ravel()
    keep = estimate > 0
    estimate, error = estimate[keep], error[keep]
    edges = np.quantile(estimate, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, estimate, side="right") - 1, 0, bins - 1)
    rows = [{"estimate": float(estimate[which == b].mean()), "error": float(error[which == b].mean()),
             "count": int((which == b).sum())} for b in range(bins) if np.any(which == b)]
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    return {
        "spearman": float(np.corrcoef(ranks(estimate), ranks(error))[0, 1]),
        "error_over_estimate": float(error.mean() / estimate.mean()),
        "bins": rows,
    }


def plot_calibration(cal: dict, path: Path, sim: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    est = [r["estimate"] for r in cal["bins"]]
    err = [r["error"] for r in cal["bins"]]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(est, err, "o-", label=f"binned (Spearman {cal['spearman']:.2f})")
    lo, hi = min(est + err), max(est + err)
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="calibrated (error = estimate)")
    ax.set(xscale="log", yscale="log", xlabel="ensemble spread (estimated error)",
           ylabel="|learned - engine| (true error)",
           title=f"Error estimate vs true error: learned {sim}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", default="dmc/cartpole-swingup")
    ap.add_argument("--transitions", type=int, default=20000)
    ap.add_argument("--fit-steps", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--ensemble", type=int, default=5)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=100)
    ap.add_argument("--speed-steps", type=int, default=200, help="batched learned steps timed per batch size")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_world_model.json"))
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # logs: do not squeeze tables into 80 columns
        console.width = 160
    began = time.perf_counter()
    out = Path(args.out)
    torch.set_num_threads(1)

    # ------------------------------------------------------------------ fit
    t = time.perf_counter()
    data = wm.collect(args.sim, args.transitions, seed=0)
    held_out = wm.collect(args.sim, max(args.transitions // 5, 1000), seed=1)
    collect_s = time.perf_counter() - t
    simulator = wm.fit(data, wm.WorldModelNetConfig(ensemble=args.ensemble, hidden=args.hidden),
                       wm.WorldModelTrainConfig(steps=args.fit_steps, horizon=2))
    scratch = tempfile.TemporaryDirectory(prefix="bench-world-model-")
    checkpoint = Path(scratch.name)  # learned/<sim> loads its model from a checkpoint directory
    wm.save_checkpoint(simulator, checkpoint)
    scale = wm.spread(held_out.proprio)
    prediction = {k: wm.k_step_errors(simulator, held_out, k, scale) for k in (1, 10)}

    # ------------------------------------------------------------------ speed
    probes = wm.probe_set(args.sim, probes=args.probes, horizon=args.horizon)
    engine_sps = max(steps_per_second(sims.make(args.sim), 1000, seed=r) for r in range(3))
    learned_sps = {n: learned_steps_per_second(simulator, n, probes, args.speed_steps if n < 4096 else 50)
                   for n in BATCH_SIZES}
    env_sps = steps_per_second(sims.make(f"learned/{args.sim}", checkpoint=str(checkpoint)), 300)

    # ------------------------------------------------------------------ fidelity
    learned = {k: wm.fidelity(f"learned/{args.sim}", probes, checkpoint=str(checkpoint), correct_every=k)
               for k in CORRECT_EVERY}
    perturbed = {f: wm.fidelity(args.sim, probes, fidelity=f) for f in KNOB}
    twins = {}
    for pair, (reference, twin) in TWIN_PAIRS.items():
        twin_probes = wm.probe_set(reference, probes=args.probes, horizon=args.horizon)
        twins[pair] = wm.fidelity(twin, twin_probes)
    cal = calibration(learned[None], probes.reference)

    rows = ([(f"learned correct_every={'never' if k is None else k}", r) for k, r in learned.items()]
            + [(f"engine fidelity={f}", r) for f, r in perturbed.items()]
            + [(f"twin {r.candidate} (vs {r.reference})", r) for r in twins.values()])
    horizons = [h for h in REPORT_HORIZONS if h <= args.horizon]

    # ------------------------------------------------------------------ print
    cpu = platform.processor() or platform.machine()
    table = Table(title=f"Speed on the same cores (torch 1 thread): env-steps/s, {cpu}")
    for column in ("simulator", "envs", "env-steps/s", "/ engine"):
        table.add_column(column, justify="left" if column == "simulator" else "right")
    table.add_row(f"engine {args.sim}", "1", f"{engine_sps:,.0f}", "1.00")
    for n, sps in learned_sps.items():
        table.add_row("learned, batched (LearnedBatch)", str(n), f"{sps:,.0f}", f"{sps / engine_sps:.2f}")
    table.add_row("learned/… SimEnv (learned + shadow engine)", "1", f"{env_sps:,.0f}", f"{env_sps / engine_sps:.2f}")
    console.print(table)

    table = Table(title=f"Held-out prediction error ({len(data)} training transitions), normalized per dimension")
    for column in ("horizon", "learned", "constant velocity"):
        table.add_column(column, justify="right")
    for k, e in prediction.items():
        table.add_row(f"{k} step", f"{e['learned']:.2e}", f"{e['constant_velocity']:.2e}")
    console.print(table)

    table = Table(title=f"Fidelity on probe sets ({args.probes} probes x {args.horizon} steps); "
                        "error = mean normalized |candidate - reference|")
    table.add_column("candidate")
    for column in ["fidelity"] + [f"h={h}" for h in horizons] + ["diverges at"]:
        table.add_column(column, justify="right")
    for label, r in rows:
        table.add_row(label, f"{r.fidelity:.4f}", *(f"{r.curve[h - 1]:.1e}" for h in horizons),
                      "never" if r.score.diverges_at is None else str(r.score.diverges_at))
    console.print(table)

    table = Table(title=f"Error-estimate calibration (purely learned probe rollouts): Spearman {cal['spearman']:.2f}, "
                        f"mean true error / mean estimate {cal['error_over_estimate']:.2f}")
    for column in ("estimate (spread)", "true error", "count"):
        table.add_column(column, justify="right")
    for b in cal["bins"]:
        table.add_row(f"{b['estimate']:.2e}", f"{b['error']:.2e}", str(b["count"]))
    console.print(table)

    # ------------------------------------------------------------------ write
    horizon_png = out.with_name(out.stem + "_error_vs_horizon.png")
    calibration_png = out.with_name(out.stem + "_calibration.png")
    same_sim = [(label, r) for label, r in rows if not label.startswith("twin")]
    plot_curves([r for _, r in same_sim], str(horizon_png), labels=[label for label, _ in same_sim],
                title=f"Error against horizon on the probe set of {args.sim}")
    plot_calibration(cal, calibration_png, args.sim)
    write_json_atomic(out, {
        "sim": args.sim,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__},
        "transitions": len(data), "fit": simulator.metadata, "collect_seconds": round(collect_s, 2),
        "speed": {"engine_steps_per_s": round(engine_sps, 1),
                  "learned_batched_steps_per_s": {str(n): round(s, 1) for n, s in learned_sps.items()},
                  "learned_over_engine": {str(n): round(s / engine_sps, 3) for n, s in learned_sps.items()},
                  "learned_env_steps_per_s": round(env_sps, 1)},
        "prediction_error": {f"{k}_step": e for k, e in prediction.items()},
        "fidelity": [{"label": label, **r.as_dict()} for label, r in rows],
        "calibration": cal,
        "figures": [horizon_png.name, calibration_png.name],
        "seconds": round(time.perf_counter() - began, 1),
    })
    scratch.cleanup()
    console.print(f"wrote {out}, {horizon_png.name}, {calibration_png.name} ({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
