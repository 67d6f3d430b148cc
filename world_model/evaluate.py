"""k-step prediction error on held-out transitions, for the learned simulator and a baseline.

The baseline is constant velocity: every proprio dimension continues at the rate it changed
over the previous step, ``p[t+k] = p[t] + k (p[t] - p[t-1])``. It knows nothing of actions or
physics, but for smooth motion at a short control period it is a hard baseline at one step.
Errors are normalized per dimension (``world_model.metrics``) and compared on the same windows:
rows with one step of history and ``k`` steps ahead inside one episode.
"""

from __future__ import annotations

import numpy as np

from world_model.data import Transitions
from world_model.metrics import normalized_error
from world_model.simulator import LearnedSimulator


def constant_velocity(previous: np.ndarray, current: np.ndarray, k: int) -> np.ndarray:
    return current + k * (current - previous)


def k_step_errors(simulator: LearnedSimulator, data: Transitions, k: int, scale: np.ndarray,
                  max_windows: int = 4096) -> dict[str, float]:
    """Mean normalized error after ``k`` steps: {"learned": ..., "constant_velocity": ..., "windows": n}."""
    if data.sim != simulator.reference:
        raise ValueError(f"transitions of {data.sim!r} cannot evaluate a simulator of {simulator.reference!r}")
    starts = data.windows(k, history=1)
    if len(starts) == 0:
        raise ValueError(f"{data.sim}: no window of {k} steps (plus one of history) in the held-out data")
    starts = starts[np.linspace(0, len(starts) - 1, min(max_windows, len(starts))).astype(int)]
    truth = data.next_proprio[starts + k - 1]
    actions = np.stack([data.action[starts + h] for h in range(k)], axis=1)
    learned = simulator.rollout(data.proprio[starts], actions)[0][:, -1]
    baseline = constant_velocity(data.proprio[starts - 1], data.proprio[starts], k)
    return {
        "learned": float(normalized_error(learned, truth, scale).mean()),
        "constant_velocity": float(normalized_error(baseline, truth, scale).mean()),
        "windows": int(len(starts)),
    }
