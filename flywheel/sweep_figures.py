"""The fidelity report's figures over training sims and seeds (numbers: ``flywheel.sweep_stats``).

    capability_bands(sims)    capability_vs_cycle.png: mean over seeds with the seeds' range,
                              against cycle, total env steps and total sim steps
    trend(runs)               compounding_vs_fidelity.png: every run's rate against its measured
                              fidelity, the fitted line and its confidence band
    relative(sims)            relative_capability.png: the essay's fidelity slider, measured
"""

from __future__ import annotations

import numpy as np

from flywheel import sweep_stats
from flywheel.report import Run, _png, _pyplot

STEP_AXES = (("cycle", "cycle"), ("env_steps_total", "total env steps"), ("sim_steps_total", "total sim steps"))


def _colours(sims: list[sweep_stats.TrainingSim]):
    """One colour per training sim, ordered by measured fidelity (viridis: dark = low)."""
    from matplotlib import colormaps

    order = np.argsort(np.argsort([s.fidelity if np.isfinite(s.fidelity) else -1.0 for s in sims]))
    return [colormaps["viridis"](0.9 * rank / max(1, len(sims) - 1)) for rank in order]


def _label(sim: sweep_stats.TrainingSim) -> str:
    return f"{sim.name} (fidelity {sim.fidelity:.2f}, {len(sim.runs)} seed{'s' * (len(sim.runs) != 1)})"


def capability_bands(sims: list[sweep_stats.TrainingSim], reference: str) -> bytes:
    plt = _pyplot()
    from matplotlib.ticker import EngFormatter, MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5), sharey=True)
    for sim, colour in zip(sims, _colours(sims)):
        for ax, (field, _) in zip(axes, STEP_AXES):
            x, mean, low, high = sim.curve(field)
            if not np.all(np.isfinite(x)):  # runs logged before sim steps were counted
                continue
            ax.plot(x, mean, "o-", color=colour, ms=3, label=_label(sim))
            ax.fill_between(x, low, high, color=colour, alpha=0.2, lw=0)
    for ax, (_, xlabel) in zip(axes, STEP_AXES):
        ax.set(xlabel=xlabel)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set(ylabel=f"capability in {reference}")
    axes[0].legend(fontsize=6)
    fig.suptitle("Capability after each cycle: mean over seeds (line) and the seeds' range (band)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def trend(runs: list[Run]) -> bytes:
    plt = _pyplot()
    sims = sweep_stats.by_training_sim(runs)
    test = sweep_stats.thesis_test(runs)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for sim, colour in zip(sims, _colours(sims)):
        points = [(r.measured_fidelity, r.rate) for r in sim.runs if np.isfinite(r.rate)]
        if points:
            ax.plot(*zip(*points), "o", color=colour, alpha=0.6, label=_label(sim))
        mean, low, high = sim.rate
        if np.isfinite(low):
            ax.errorbar(sim.fidelity, mean, yerr=[[mean - low], [high - mean]], fmt="_", ms=14, color=colour, capsize=4)
    if test.fit is not None:
        xs = np.linspace(min(r.measured_fidelity for r in runs if np.isfinite(r.measured_fidelity)),
                         max(r.measured_fidelity for r in runs if np.isfinite(r.measured_fidelity)), 50)
        fit, low, high = test.fit.band(xs)
        ax.plot(xs, fit, color="grey", ls="--",
                label=f"least-squares fit, slope {test.fit.slope:+.4f} (p = {test.p:.2g})")
        ax.fill_between(xs, low, high, color="grey", alpha=0.15, lw=0, label=f"{sweep_stats.LEVEL:.0%} band of the fit")
    ax.axhline(0, color="black", lw=0.6)
    ax.set(xlabel="measured fidelity against the reference", ylabel="compounding rate (capability per cycle)",
           title="Compounding rate against measured fidelity: runs (dots), seed mean and interval (bars)")
    ax.title.set_fontsize(9)
    if ax.get_legend_handles_labels()[0]:  # no run has a rate below two cycles
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def relative(sims: list[sweep_stats.TrainingSim]) -> tuple[bytes, str]:
    """The figure and what its denominator is (``sweep_stats.relative_curves``)."""
    plt = _pyplot()
    basis, curves = sweep_stats.relative_curves(sims)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for sim, colour in zip(sims, _colours(sims)):
        x, y = curves[sim.name]
        ax.plot(x, y, "o-", color=colour, ms=3, label=f"measured fidelity {sim.fidelity:.2f} ({sim.name})")
    ax.axhline(1.0, color="black", lw=0.6)
    ax.set(xlabel="self-play cycles completed", ylabel="relative capability (x)",
           title="Simulation fidelity against compounding, measured")
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2f}x"))
    ax.legend(fontsize=6)
    fig.tight_layout()
    return _png(fig), basis
