"""The chunk ranker: scores one state's candidate chunks as the training sim ranked them.

Planning without the sim imagines n futures, acts on each, and must pick one. What the sim
picks by, when it runs every candidate (``choose=sim``), is each chunk's reward, or with the
look-ahead (``lookahead_chunks``) the reward of each candidate's chunk and of the policy's
chunks after it; the ranker learns that order from the candidates the sim ran, all n of every
row alike:

    S(s, a)  = MLP([critic features of s, the chunk a flattened, padded dims zeroed])
    z_c      = (G_c - mean_c G) / std_c G       G_c: candidate c's reward (``flywheel.objective.sibling_scores``)
    L_rank   = sum over rows and candidates of (S(s, a_c) - mean_c S(s, a_c) - z_c)^2 / (N n)

Only differences between one state's candidates are learned (the per-row mean is taken out of
the scores as of the targets): planning compares candidates of one state, never states, and
a chunk's reward varies far more from state to state than among a state's candidates. It reads
the state through the critic's detached features (``policies.critic``), so it never moves
the backbone: a run with the ranker on trains the same policy as one without it.

Why not the critic's Q or the return head, which planning used before: each was trained on
something other than this ranking (Q on TD targets bootstrapped from a noisy V, the return
head on a state's return-to-go or on the candidates a softmax drew, mostly the good ones) and
neither made choosing among candidates pay (docs/rl-core.md "A ranker for planning").
"""

from __future__ import annotations

import torch
from torch import nn

from policies.config import ModelConfig
from policies.critic import feature_size, mlp

RANK = "rank"  # its ``Model.heads`` key, and its loss term's name


class ChunkRanker(nn.Module):
    """State features (B, F) and candidate chunks (B, n, T, A), padding zeroed -> scores (B, n)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mlp = mlp(cfg, feature_size(cfg) + cfg.chunk * cfg.action_pad)

    def forward(self, features: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
        b, n = chunks.shape[:2]
        x = torch.cat([features[:, None].expand(b, n, -1), chunks.flatten(2)], dim=-1)
        return self.mlp(x).squeeze(-1)


def ranking_loss(scores: torch.Tensor, targets: torch.Tensor, rows_total: int) -> torch.Tensor:
    """``L_rank``'s share of these (b, n) rows, divided by the global batch's ``rows_total`` * n."""
    centred = scores - scores.mean(dim=1, keepdim=True)
    return ((centred - targets.to(scores.dtype)) ** 2).sum() / (rows_total * scores.shape[1])
