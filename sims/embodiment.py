"""What a body looks like to the model: proprio and action sizes, bounds, and padding.

One model drives every embodiment, so proprio and action vectors are padded to shared
maximum sizes. The masks say which entries are real; padded entries must never reach a loss.
Actions cross the model boundary normalized to [-1, 1]; ``to_env_action`` maps them back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Shared sizes every embodiment is padded to. Large enough for a 7-DoF arm with a gripper
# and an object pose; pass other sizes explicitly for bigger bodies.
PROPRIO_PAD = 64
ACTION_PAD = 16


@dataclass(frozen=True)
class Embodiment:
    """Proprio/action layout of one sim task."""

    name: str
    proprio_dim: int
    action_dim: int
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
            raise ValueError(f"{self.name}: action bounds must have {self.action_dim} entries")
        if any(lo >= hi for lo, hi in zip(self.action_low, self.action_high)):
            raise ValueError(f"{self.name}: every action low bound must be below its high bound")

    def proprio_mask(self, size: int = PROPRIO_PAD) -> np.ndarray:
        return _mask(self.proprio_dim, size, self.name, "proprio")

    def action_mask(self, size: int = ACTION_PAD) -> np.ndarray:
        return _mask(self.action_dim, size, self.name, "action")

    def pad_proprio(self, proprio: np.ndarray, size: int = PROPRIO_PAD) -> np.ndarray:
        """Zero-pad the last axis of ``proprio`` (any leading batch shape) to ``size``."""
        return _pad(proprio, self.proprio_dim, size, self.name, "proprio")

    def pad_action(self, action: np.ndarray, size: int = ACTION_PAD) -> np.ndarray:
        return _pad(action, self.action_dim, size, self.name, "action")

    def unpad_action(self, padded: np.ndarray) -> np.ndarray:
        return np.asarray(padded)[..., : self.action_dim]

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        """Env units -> [-1, 1]."""
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        return (2.0 * (np.asarray(action) - low) / (high - low) - 1.0).astype(np.float32)

    def to_env_action(self, normalized: np.ndarray) -> np.ndarray:
        """[-1, 1] (clipped) -> env units."""
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        unit = np.clip(np.asarray(normalized, dtype=np.float64), -1.0, 1.0)
        return (low + (unit + 1.0) * 0.5 * (high - low)).astype(np.float32)


def _mask(dim: int, size: int, name: str, what: str) -> np.ndarray:
    if dim > size:
        raise ValueError(f"{name}: {what} has {dim} dimensions, more than the shared pad size {size}")
    return np.arange(size) < dim


def _pad(values: np.ndarray, dim: int, size: int, name: str, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if values.shape[-1:] != (dim,):
        raise ValueError(f"{name}: {what} has shape {values.shape}, expected last axis {dim}")
    _mask(dim, size, name, what)
    padded = np.zeros(values.shape[:-1] + (size,), dtype=np.float32)
    padded[..., :dim] = values
    return padded
