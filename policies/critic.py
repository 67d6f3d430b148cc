"""The critic over action chunks: V(s), an ensemble of Q_k(s, a), and the TD math they learn by.

Chunked implicit Q-learning (``docs/rl-core.md``): a chunk of ``cfg.chunk`` actions is one
decision, so Q is over a whole chunk and TD steps from one chunk's start to the next's.

    y       = c * R_chunk + gamma^steps * (1 - terminated) * V_target(s')   R_chunk = sum_t gamma^t r_t
    L_Q     = mean over pairs and k of (Q_k(s, a) - y)^2
    L_V     = mean over rows of |tau - 1[u < 0]| * u^2,  u = min_k Q_k(s, a) - V(s)   (expectile tau)

Both heads read the state through ``critic_features``: the mean of the proprio item's hidden
states (which attend to the task text before them) next to the latest proprio step itself,
both detached. Detached because the critic must not move the generative backbone: its
targets bootstrap off itself and are noisy early on, and the flywheel trains only ``video``
and ``action`` by default, so the ``understand`` features it reads stay put. The raw proprio
step rides along so a critic on a scratch (or barely trained) backbone still sees the state.
Frames are left out so that the state a row stores (text + proprio history) and the state a
rollout sees are read alike: the end state of a chunk has no frame in a row.

Values are in units of a per-step reward: rewards are scaled by c = 1 - gamma (1 when gamma
= 1), so a value is a discount-weighted average reward rather than a sum over ~1 / (1 - gamma)
steps. The heads' last layer then starts near the right scale (a sum of -50 is 5e5 Adam steps
of a 3e-4 bias away), and rankings, argmaxes and standardized advantages are unchanged by the
positive factor.

``V_target`` is an exponential moving average of V (``ema_update``), kept in the model's
state like every weight, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from policies.config import ModelConfig

# ``Model.heads`` keys of the critic's parts.
VALUE, VALUE_TARGET, Q = "value", "value_target", "q"


def feature_size(cfg: ModelConfig) -> int:
    return cfg.d_model + cfg.proprio_pad


def mlp(cfg: ModelConfig, inputs: int) -> nn.Sequential:
    """inputs -> d_model -> d_model -> 1, SiLU between: every head on the critic's features."""
    return nn.Sequential(nn.Linear(inputs, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, cfg.d_model), nn.SiLU(),
                         nn.Linear(cfg.d_model, 1))


class ValueHead(nn.Module):
    """State features (B, F) -> V(s) (B,)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mlp = mlp(cfg, feature_size(cfg))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features).squeeze(-1)


class QEnsemble(nn.Module):
    """State features (B, F) and an action chunk (B, T, A), padding zeroed -> Q_k(s, a) (K, B)."""

    def __init__(self, cfg: ModelConfig, ensemble: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(mlp(cfg, feature_size(cfg) + cfg.chunk * cfg.action_pad)
                                     for _ in range(ensemble))

    def forward(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, actions.flatten(1)], dim=-1)
        return torch.stack([m(x).squeeze(-1) for m in self.members])


def build_heads(cfg: ModelConfig, seed: int | None = None) -> dict[str, nn.Module]:
    """The critic's heads for ``cfg.critic_ensemble`` Q members; ``seed`` fixes their initial
    weights without touching the caller's random stream (a checkpoint grows them this way)."""
    fork = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with fork:
        if seed is not None:
            torch.manual_seed(seed)
        value = ValueHead(cfg)
        q = QEnsemble(cfg, cfg.critic_ensemble)
    target = ValueHead(cfg)
    target.load_state_dict(value.state_dict())
    target.requires_grad_(False)  # moved only by ``ema_update``, never by an optimizer
    return {VALUE: value, VALUE_TARGET: target, Q: q}


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, rate: float) -> None:
    """target <- (1 - rate) * target + rate * source, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s.detach(), rate)


def discounted(rewards: torch.Tensor, steps: torch.Tensor, discount: float) -> torch.Tensor:
    """sum_t gamma^t r_t over the steps that ran: rewards (..., T), steps (...) -> (...)."""
    t = torch.arange(rewards.shape[-1], device=rewards.device)
    ran = t < steps[..., None]
    powers = torch.as_tensor(discount, dtype=rewards.dtype, device=rewards.device) ** t
    return (rewards * powers * ran).sum(-1)


def reward_scale(discount: float) -> float:
    """c: what a reward is multiplied by so that values are averages, not sums (module docstring)."""
    return 1.0 - discount if discount < 1 else 1.0


def td_target(rewards: torch.Tensor, steps: torch.Tensor, terminated: torch.Tensor, next_value: torch.Tensor,
              discount: float) -> torch.Tensor:
    """y = c * R_chunk + gamma^steps * (1 - terminated) * V(s'): rewards (..., T) of which the
    first ``steps`` ran, V(s') in value units. Bootstraps through a time limit, not through a
    termination."""
    carry = torch.as_tensor(discount, dtype=rewards.dtype, device=rewards.device) ** steps.to(rewards.dtype)
    alive = (~terminated.bool()).to(rewards.dtype)
    return reward_scale(discount) * discounted(rewards, steps, discount) + carry * alive * next_value.to(rewards.dtype)


def expectile(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Per entry |tau - 1[diff < 0]| * diff^2 (diff = target - prediction): tau > 0.5 leans
    towards the upper expectile, so V tracks the better actions' Q, not the average one."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return weight * diff ** 2
