"""Imagined against realized: per-step error normalized per dimension, error against horizon.

Trajectories are arrays of proprio, ``[T, D]`` for one or ``[N, T, D]`` for a batch; row
``t`` of both is the same moment (in this package, the state after the ``t+1``-th action, so
row 0 is horizon 1). The error of one dimension at one step is ``|imagined - realized|``
divided by that dimension's spread in the reference data (``scale``): "1.0" means as far
off as the motion itself spans. ``score`` reduces it three ways: averaged over dimensions
per step (the compounding-error curve), averaged over everything (one number), and the
first horizon at which the curve exceeds a threshold (divergence).

Bad input (shapes that differ, NaN, an empty trajectory, a non-positive scale) raises a
``ValueError`` saying which; no score is ever computed from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIVERGENCE = 0.1  # mean normalized error at which two trajectories count as having parted
SCALE_FLOOR = 1e-2  # a dimension that barely moves is normalized by this fraction of the median spread


@dataclass(frozen=True)
class Score:
    """What ``score`` found: see the module docstring."""

    error: np.ndarray  # [T, D] normalized error per step and dimension (mean over the batch)
    curve: np.ndarray  # [T] mean over dimensions: error against horizon (row t = horizon t + 1)
    mean_error: float  # mean of the curve
    diverges_at: int | None  # first horizon (1-based) whose curve value exceeds ``threshold``; None = never
    threshold: float

    def as_dict(self) -> dict:
        return {"mean_error": self.mean_error, "diverges_at": self.diverges_at, "threshold": self.threshold,
                "curve": self.curve.tolist()}


def spread(trajectories: np.ndarray) -> np.ndarray:
    """Per-dimension standard deviation of reference proprio ``[..., D]``, floored (``SCALE_FLOOR``)."""
    values = _finite_array(trajectories, "reference trajectories")
    std = values.reshape(-1, values.shape[-1]).std(axis=0)
    floor = max(SCALE_FLOOR * float(np.median(std)), 1e-9)
    return np.maximum(std, floor)


def normalized_error(imagined, realized, scale) -> np.ndarray:
    """``|imagined - realized| / scale`` per element, after checking shapes and values."""
    imagined, realized, scale = check_pair(imagined, realized, scale)
    return np.abs(imagined - realized) / scale


def check_pair(imagined, realized, scale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    imagined = _finite_array(imagined, "imagined trajectory")
    realized = _finite_array(realized, "realized trajectory")
    if imagined.shape != realized.shape:
        raise ValueError(f"imagined and realized trajectories differ in shape: {imagined.shape} vs {realized.shape} "
                         "(same number of steps and proprio dimensions needed)")
    if imagined.ndim == 0 or imagined.size == 0:
        raise ValueError(f"trajectories must have at least one step and one dimension, got shape {imagined.shape}")
    scale = _finite_array(scale, "scale")
    if scale.shape != imagined.shape[-1:]:
        raise ValueError(f"scale has shape {scale.shape}, expected one entry per proprio dimension "
                         f"{imagined.shape[-1:]}")
    if np.any(scale <= 0):
        raise ValueError(f"scale must be positive in every dimension, got {scale.tolist()}")
    return imagined, realized, scale


def score(imagined, realized, scale=None, *, threshold: float = DIVERGENCE) -> Score:
    """Score ``[T, D]`` or ``[N, T, D]`` trajectories; ``scale`` defaults to ``spread(realized)``."""
    if scale is None:
        scale = spread(realized)
    error = normalized_error(imagined, realized, scale)
    if error.ndim not in (2, 3):
        raise ValueError(f"trajectories must be [T, D] or [N, T, D], got shape {error.shape}")
    per_step = error.reshape(-1, *error.shape[-2:]).mean(axis=0)
    curve = per_step.mean(axis=1)
    above = np.flatnonzero(curve > threshold)
    return Score(per_step, curve, float(curve.mean()), int(above[0]) + 1 if above.size else None, float(threshold))


def _finite_array(values, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be numeric: {exc}") from exc
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))
        raise ValueError(f"{what} contains NaN or inf (first at index {tuple(int(i) for i in bad[0])})")
    return arr
