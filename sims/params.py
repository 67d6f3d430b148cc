"""Physical parameters of a simulator, and the fidelity knob that perturbs them.

Every engine maps the same small record onto its own dynamics, so "mass +20%" means the
same thing in MuJoCo, dm-control and PyBullet.

The fidelity knob
-----------------
``fidelity`` is in [0, 1]; 1 leaves the simulator identical to its reference. Below 1,
every parameter moves away from its nominal value by

    value = nominal * (1 + direction * magnitude * RANGE[field] * (1 - fidelity))

where ``direction`` is -1 or +1 and ``magnitude`` is in [0.5, 1], both drawn per field,
in a fixed field order, from ``numpy.random.default_rng(run_seed)``. So for one run seed
the perturbation points the same way at every fidelity and grows linearly as fidelity
falls; a different seed gives a different (but reproducible) lie. Observation noise is
added on top: its standard deviation is ``OBS_NOISE_AT_ZERO_FIDELITY * (1 - fidelity)``.
At fidelity 1 every factor is exactly 1.0, so the parameters are bit-identical to nominal.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

# Relative change of each parameter at fidelity 0 (before the per-seed magnitude in [0.5, 1]).
PERTURBATION_RANGE: dict[str, float] = {
    "mass_scale": 0.5,
    "friction_scale": 0.6,
    "gravity": 0.25,
    "actuator_gain": 0.4,
    "timestep": 0.3,
}
# Standard deviation of the Gaussian noise added to proprio at fidelity 0.
OBS_NOISE_AT_ZERO_FIDELITY = 0.05


@dataclass(frozen=True)
class PhysicsParams:
    """The physical parameters every simulator exposes.

    mass_scale, friction_scale and actuator_gain multiply the engine's nominal values;
    gravity is the magnitude of downward gravity in m/s^2; timestep is the physics
    integration step in seconds (the number of physics steps per control step stays fixed);
    obs_noise is the standard deviation of Gaussian noise added to proprio observations.
    """

    mass_scale: float = 1.0
    friction_scale: float = 1.0
    gravity: float = 9.81
    actuator_gain: float = 1.0
    timestep: float = 0.01
    obs_noise: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise TypeError(f"PhysicsParams.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"PhysicsParams.{f.name} must be finite, got {value!r}")
            object.__setattr__(self, f.name, float(value))
        for name in ("mass_scale", "friction_scale", "actuator_gain", "timestep"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PhysicsParams.{name} must be > 0, got {getattr(self, name)}")
        if self.gravity < 0 or self.obs_noise < 0:
            raise ValueError(
                f"PhysicsParams.gravity and obs_noise must be >= 0, got {self.gravity}, {self.obs_noise}"
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, float], base: PhysicsParams | None = None) -> PhysicsParams:
        """Build from a mapping, starting from ``base``; unknown fields are an error."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown physical parameter(s) {unknown}; known fields: {list(cls.field_names())}"
            )
        return dataclasses.replace(base or cls(), **dict(values))

    def replace(self, **changes: float) -> PhysicsParams:
        return self.from_mapping(changes, base=self)

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def coerce_params(params: PhysicsParams | Mapping[str, float], base: PhysicsParams) -> PhysicsParams:
    """Accept a record or a partial mapping of overrides on top of ``base``."""
    if isinstance(params, PhysicsParams):
        return params
    if isinstance(params, Mapping):
        return PhysicsParams.from_mapping(params, base=base)
    raise TypeError(f"physical parameters must be a PhysicsParams or a mapping, got {type(params).__name__}")


def validate_fidelity(fidelity: object) -> float:
    """Return fidelity as a float, or raise naming the bad value."""
    if isinstance(fidelity, bool) or not isinstance(fidelity, (int, float, np.floating, np.integer)):
        raise TypeError(f"fidelity must be a number in [0, 1], got {fidelity!r}")
    value = float(fidelity)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"fidelity must be in [0, 1], got {fidelity!r}")
    return value


def perturb(nominal: PhysicsParams, fidelity: float, run_seed: int) -> PhysicsParams:
    """The training-sim parameters for ``fidelity``: see the module docstring for the mapping."""
    fidelity = validate_fidelity(fidelity)
    rng = np.random.default_rng(run_seed)
    gap = 1.0 - fidelity
    changes: dict[str, float] = {}
    for name, relative_range in PERTURBATION_RANGE.items():
        direction = float(rng.choice((-1.0, 1.0)))
        magnitude = float(rng.uniform(0.5, 1.0))
        changes[name] = getattr(nominal, name) * (1.0 + direction * magnitude * relative_range * gap)
    changes["obs_noise"] = nominal.obs_noise + OBS_NOISE_AT_ZERO_FIDELITY * gap
    return nominal.replace(**changes)
