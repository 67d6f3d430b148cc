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

For data-parallel training the loss must not depend on how a batch is split: ``row_noise``
draws each row's x0 and t from that row's own seed (not from one generator over the
batch), and ``flow_loss`` accepts the ``denominators`` of the whole batch
(``loss_denominators``) so that a slice's loss is its exact share of the batch's loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


def row_noise(data: Data, seeds: Sequence[int]) -> tuple[Data, torch.Tensor]:
    """x0 and t for ``data`` with row i drawn from its own generator seeded ``seeds[i]``.

    Per row, in this order: a standard normal of each part's shape (parts in ``data``'s
    order), then t = sigmoid(N(0, 1)) as in ``sample_time``. A row's noise depends on its
    seed only, not on which other rows share its batch. Drawn on the CPU, then moved to
    ``data``'s device; padded entries of x0 are zero.
    """
    if len(seeds) != data.batch:
        raise ValueError(f"{len(seeds)} seeds for a batch of {data.batch}")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in data.values}
    times = []
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        for k, v in data.values.items():
            parts[k].append(torch.randn(v.shape[1:], generator=g, dtype=v.dtype))
        times.append(torch.randn(1, generator=g))
    x0 = data.with_values({k: torch.stack(parts[k]).to(data.values[k].device) for k in parts}).zeroed()
    return x0, torch.sigmoid(torch.cat(times)).to(data.device)


def loss_denominators(x1: Data, weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per part, what ``flow_loss`` divides that part's error sum by on this batch.

    Computed on a whole batch and handed to ``flow_loss`` on a slice of it, each slice's
    loss is its share: the shares of a partition sum to the whole batch's loss.
    """
    out = {}
    for name, target in x1.values.items():
        mask = x1.masks.get(name)
        if mask is None and weights is None:
            out[name] = torch.tensor(float(target.numel()), device=target.device)
            continue
        full = torch.ones_like(target, dtype=torch.bool) if mask is None else mask.expand_as(target)
        if weights is None:
            out[name] = full.sum().clamp_min(1).to(target.dtype)
        else:
            w = weights.to(target.dtype).view(-1, *([1] * (target.dim() - 1)))
            out[name] = (w * full).sum().clamp_min(1e-12)
    return out


def flow_loss(predicted: dict[str, torch.Tensor], x0: Data, x1: Data,
              weights: torch.Tensor | None = None,
              denominators: Mapping[str, torch.Tensor | float] | None = None) -> torch.Tensor:
    """Masked MSE between predicted and true velocity, averaged over parts.

    Each part's error is summed over real entries and divided by their count, so padded
    entries (mask False) change neither the numerator nor the denominator. ``weights`` (B,)
    weight each sample's entries in both sums (grade-weighted regression in the flywheel);
    all-ones weights give the unweighted loss. ``denominators`` ({part: value}, see
    ``loss_denominators``) replace the counts with those of a larger batch this one is a
    slice of.
    """
    losses = []
    for name, target in x1.values.items():
        mask = x1.masks.get(name)
        err = (predicted[name] - (target - x0.values[name])) ** 2
        if mask is None and weights is None:
            losses.append(err.mean() if denominators is None else err.sum() / denominators[name])
            continue
        # torch.where, not a product, so NaN/inf in padding cannot leak in either.
        full = torch.ones_like(err, dtype=torch.bool) if mask is None else mask.expand_as(err)
        err = torch.where(full, err, torch.zeros_like(err))
        if weights is not None:
            w = weights.to(err.dtype).view(-1, *([1] * (err.dim() - 1)))
            err = w * err
        if denominators is not None:
            losses.append(err.sum() / denominators[name])
        elif weights is None:
            losses.append(err.sum() / full.sum().clamp_min(1))
        else:
            losses.append(err.sum() / (w * full).sum().clamp_min(1e-12))
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
