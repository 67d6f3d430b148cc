"""An exact, engine-neutral snapshot of a simulator: what ``get_state`` returns.

Restoring a snapshot and replaying the same actions reproduces the trajectory bit for bit,
so the snapshot holds everything that influences the future: the engine's integration
state, the episode's step count, task bookkeeping (e.g. success hold counters) and the
observation-noise generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SimState:
    sim: str
    step: int
    arrays: Mapping[str, np.ndarray]
    rng: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Own copies: a snapshot must not change when the simulator steps on.
        object.__setattr__(self, "arrays", {k: np.array(v, copy=True) for k, v in self.arrays.items()})

    def layout(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Names, shapes and dtypes: what must match for a state to fit a simulator."""
        return {k: (v.shape, v.dtype.str) for k, v in self.arrays.items()}

    def equals(self, other: SimState) -> bool:
        """Bitwise equality (NaNs compare equal, as in a byte copy)."""
        return (
            self.sim == other.sim
            and self.step == other.step
            and self.layout() == other.layout()
            and all(np.array_equal(v, other.arrays[k], equal_nan=v.dtype.kind == "f") for k, v in self.arrays.items())
            and _rng_equal(self.rng, other.rng)
        )


def _rng_equal(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_rng_equal(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b
