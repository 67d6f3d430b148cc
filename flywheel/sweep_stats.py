"""The fidelity sweep's statistics over seeds: does the compounding rate rise with fidelity?

    sims = by_training_sim(runs)      # one TrainingSim per training sim: its seeds' runs
    test = thesis_test(runs)          # the slope of rate on measured fidelity, its band, its p-value
    sentences(runs)                   # what report.md's paragraph says about them

**The thesis test, stated before the run.** Hypothesis: the compounding rate (``report.
compounding_rate``) rises with the training sim's measured fidelity. Statistic: the
least-squares slope of the runs' rates on their measured fidelities, every run of one
reference a point (each seed its own). Test: one-sided permutation test, the share of
``PERMUTATIONS`` random reassignments of the rates to the fidelities (and the observed one)
whose slope is at least the observed slope; the thesis has evidence at p < ``ALPHA``. The
permutations make no assumption about how the rates scatter, which a handful of seeds cannot
check; the slope's confidence interval and the trend's band are the usual least-squares ones.

A training sim's rate is the mean over its seeds with a Student-t 95% interval (none from one
seed). Its **practice gap** is what the rollouts achieved in the training sim (their success
rate, or return where capability is a return; ``cycles.jsonl`` ``rollout``) minus the
capability in the reference, averaged over the complete cycles: how much better the agent
looks to itself in the sim it practises in. With ``choose=sim`` (the run default) a rollout
runs the candidate the training sim found best, so the gap also holds that look-ahead's help.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flywheel.report import Run

ALPHA = 0.05
LEVEL = 0.95  # of every interval and band
PERMUTATIONS = 9_999


def t_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and its Student-t interval over the finite values; the bounds are NaN below two."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Fit:
    """A least-squares line y = slope * x + intercept and what its scatter says about it."""

    slope: float
    intercept: float
    n: int
    x_mean: float
    sxx: float           # sum of (x - mean x)^2
    residual_sd: float   # the scatter about the line, n - 2 degrees of freedom

    def _t(self, level: float) -> float:
        from scipy.stats import t

        return float(t.ppf((1 + level) / 2, self.n - 2))

    def slope_interval(self, level: float = LEVEL) -> tuple[float, float]:
        half = self._t(level) * self.residual_sd / math.sqrt(self.sxx)
        return self.slope - half, self.slope + half

    def band(self, xs, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fitted line at ``xs`` and its confidence band (of the line, not of single runs)."""
        xs = np.asarray(xs, dtype=float)
        fit = self.slope * xs + self.intercept
        half = self._t(level) * self.residual_sd * np.sqrt(1 / self.n + (xs - self.x_mean) ** 2 / self.sxx)
        return fit, fit - half, fit + half


def fit_line(x, y) -> Fit | None:
    """The least-squares line through the points; None below three points or two distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or len(np.unique(x)) < 2:
        return None
    slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
    residuals = y - (slope * x + intercept)
    return Fit(slope, intercept, len(x), float(x.mean()), float(np.sum((x - x.mean()) ** 2)),
               float(np.sqrt(np.sum(residuals**2) / (len(x) - 2))))


def slope_permutation_p(x, y, permutations: int = PERMUTATIONS, seed: int = 0) -> float:
    """One-sided p-value that y rises with x: the share of the permutations of y (the observed
    order counted once) whose least-squares slope on x is at least the observed one. Seeded, so
    a report is reproducible."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    centred = x - x.mean()  # the slope is proportional to sum(centred * y) for every order of y
    observed = centred @ y
    shuffled = np.random.default_rng(seed).permuted(np.broadcast_to(y, (permutations, len(y))), axis=1)
    # The tolerance keeps orders that tie the observed slope but differ in rounding counted as ties.
    at_least = int(np.sum(shuffled @ centred >= observed - 1e-12 * max(1.0, abs(observed))))
    return (1 + at_least) / (1 + permutations)


@dataclass(frozen=True)
class ThesisTest:
    points: int
    distinct_fidelities: int
    fit: Fit | None
    p: float  # NaN without a fit

    @property
    def evidence(self) -> bool:
        return bool(self.p < ALPHA)


def thesis_test(runs: list[Run]) -> ThesisTest:
    points = [(r.measured_fidelity, r.rate) for r in runs if np.isfinite(r.measured_fidelity) and np.isfinite(r.rate)]
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    fit = fit_line(x, y)
    p = slope_permutation_p(x, y) if fit is not None else math.nan
    return ThesisTest(len(points), len(np.unique(x)), fit, p)


# ---------------------------------------------------------------------- per training sim


def practice_gap(run: Run) -> float:
    """Mean over complete cycles of the rollouts' own measure in the training sim minus the
    capability in the reference (module docstring); NaN where the records lack it."""
    gaps = []
    for record in run.cycles:
        evaluation, rollout = record.get("eval") or {}, record.get("rollout") or {}
        success = "success_rate" in evaluation and evaluation.get("capability") == evaluation["success_rate"]
        practised = rollout.get("success_rate" if success else "episode_return")
        if practised is not None:
            gaps.append(float(practised) - float(record["capability"]))
    return float(np.mean(gaps)) if gaps else math.nan


@dataclass
class TrainingSim:
    """One training sim's runs, one per seed."""

    name: str
    runs: list[Run]

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    @property
    def fidelity(self) -> float:
        values = [r.measured_fidelity for r in self.runs if np.isfinite(r.measured_fidelity)]
        return float(np.mean(values)) if values else math.nan

    @property
    def rate(self) -> tuple[float, float, float]:
        return t_interval([r.rate for r in self.runs])

    @property
    def gap(self) -> tuple[float, float, float]:
        return t_interval([practice_gap(r) for r in self.runs])

    def curve(self, x: str = "cycle") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per cycle any seed completed: the mean over seeds of ``x`` (a cycle record's field:
        ``cycle``, ``env_steps_total``, ``sim_steps_total``), and capability's mean, min and max
        over the seeds that have that cycle."""
        cycles = sorted({int(c["cycle"]) for r in self.runs for c in r.cycles})
        xs, mean, low, high = [], [], [], []
        for cycle in cycles:
            records = [c for r in self.runs for c in r.cycles if int(c["cycle"]) == cycle]
            caps = np.array([c["capability"] for c in records], dtype=float)
            values = [c.get(x) for c in records]
            xs.append(np.mean(values) if all(v is not None for v in values) else math.nan)
            mean.append(caps.mean())
            low.append(caps.min())
            high.append(caps.max())
        return np.array(xs, dtype=float), np.array(mean), np.array(low), np.array(high)


def by_training_sim(runs: list[Run]) -> list[TrainingSim]:
    """The runs grouped by training sim (its physics as configured: ``Run.setting`` and knob,
    named by the runs' config ``name`` where they share one), in order of first appearance."""
    groups: dict[tuple[str, float], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.setting, run.knob), []).append(run)
    out = []
    for (setting, knob), members in groups.items():
        names = {r.config.get("name") for r in members}
        out.append(TrainingSim(names.pop() if len(names) == 1 else f"{setting} (knob {knob:g})", members))
    return out


def uneven_seeds(sims: list[TrainingSim]) -> str | None:
    """A warning naming the training sims whose number of seeds differs from the most common one."""
    counts = {s.name: len(s.runs) for s in sims}
    usual = Counter(counts.values()).most_common(1)[0][0] if counts else 0
    odd = [f"{name} ({n})" for name, n in counts.items() if n != usual]
    if not odd:
        return None
    return (f"Uneven seeds: most training sims have {usual} seed{'s' * (usual != 1)}, but " + ", ".join(odd)
            + " differ; their rates' intervals are not comparable in width, and the trend weighs them unequally.")


def relative_curves(sims: list[TrainingSim]) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The essay's figure's numbers: per training sim, capability (mean over seeds) relative to
    the starting weights' capability, against self-play cycles completed (0 = the start).

    Every run of a reference group starts from the same weights, so the denominator is the mean
    start capability (``start.json``) over all of them; where none was evaluated, or it is 0,
    it is the mean capability after the first cycle instead. Returns (what the denominator is,
    {name: (cycles completed, relative capability)})."""
    runs = [r for s in sims for r in s.runs]
    starts = [float(r.start["capability"]) for r in runs if r.start]
    if starts and np.mean(starts) > 0:
        basis, base, shift = "the starting weights' capability (before any cycle)", float(np.mean(starts)), 1
    else:
        first = [float(r.cycles[0]["capability"]) for r in runs if int(r.cycles[0]["cycle"]) == 0]
        base = float(np.mean(first)) if first else math.nan
        basis, shift = "the capability after the first cycle (no start evaluation above 0 is stored)", 0
    curves = {}
    for sim in sims:
        cycles, mean, _, _ = sim.curve()
        x = cycles + shift
        y = mean / base if base and np.isfinite(base) else np.full_like(mean, math.nan)
        if shift:  # the start itself: 1 by construction
            x, y = np.concatenate([[0.0], x]), np.concatenate([[1.0], y])
        curves[sim.name] = (x, y)
    return basis, curves


# ---------------------------------------------------------------------- the paragraph


def _interval_text(mean: float, low: float, high: float, fmt: str = "+.4f") -> str:
    if not np.isfinite(low):
        return f"{mean:{fmt}} (one seed: no interval)"
    return f"{mean:{fmt}} ({LEVEL:.0%} interval {low:{fmt}} to {high:{fmt}})"


def sentences(runs: list[Run]) -> list[str]:
    """What the sweep's numbers show over seeds, "no evidence" included, as sentences."""
    sims = by_training_sim(runs)
    test = thesis_test(runs)
    out = []
    if test.fit is None:
        out.append(f"The thesis test (a one-sided permutation test that the compounding rate rises with measured "
                   f"fidelity) needs at least three runs with a rate at two distinct measured fidelities; these have "
                   f"{test.points} at {test.distinct_fidelities}: no test.")
    else:
        low, high = test.fit.slope_interval()
        verdict = ("evidence that it rises with fidelity, as the thesis predicts" if test.evidence else
                   f"no evidence at the {ALPHA:g} level that it rises with fidelity")
        out.append(f"Thesis test, stated before the run (does the compounding rate rise with measured fidelity? "
                   f"one-sided permutation test of the least-squares slope, {PERMUTATIONS:,} permutations, "
                   f"{test.points} runs): slope {test.fit.slope:+.4f} capability per cycle per unit of fidelity "
                   f"({LEVEL:.0%} interval {low:+.4f} to {high:+.4f}), p = {test.p:.3g}: {verdict}.")
    rising = [s.name for s in sims if np.isfinite(s.rate[1]) and s.rate[1] > 0]
    falling = [s.name for s in sims if np.isfinite(s.rate[2]) and s.rate[2] < 0]
    if any(np.isfinite(s.rate[1]) for s in sims):
        out.append("Over seeds, capability compounded (the rate's interval above zero) in "
                   + (", ".join(rising) if rising else "no training sim")
                   + (f" and fell (below zero) in {', '.join(falling)}" if falling else "") + ".")
    gaps = [(s.name, s.gap[0]) for s in sims if np.isfinite(s.gap[0])]
    if gaps:
        name, widest = max(gaps, key=lambda g: abs(g[1]))
        out.append(f"Practising, the agent did {np.mean([g for _, g in gaps]):+.3f} better in its training sim than "
                   f"in the reference on average over training sims (the practice gap; widest in {name}: "
                   f"{widest:+.3f}).")
    warning = uneven_seeds(sims)
    if warning:
        out.append(warning)
    return out
