"""A plain dense transformer: the reference the MoT is tested and benchmarked against.

Written independently of ``mot.py`` (nanoGPT style, one block = pre-norm attention + FFN)
with the same block structure as one MoT expert, so ``copy_expert`` can load one expert's
weights into it: a one-expert MoT must compute exactly what this computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DenseBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ffn_mult: int, qk_norm: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.RMSNorm(d_model, eps=1e-6)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.q_norm = nn.RMSNorm(d_model // n_heads, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(d_model // n_heads, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.norm2 = nn.RMSNorm(d_model, eps=1e-6)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_mult * d_model), nn.GELU(approximate="tanh"),
                                 nn.Linear(ffn_mult * d_model, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.n_heads, d // self.n_heads).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.ffn(self.norm2(x))


class DenseTransformer(nn.Module):
    def __init__(self, d_model: int, n_layers: int, n_heads: int, ffn_mult: int = 4, qk_norm: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(DenseBlock(d_model, n_heads, ffn_mult, qk_norm) for _ in range(n_layers))
        self.final_norm = nn.RMSNorm(d_model, eps=1e-6)

    @classmethod
    def like(cls, cfg) -> "DenseTransformer":
        """The dense model with one MoT expert's shape (``cfg`` is a ``ModelConfig``)."""
        return cls(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_mult, cfg.qk_norm)

    def copy_expert(self, expert: nn.Module) -> "DenseTransformer":
        """Load the weights of one ``policies.mot.Expert`` (same parameter names by design)."""
        self.load_state_dict(expert.state_dict())
        return self

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)
