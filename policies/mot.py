"""The Mixture-of-Transformers backbone.

Each expert owns every weight its tokens touch: per layer, the norms, the Q/K/V and output
projections, QK-norm and the FFN; plus a final norm. Attention owns nothing: per layer,
one ``scaled_dot_product_attention`` over all tokens of the sequence, with the layout's
mask, so a token of any expert reads the keys and values of every other expert.

Tokens reach their expert by their position's modality (the layout says which expert each
position belongs to); there is no learned router. Per layer and per expert we gather that
expert's tokens, run its projections, and scatter the results back into a zero-filled
buffer the size of the sequence. When an expert's tokens are one contiguous run, and the
runs come in order (the usual case: prefix, future, action), the gather is a slice and the
scatter a concatenation, which computes the same thing with fewer copies.

A frozen expert computes under ``torch.no_grad()``: its weights get no gradient and no
graph is kept for its tokens, yet its keys and values still enter the shared attention,
so the experts being trained read everything the frozen ones know.

A ``KVCache`` holds the keys and values of a clean prefix; later segments attend to it
without recomputing it, and ``expand`` shares one prefix among many candidates.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from policies.config import ModelConfig
from policies.layout import Layout


class ExpertBlock(nn.Module):
    """One expert's weights in one layer (pre-norm attention + FFN)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, hd = cfg.d_model, cfg.head_dim
        self.n_heads = cfg.n_heads
        self.norm1 = nn.RMSNorm(d, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        # QK-norm keeps attention logits bounded when experts with different statistics
        # meet in one softmax.
        self.q_norm = nn.RMSNorm(hd, eps=1e-6) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(hd, eps=1e-6) if cfg.qk_norm else nn.Identity()
        self.proj = nn.Linear(d, d, bias=False)
        self.norm2 = nn.RMSNorm(d, eps=1e-6)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_mult * d), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_mult * d, d))
        self.drop = nn.Dropout(cfg.dropout)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, n, D) -> q, k, v of shape (B, n, H, Dh)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.n_heads, d // self.n_heads).unbind(2)
        return self.q_norm(q), self.k_norm(k), v

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual output projection and FFN; ``attended`` is (B, n, D)."""
        x = x + self.drop(self.proj(attended))
        return x + self.drop(self.ffn(self.norm2(x)))


class Expert(nn.Module):
    """All of one modality expert's backbone weights."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ExpertBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.RMSNorm(cfg.d_model, eps=1e-6)


@dataclass(frozen=True)
class Group:
    """The positions (of the tokens being computed) that belong to one expert."""

    expert: str
    start: int
    stop: int
    index: tuple[int, ...] | None  # None when the positions are the run start:stop

    def gather(self, x: torch.Tensor, total: int) -> torch.Tensor:
        if self.index is None:
            return x if (self.start, self.stop) == (0, total) else x[:, self.start:self.stop]
        return x.index_select(1, self.positions(x.device))

    def positions(self, device: torch.device) -> torch.Tensor:
        return _positions(self.start, self.stop, self.index, str(device))


@dataclass(frozen=True)
class Routing:
    groups: tuple[Group, ...]
    length: int
    in_order: bool  # groups are contiguous runs that tile 0..length in order: scatter = cat

    def scatter(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Per-group tensors (B, n_g, ...) back to sequence order (B, length, ...)."""
        if self.in_order:
            return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        first = parts[0]
        out = first.new_zeros((first.shape[0], self.length, *first.shape[2:]))
        for group, part in zip(self.groups, parts):
            out = out.index_copy(1, group.positions(out.device), part)
        return out


@lru_cache(maxsize=1024)
def _positions(start: int, stop: int, index: tuple[int, ...] | None, device: str) -> torch.Tensor:
    """Index tensors are made once per layout and device, not once per layer."""
    return torch.arange(start, stop, device=device) if index is None else torch.tensor(index, device=device)


@lru_cache(maxsize=512)
def routing_for(experts: tuple[str, ...]) -> Routing:
    """Group token positions (given as the expert of each position) by expert."""
    positions: dict[str, list[int]] = {}
    for pos, name in enumerate(experts):
        positions.setdefault(name, []).append(pos)
    groups = []
    for name, pos in positions.items():
        contiguous = pos == list(range(pos[0], pos[0] + len(pos)))
        groups.append(Group(name, pos[0], pos[-1] + 1, None if contiguous else tuple(pos)))
    in_order = all(g.index is None for g in groups) and all(
        a.stop == b.start for a, b in zip(groups, groups[1:]))
    return Routing(tuple(groups), len(experts), in_order)


@dataclass
class KVCache:
    """Keys/values of a clean prefix, per layer, and the layout they came from."""

    keys: list[torch.Tensor]    # per layer (B, H, L, Dh)
    values: list[torch.Tensor]
    layout: Layout
    key_mask: torch.Tensor | None = None  # (B, L) False at padding tokens

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    def __len__(self) -> int:
        return len(self.layout)

    def with_room(self, n: int) -> "KVCache":
        """The same prefix in buffers with ``n`` free positions after it. A run of exactly n
        tokens (not kept) writes its keys and values there instead of concatenating a copy
        of the prefix: a sampler's every step runs the same segment after the same prefix."""
        grow = lambda t: torch.cat([t, t.new_empty(*t.shape[:2], n, t.shape[3])], dim=2)  # noqa: E731
        return KVCache([grow(k) for k in self.keys], [grow(v) for v in self.values], self.layout, self.key_mask)

    def expand(self, n: int) -> "KVCache":
        """Each sequence repeated n times (b0, b0, ..., b1, b1, ...): candidates share a prefix."""
        if n == 1:
            return self
        rep = lambda t: t.repeat_interleave(n, dim=0)  # noqa: E731
        return KVCache([rep(k) for k in self.keys], [rep(v) for v in self.values], self.layout,
                       None if self.key_mask is None else rep(self.key_mask))


def attention_mask(layout: Layout, start: int, key_mask: torch.Tensor | None,
                   device: torch.device) -> torch.Tensor:
    """Mask rows for positions ``start:`` of ``layout``: (Lq, Lk), or (B, 1, Lq, Lk) with padding.

    A padding key is hidden from every query but itself, so no row is ever empty.
    """
    rows = layout.rows(start, device)
    if key_mask is None:
        return rows
    lq, lk = rows.shape
    own = torch.zeros(lq, lk, dtype=torch.bool, device=device)
    own[torch.arange(lq), torch.arange(start, lk)] = True
    return (rows[None] & key_mask[:, None, :] | own[None])[:, None]


class MoT(nn.Module):
    """The backbone: ``experts[name]`` holds every weight of expert ``name``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.experts = nn.ModuleDict({name: Expert(cfg) for name in cfg.experts})
        self.frozen: set[str] = set()

    def add_expert(self, name: str, init_from: str | None = None) -> None:
        if name in self.experts:
            raise ValueError(f"expert {name!r} already exists")
        expert = Expert(self.cfg).to(next(self.parameters()).device)
        if init_from is not None:
            if init_from not in self.experts:
                raise ValueError(f"cannot init {name!r} from unknown expert {init_from!r}")
            expert.load_state_dict(self.experts[init_from].state_dict())
        self.experts[name] = expert

    def _context(self, expert: str):
        return torch.no_grad() if expert in self.frozen else contextlib.nullcontext()

    def forward(self, x: torch.Tensor, layout: Layout, cache: KVCache | None = None,
                key_mask: torch.Tensor | None = None, keep: bool = False
                ) -> tuple[torch.Tensor, KVCache | None]:
        """Run the tokens ``x`` (B, n, D) that fill the positions of ``layout`` after ``cache``.

        ``layout`` covers the cached prefix and the new tokens; ``key_mask`` (B, n) marks the
        new tokens that are padding (False), or is None. With ``keep`` the returned cache
        covers the whole layout. Returns the final-normed hidden states (B, n, D).
        """
        start = 0 if cache is None else len(cache)
        if x.shape[1] != len(layout) - start:
            raise ValueError(f"{x.shape[1]} tokens for a layout of {len(layout)} after a cache of {start}")
        if cache is not None and cache.layout.segments != layout.segments[:len(cache.layout.segments)]:
            raise ValueError("the layout does not start with the cached layout")
        missing = {s.expert for s in layout.segments} - set(self.experts)
        if missing:
            raise ValueError(f"layout uses expert(s) {sorted(missing)} this model does not have")
        key_mask = _join_key_masks(cache, key_mask, x)
        mask = attention_mask(layout, start, key_mask, x.device)
        routing = routing_for(layout.experts()[start:])
        n = x.shape[1]
        keys, values = [], []
        for i in range(self.cfg.n_layers):
            qs, ks, vs = [], [], []
            for g in routing.groups:
                with self._context(g.expert):
                    q, k, v = self.experts[g.expert].blocks[i].qkv_heads(g.gather(x, n))
                qs.append(q)
                ks.append(k)
                vs.append(v)
            q, k, v = (routing.scatter(t).transpose(1, 2) for t in (qs, ks, vs))  # (B, H, n, Dh)
            if cache is not None and not keep and cache.keys[i].shape[2] == start + n:  # room for these tokens
                cache.keys[i][:, :, start:] = k
                cache.values[i][:, :, start:] = v
                k, v = cache.keys[i], cache.values[i]
            elif cache is not None:
                k = torch.cat([cache.keys[i][:, :, :start], k], dim=2)
                v = torch.cat([cache.values[i][:, :, :start], v], dim=2)
            if keep:
                keys.append(k)
                values.append(v)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            attended = attended.transpose(1, 2).reshape(x.shape)
            outs = []
            for g in routing.groups:
                with self._context(g.expert):
                    outs.append(self.experts[g.expert].blocks[i].finish(g.gather(x, n), g.gather(attended, n)))
            x = routing.scatter(outs)
        outs = []
        for g in routing.groups:
            with self._context(g.expert):
                outs.append(self.experts[g.expert].final_norm(g.gather(x, n)))
        hidden = routing.scatter(outs)
        return hidden, (KVCache(keys, values, layout, key_mask) if keep else None)


def _join_key_masks(cache: KVCache | None, new: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """The padding mask over cached + new keys, or None when nothing is padding."""
    old = None if cache is None else cache.key_mask
    if old is None and new is None:
        return None
    b, n = x.shape[:2]
    if old is None and cache is not None:
        old = torch.ones(b, len(cache), dtype=torch.bool, device=x.device)
    if new is None:
        new = torch.ones(b, n, dtype=torch.bool, device=x.device)
    return new if old is None else torch.cat([old, new.to(torch.bool)], dim=1)
