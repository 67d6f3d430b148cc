"""The learned dynamics network: an ensemble of small MLPs evaluated in one batched pass.

Each member maps (normalized proprio, action in [-1, 1]) to (normalized proprio delta,
normalized reward). The members differ only in their initialization and in the minibatches
they are trained on; where the data pins the dynamics down they agree, where it does not
they part, and that spread is the simulator's error estimate (as in PETS and TD-MPC2's
ensembles of Q heads). The weights of all members are stacked, so K members over N inputs
cost one ``baddbmm`` per layer, not K forward passes.

The normalization statistics live in the module as buffers, so the checkpoint's tensors
are the whole model. Its size is a ``configs.schema.WorldModelNetConfig``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from configs.schema import WorldModelNetConfig


class Ensemble(nn.Module):
    """K MLPs (LayerNorm + SiLU hidden layers) with stacked weights, plus normalization stats.

    Each member also has a linear path from input to output: much of one control step is
    close to linear in the state (a position moves by its velocity times dt), which an MLP
    alone only approximates; the hidden layers then learn what is left.
    """

    def __init__(self, proprio_dim: int, action_dim: int, config: WorldModelNetConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.proprio_dim, self.action_dim = proprio_dim, action_dim
        k = config.ensemble
        dims = [proprio_dim + action_dim] + [config.hidden] * config.layers + [proprio_dim + 1]
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default, per member
            self.weights.append(nn.Parameter((torch.rand(k, d_in, d_out, generator=gen) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand(k, 1, d_out, generator=gen) * 2 - 1) * bound))
        bound = 1.0 / math.sqrt(dims[0])
        self.skip = nn.Parameter((torch.rand(k, dims[0], dims[-1], generator=gen) * 2 - 1) * bound)
        for name, size in (("proprio", proprio_dim), ("delta", proprio_dim), ("reward", 1)):
            self.register_buffer(f"{name}_mean", torch.zeros(size, dtype=torch.float64))
            self.register_buffer(f"{name}_std", torch.ones(size, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: [K, B, proprio + action] normalized inputs -> [K, B, proprio + 1] normalized outputs."""
        skip = torch.bmm(x, self.skip)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.silu(F.layer_norm(x, x.shape[-1:]))
        return x + skip
