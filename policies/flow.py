"""Rectified flow: how frames, imagined futures and actions are generated.

A straight path joins noise x0 ~ N(0, I) (t = 0) to data x1 (t = 1):

    x_t = (1 - t) x0 + t x1,        velocity target  v = x1 - x0.

The model sees x_t and t (through a timestep embedding) and predicts v; the loss is the
squared error over real entries only: padded dimensions are multiplied out of the error
and out of the count, so they never contribute, whatever values they hold. Sampling
integrates dx/dt = v from t = 0 to 1 with ``steps`` Euler steps; few steps suffice
because the learned paths are nearly straight.

Functions work on ``Data`` (named tensors + masks), so one modality may mix parts, such as
the imagined future's proprio vectors and frames.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from policies.data import Data, masked


class TimestepEmbedding(nn.Module):
    """t in [0, 1] -> a d_model vector: sinusoidal features of 1000 t, then an MLP."""

    def __init__(self, d_model: int, n_freq: int = 64) -> None:
        super().__init__()
        self.n_freq = n_freq
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(self.n_freq, device=t.device) / self.n_freq)
        angles = 1000.0 * t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def noise_like(data: Data, generator: torch.Generator | None = None) -> Data:
    """x0: standard normal in every real entry, zero in padding."""
    values = {k: torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
              for k, v in data.values.items()}
    return data.with_values(values).zeroed()


def interpolate(x0: Data, x1: Data, t: torch.Tensor) -> Data:
    """x_t = (1 - t) x0 + t x1, with t of shape (B,)."""
    return x1.with_values({k: (1 - _bcast(t, v)) * x0.values[k] + _bcast(t, v) * v for k, v in x1.values.items()})


def sample_time(batch: int, device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training times in (0, 1): logit-normal, which spends more updates mid-path where v is hardest."""
    return torch.sigmoid(torch.randn(batch, generator=generator, device=device))


def flow_loss(predicted: dict[str, torch.Tensor], x0: Data, x1: Data,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Masked MSE between predicted and true velocity, averaged over parts.

    Each part's error is summed over real entries and divided by their count, so padded
    entries (mask False) change neither the numerator nor the denominator. ``weights`` (B,)
    weight each sample's entries in both sums (grade-weighted regression in the flywheel);
    all-ones weights give the unweighted loss.
    """
    losses = []
    for name, target in x1.values.items():
        mask = x1.masks.get(name)
        err = (predicted[name] - (target - x0.values[name])) ** 2
        if mask is None and weights is None:
            losses.append(err.mean())
            continue
        # torch.where, not a product, so NaN/inf in padding cannot leak in either.
        full = torch.ones_like(err, dtype=torch.bool) if mask is None else mask.expand_as(err)
        err = torch.where(full, err, torch.zeros_like(err))
        if weights is None:
            losses.append(err.sum() / full.sum().clamp_min(1))
        else:
            w = weights.to(err.dtype).view(-1, *([1] * (err.dim() - 1)))
            losses.append((w * err).sum() / (w * full).sum().clamp_min(1e-12))
    return torch.stack(losses).mean()


Velocity = Callable[[Data, torch.Tensor], dict[str, torch.Tensor]]


def euler_sample(velocity: Velocity, template: Data, steps: int,
                 generator: torch.Generator | None = None) -> Data:
    """Integrate from noise (t = 0) to data (t = 1) in ``steps`` equal Euler steps.

    ``template`` gives shapes, dtype, device and masks (its values are ignored);
    ``velocity(x_t, t)`` is called exactly ``steps`` times. Padded entries stay zero.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = noise_like(template, generator)
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((template.batch,), i * dt, device=template.device)
        v = velocity(x, t)
        x = x.with_values({k: x.values[k] + dt * masked(v[k], x.masks.get(k)) for k in x.values})
    return x
