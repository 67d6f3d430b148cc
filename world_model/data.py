"""Realized physics transitions: what the learned simulator is fitted on, and how to collect them.

A ``Transitions`` record holds rows ``(proprio, action, next_proprio, reward)`` from one sim,
with an episode id per row; consecutive rows of one episode are consecutive steps, so
multi-step windows (for k-step errors and the constant-velocity baseline) can be cut from it.

``collect`` drives the sim itself: each episode is either the scripted demonstrator with
Gaussian noise on its actions (the states a competent policy visits) or random actions held
for a few steps (the states it does not), so the model sees both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import sims

ACTION_HOLD_MAX = 8  # random actions are held for 1..8 steps: an open-loop chunk, not white noise


@dataclass(frozen=True)
class Transitions:
    sim: str
    proprio: np.ndarray  # [N, D] float64 (the float32 observations, widened)
    action: np.ndarray  # [N, A] float64, env units
    next_proprio: np.ndarray  # [N, D]
    reward: np.ndarray  # [N]
    episode: np.ndarray  # [N] int64; rows of one episode are consecutive steps

    def __post_init__(self) -> None:
        arrays = {k: np.asarray(getattr(self, k)) for k in ("proprio", "action", "next_proprio", "reward", "episode")}
        n = len(arrays["proprio"])
        if n == 0:
            raise ValueError(f"{self.sim}: no transitions")
        shapes = {k: v.shape for k, v in arrays.items()}
        if (arrays["proprio"].ndim != 2 or arrays["action"].ndim != 2
                or arrays["next_proprio"].shape != arrays["proprio"].shape
                or any(v.shape[0] != n for v in arrays.values())
                or arrays["reward"].ndim != 1 or arrays["episode"].ndim != 1):
            raise ValueError(f"{self.sim}: transitions have inconsistent shapes {shapes}")
        for k in ("proprio", "action", "next_proprio", "reward"):
            if not np.all(np.isfinite(arrays[k])):
                raise ValueError(f"{self.sim}: transitions contain NaN or inf in {k}")
        for k, v in arrays.items():
            object.__setattr__(self, k, v.astype(np.int64 if k == "episode" else np.float64))

    def __len__(self) -> int:
        return len(self.proprio)

    @property
    def proprio_dim(self) -> int:
        return self.proprio.shape[1]

    @property
    def action_dim(self) -> int:
        return self.action.shape[1]

    def select(self, rows: np.ndarray) -> Transitions:
        return Transitions(self.sim, self.proprio[rows], self.action[rows], self.next_proprio[rows],
                           self.reward[rows], self.episode[rows])

    def split(self, fraction: float, seed: int = 0) -> tuple[Transitions, Transitions]:
        """Whole episodes into two parts (about ``fraction`` of the episodes in the first)."""
        episodes = np.unique(self.episode)
        rng = np.random.default_rng(seed)
        first = rng.permutation(episodes)[: max(1, int(round(fraction * len(episodes))))]
        mask = np.isin(self.episode, first)
        if mask.all() or not mask.any():
            raise ValueError(f"{self.sim}: cannot split {len(episodes)} episode(s) into two non-empty parts")
        return self.select(np.flatnonzero(mask)), self.select(np.flatnonzero(~mask))

    def windows(self, k: int, history: int = 0) -> np.ndarray:
        """Start rows i such that rows i - history .. i + k - 1 are consecutive steps of one episode."""
        if k < 1 or history < 0:
            raise ValueError(f"windows need k >= 1 and history >= 0, got {k} and {history}")
        n, span = len(self), k + history
        if span > n:
            return np.zeros(0, dtype=np.int64)
        starts = np.arange(n - span + 1)
        same = self.episode[starts] == self.episode[starts + span - 1]
        # Rows of one episode are contiguous and episodes never repeat an id, so equal ids at
        # both ends of a window mean the whole window lies in one episode.
        return starts[same] + history

    @staticmethod
    def concat(parts: Sequence[Transitions]) -> Transitions:
        """One record from several of the same sim; episode ids are renumbered to stay distinct."""
        parts = list(parts)
        if not parts:
            raise ValueError("no transitions to concatenate")
        names = {p.sim for p in parts}
        if len(names) > 1:
            raise ValueError(f"cannot mix transitions of different sims: {sorted(names)}")
        dims = {(p.proprio_dim, p.action_dim) for p in parts}
        if len(dims) > 1:
            raise ValueError(f"cannot mix transitions of different (proprio, action) sizes: {sorted(dims)}")
        episodes, offset = [], 0
        for p in parts:
            _, ids = np.unique(p.episode, return_inverse=True)
            episodes.append(ids + offset)
            offset += ids.max() + 1
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return Transitions(parts[0].sim, cat("proprio"), cat("action"), cat("next_proprio"), cat("reward"),
                           np.concatenate(episodes))


def collect(sim: str, steps: int, *, seed: int = 0, demo_fraction: float = 0.5, noise: float = 0.3,
            progress: Callable[[int], None] | None = None, **config) -> Transitions:
    """``steps`` transitions of the sim ``sim`` (made with ``config``), reproducible from ``seed``.

    Each episode is demonstrator-driven (normalized actions plus N(0, ``noise``)) with
    probability ``demo_fraction`` when the sim has a demonstrator, else random actions held
    for 1..8 steps. ``progress(n)`` is called with the number of steps taken so far.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"collect needs steps >= 2, got {steps!r}")
    if not 0.0 <= demo_fraction <= 1.0 or noise < 0:
        raise ValueError(f"demo_fraction must be in [0, 1] and noise >= 0, got {demo_fraction} and {noise}")
    env = sims.make(sim, **config)
    try:
        demo = env.demonstrator() if env.defines_success else None
    except NotImplementedError:
        demo = None
    emb = env.embodiment
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("proprio", "action", "next_proprio", "reward", "episode")}
    episode = 0
    try:
        while len(rows["reward"]) < steps:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            driven = demo is not None and rng.uniform() < demo_fraction
            if driven:
                demo.reset()
            held, hold_left, done = np.zeros(emb.action_dim), 0, False
            while not done and len(rows["reward"]) < steps:
                if driven:
                    unit = emb.normalize_action(demo(obs)) + rng.normal(0.0, noise, emb.action_dim)
                else:
                    if hold_left == 0:
                        held, hold_left = rng.uniform(-1, 1, emb.action_dim), int(rng.integers(1, ACTION_HOLD_MAX + 1))
                    unit, hold_left = held, hold_left - 1
                action = emb.to_env_action(unit)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                row = {"proprio": obs["proprio"], "action": action, "next_proprio": next_obs["proprio"],
                       "reward": reward, "episode": episode}
                for key, value in row.items():
                    rows[key].append(value)
                obs, done = next_obs, terminated or truncated
                if progress is not None:
                    progress(len(rows["reward"]))
            episode += 1
    finally:
        env.close()
    columns = ("proprio", "action", "next_proprio", "reward", "episode")
    return Transitions(env.name, *(np.asarray(rows[k]) for k in columns))
