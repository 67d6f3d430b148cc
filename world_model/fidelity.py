"""Fidelity: one number in [0, 1] saying how closely a simulator reproduces its reference.

The candidate is started from every probe of the reference's probe set and fed the probe's
actions open-loop; its proprio after each action is scored against the reference's
(``world_model.metrics.score``, normalized by the probe set's per-dimension spread). Then

    fidelity = exp(-mean normalized error over probes, horizon and dimensions / tolerance)

with ``tolerance`` = 0.1 by default (the divergence threshold of ``world_model.metrics``):
fidelity is 1 exactly when every trajectory is identical, 1/e when the candidate is off by
a tenth of the motion's spread on average, e^-10 when off by the whole spread. The
error-against-horizon curve comes with it.

A candidate whose episode ends before the horizon (it fell where the reference did not)
keeps its last observation for the remaining steps, so the parting counts as error.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import sims
from sims import SimEnv
from sims.files import write_figure_atomic
from world_model.metrics import DIVERGENCE, Score, score
from world_model.probes import ProbeSet, probe_set, start_candidate, twin_of

TOLERANCE = DIVERGENCE


@dataclass(frozen=True)
class FidelityResult:
    reference: str
    candidate: str
    fidelity: float
    score: Score
    trajectories: np.ndarray  # [P, H, D] the candidate's proprio
    error_estimate: np.ndarray | None  # [P, H, D] the candidate's own estimate (learned sims), else None
    seconds: float

    @property
    def curve(self) -> np.ndarray:
        return self.score.curve

    def as_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "candidate": self.candidate, "fidelity": self.fidelity,
                **self.score.as_dict(), "seconds": round(self.seconds, 3)}


def fidelity(candidate: str | SimEnv, reference: str | ProbeSet, *, probes: int = 8, horizon: int = 50,
             seed: int = 0, tolerance: float = TOLERANCE, threshold: float = DIVERGENCE,
             **candidate_config: Any) -> FidelityResult:
    """Fidelity of ``candidate`` (a sim name, made with ``candidate_config``, or an env) to ``reference``.

    ``reference`` is a probe set, or a sim name whose probe set (``probes``, ``horizon``,
    ``seed``) is built. A candidate env given ready-made must allow episodes of at least
    ``probe_set.episode_steps`` steps, or its truncation counts as error.
    """
    if not (isinstance(tolerance, (int, float)) and tolerance > 0):
        raise ValueError(f"fidelity tolerance must be > 0, got {tolerance!r}")
    probes_ = reference if isinstance(reference, ProbeSet) else probe_set(reference, seed=seed, probes=probes,
                                                                        horizon=horizon)
    began = time.perf_counter()
    if isinstance(candidate, SimEnv):
        if candidate_config:
            raise ValueError("candidate_config applies to a candidate given by name, not to an env")
        env, owned = candidate, False
    else:
        env = sims.make(candidate, max_episode_steps=probes_.episode_steps, **candidate_config)
        owned = True
    reference_env = None
    if twin_of(probes_.sim, env.name):  # a twin copies the reference's joint state at every probe start
        reference_env = sims.make(probes_.sim, max_episode_steps=probes_.episode_steps)
    try:
        start_candidate(env, probes_, 0, reference_env)  # an incompatible candidate fails before any stepping
        trajectories, estimates = _rollouts(env, probes_, reference_env)
    finally:
        if owned:
            env.close()
        if reference_env is not None:
            reference_env.close()
    result = score(trajectories, probes_.reference, probes_.scale, threshold=threshold)
    value = math.exp(-result.mean_error / tolerance)
    return FidelityResult(probes_.sim, env.name, value, result, trajectories, estimates, time.perf_counter() - began)


def _rollouts(env: SimEnv, probes: ProbeSet, reference_env: SimEnv | None) -> tuple[np.ndarray, np.ndarray | None]:
    p, h, d = probes.reference.shape
    if env.embodiment.proprio_dim != d or env.embodiment.action_dim != probes.actions.shape[2]:
        raise ValueError(f"{env.name} (proprio {env.embodiment.proprio_dim}, action {env.embodiment.action_dim}) does "
                         f"not match the probe set of {probes.sim} (proprio {d}, action {probes.actions.shape[2]})")
    trajectories = np.zeros((p, h, d))
    estimates = np.zeros((p, h, d))
    has_estimate = False
    for i in range(p):
        start_candidate(env, probes, i, reference_env)
        ended = False
        for t in range(h):
            if ended:  # the candidate's episode is over: it stays where it ended
                trajectories[i, t], estimates[i, t] = trajectories[i, t - 1], estimates[i, t - 1]
                continue
            obs, _, terminated, truncated, info = env.step(probes.actions[i, t])
            trajectories[i, t] = obs["proprio"]
            if "error_estimate" in info:
                estimates[i, t], has_estimate = info["error_estimate"], True
            ended = terminated or truncated
    return trajectories, (estimates if has_estimate else None)


def plot_curves(results: list[FidelityResult], path: str, title: str | None = None,
                labels: list[str] | None = None) -> None:
    """PNG of mean normalized error against horizon, one line per candidate (log scale), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    positive = [c for r in results for c in r.curve if c > 0]
    floor = min(positive) / 10 if positive else 1e-12
    for r, label in zip(results, labels or [r.candidate for r in results]):
        steps = np.arange(1, len(r.curve) + 1)
        if not np.any(r.curve > 0):  # identical to the reference: a flat line at the bottom
            ax.plot(steps, np.full(len(steps), floor), linestyle=":", label=f"{label} (identical, fidelity 1)")
            continue
        # Exact zeros (steps re-anchored to the engine) leave gaps on the log scale.
        ax.plot(steps, np.where(r.curve > 0, r.curve, np.nan), label=f"{label} (fidelity {r.fidelity:.3f})")
    ax.axhline(results[0].score.threshold if results else DIVERGENCE, color="grey", linewidth=0.8, linestyle="--",
               label="divergence threshold")
    ax.set(yscale="log", xlabel="horizon (control steps from the probe start)",
           ylabel="normalized |candidate - reference|",
           title=title or f"Error against horizon on the probe set of {results[0].reference if results else '?'}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=110)

