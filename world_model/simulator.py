"""The learned simulator: a fitted ensemble bound to its reference sim, and batched stepping.

``LearnedSimulator`` turns the network of ``world_model.model`` into dynamics in the sim's own
units. Every member keeps its own trajectory (PETS's "trajectory sampling"): the state the
simulator reports is the members' mean, and their spread is the error estimate, which so
grows with the distance from the last state the engine supplied, as the true error does.

``LearnedBatch`` steps N environments at once: one forward pass of K members over N states
per step, with no engine in the loop (re-anchoring to an engine is the caller's, through
``anchor``; ``world_model.learned_env`` does it for the registered single-env sim).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from configs.schema import WorldModelNetConfig
from world_model.model import Ensemble


@dataclass
class LearnedSimulator:
    """A fitted ensemble for the sim ``reference`` (proprio-only; see docs/world_model.md)."""

    reference: str
    net: Ensemble
    action_low: np.ndarray
    action_high: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)  # how it was trained (kept in the checkpoint)

    def __post_init__(self) -> None:
        self.action_low = np.asarray(self.action_low, dtype=np.float64)
        self.action_high = np.asarray(self.action_high, dtype=np.float64)
        self.net.eval()

    @property
    def config(self) -> WorldModelNetConfig:
        return self.net.config

    @property
    def ensemble(self) -> int:
        return self.net.config.ensemble

    @property
    def proprio_dim(self) -> int:
        return self.net.proprio_dim

    @property
    def action_dim(self) -> int:
        return self.net.action_dim

    def normalized_inputs(self, proprio: np.ndarray, action: np.ndarray) -> torch.Tensor:
        """[..., D] proprio and [..., A] env-unit actions -> the network's float32 inputs."""
        net = self.net
        p = (torch.as_tensor(proprio, dtype=torch.float64) - net.proprio_mean) / net.proprio_std
        span = self.action_high - self.action_low
        unit = 2.0 * (np.asarray(action, dtype=np.float64) - self.action_low) / span - 1.0
        a = torch.as_tensor(np.clip(unit, -1.0, 1.0))
        return torch.cat([p, a], dim=-1).to(torch.float32)

    @torch.no_grad()
    def step_members(self, members: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step of every member from its own state.

        ``members``: [K, N, D] float64 states; ``action``: [N, A] env units.
        Returns the next states [K, N, D] and rewards [K, N].
        """
        k, n, d = members.shape
        if k != self.ensemble or d != self.proprio_dim:
            raise ValueError(f"members have shape {members.shape}, expected ({self.ensemble}, N, {self.proprio_dim})")
        action = np.broadcast_to(np.asarray(action, dtype=np.float64), (k, n, self.action_dim))
        out = self.net(self.normalized_inputs(members, action)).to(torch.float64)
        net = self.net
        delta = out[..., :d] * net.delta_std + net.delta_mean
        reward = out[..., d] * net.reward_std[0] + net.reward_mean[0]
        return members + delta.numpy(), reward.numpy()

    def check_batch(self, proprio: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validate [N, D] start states and [N, H, A] action sequences."""
        proprio = np.asarray(proprio, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        if proprio.ndim != 2 or proprio.shape[1] != self.proprio_dim:
            raise ValueError(f"{self.reference}: proprio has shape {proprio.shape}, expected (N, {self.proprio_dim})")
        if actions.ndim != 3 or actions.shape[0] != proprio.shape[0] or actions.shape[2] != self.action_dim:
            raise ValueError(f"{self.reference}: actions have shape {actions.shape}, expected "
                             f"({proprio.shape[0]}, H, {self.action_dim})")
        if not (np.all(np.isfinite(proprio)) and np.all(np.isfinite(actions))):
            raise ValueError(f"{self.reference}: proprio or actions contain NaN or inf")
        return proprio, actions

    def rollout(self, proprio: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open-loop rollouts from [N, D] states under [N, H, A] actions, purely learned.

        Returns the mean trajectory [N, H, D] (row h = after action h), its spread (member
        standard deviation) [N, H, D] and the mean predicted rewards [N, H].
        """
        proprio, actions = self.check_batch(proprio, actions)
        batch = LearnedBatch(self, proprio)
        steps = [batch.step(actions[:, h]) for h in range(actions.shape[1])]
        proprio, reward, estimate = (np.stack([s[i] for s in steps], axis=1) for i in range(3))
        return proprio, estimate, reward


class LearnedBatch:
    """N learned environments stepped together: one batched forward pass per step.

    ``step`` returns (proprio [N, D], reward [N], error_estimate [N, D]); the error estimate
    is the members' standard deviation, in proprio units. ``anchor`` replaces the state of
    some environments (all by default) with given (engine) states, zeroing their spread.
    """

    def __init__(self, simulator: LearnedSimulator, proprio: np.ndarray) -> None:
        self.simulator = simulator
        proprio = np.asarray(proprio, dtype=np.float64)
        if proprio.ndim != 2 or proprio.shape[1] != simulator.proprio_dim:
            raise ValueError(f"{simulator.reference}: start states have shape {proprio.shape}, "
                             f"expected (N, {simulator.proprio_dim})")
        self.members = np.repeat(proprio[None], simulator.ensemble, axis=0)

    @property
    def size(self) -> int:
        return self.members.shape[1]

    @property
    def proprio(self) -> np.ndarray:
        return self.members.mean(axis=0)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.size, self.simulator.action_dim):
            raise ValueError(f"{self.simulator.reference}: actions have shape {actions.shape}, "
                             f"expected {(self.size, self.simulator.action_dim)}")
        self.members, rewards = self.simulator.step_members(self.members, actions)
        return self.members.mean(axis=0), rewards.mean(axis=0), self.members.std(axis=0)

    def anchor(self, proprio: np.ndarray, which: np.ndarray | None = None) -> None:
        rows = np.arange(self.size) if which is None else np.asarray(which)
        self.members[:, rows] = np.asarray(proprio, dtype=np.float64)[None]
