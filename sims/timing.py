"""Steps per second of a simulator, measured the same way everywhere (CLI table, benchmark)."""

from __future__ import annotations

import time

import numpy as np

from sims.env import SimEnv


def steps_per_second(env: SimEnv, steps: int = 500, seed: int = 0) -> float:
    """Random-action env steps per wall-clock second, resets included (not the first one)."""
    emb = env.embodiment
    actions = emb.to_env_action(np.random.default_rng(seed).uniform(-1, 1, (steps, emb.action_dim)))
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)
