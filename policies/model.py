"""``Model``: tokenizers -> MoT backbone -> heads, over a sequence of segments.

The model is driven by ``Item``s: one modality's ``Data``, clean or noisy (with its flow
time t). ``run`` tokenizes the items, lays them out as segments after an optional cached
prefix, and returns each item's hidden states. Everything above (the agent's loop, the
routes, training losses) is built from ``run``, ``sample`` and the tokenizers' heads.

Ownership: an expert owns its backbone weights, the tokenizers of the modalities routed to
it, and the heads it reads out (the return head belongs to ``cfg.return_expert``).
``freeze`` and ``add_expert`` act on all of that at once. The critic's heads
(``policies.critic``, present when ``cfg.critic_ensemble`` > 0) and the chunk ranker
(``policies.ranker``, when ``cfg.ranker``) belong to no expert: they read detached features
and train whenever the objective's critic (ranker) is on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from policies import critic, flow
from policies.config import ModelConfig
from policies.data import Data
from policies.layout import Layout, Segment
from policies.mot import KVCache, MoT
from policies.ranker import RANK, ChunkRanker
from policies.tokenizers import FlowTokenizer, Tokenizer, build_tokenizer


@dataclass
class Item:
    """One segment to run: ``modality`` data, clean (t = 1) or noisy at flow time ``t`` (B,)."""

    modality: str
    data: Data
    noisy: bool = False
    t: torch.Tensor | None = None


class ReturnHead(nn.Module):
    """Mean-pooled hidden states of an imagined future -> predicted return of the chunk."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.mlp(hidden.mean(dim=1)).squeeze(-1)


@dataclass
class _TextPrefix:
    """One text row's final hidden states (L, D), per-layer keys and values (H, L, Dh), layout."""

    hidden: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    layout: Layout


class Model(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = MoT(cfg)
        self.tokenizers = nn.ModuleDict({m: build_tokenizer(m, cfg) for m in cfg.active_modalities()})
        self.heads = nn.ModuleDict()
        if cfg.return_expert in cfg.experts:
            self.heads["return"] = ReturnHead(cfg)
        if cfg.critic_ensemble:
            self.heads.update(critic.build_heads(cfg))
        if cfg.ranker:
            self.heads[RANK] = ChunkRanker(cfg)
        self._text_prefixes: dict[bytes, _TextPrefix] | None = None  # see ``text_prefixes``

    @property
    def has_critic(self) -> bool:
        return critic.Q in self.heads

    def grow_critic(self, ensemble: int, seed: int = 0) -> None:
        """Add freshly initialised critic heads (``ensemble`` Q members, weights fixed by
        ``seed``) to a model that has none, e.g. one loaded from a checkpoint made before the
        critic existed; the config records them, so a checkpoint of this model has them."""
        if self.has_critic:
            raise ValueError(f"this model already has a critic ({self.cfg.critic_ensemble} Q heads)")
        if ensemble < 1:
            raise ValueError(f"a critic needs ensemble >= 1, got {ensemble}")
        if "proprio" not in self.tokenizers:
            raise ValueError("the critic reads the proprio item's hidden states, and this model has no proprio "
                             "tokenizer")
        self.cfg = self.backbone.cfg = replace(self.cfg, critic_ensemble=int(ensemble))
        device = self.device
        self.heads.update({k: v.to(device) for k, v in critic.build_heads(self.cfg, seed).items()})
        self.train(self.training)

    @property
    def has_ranker(self) -> bool:
        return RANK in self.heads

    def grow_ranker(self, seed: int = 0) -> None:
        """Add a freshly initialised chunk ranker (weights fixed by ``seed``, the caller's random
        stream untouched) to a model that has none; the config records it, as ``grow_critic``."""
        if self.has_ranker:
            raise ValueError("this model already has a chunk ranker")
        if "proprio" not in self.tokenizers:
            raise ValueError("the ranker reads the proprio item's hidden states, and this model has no proprio "
                             "tokenizer")
        self.cfg = self.backbone.cfg = replace(self.cfg, ranker=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.heads[RANK] = ChunkRanker(self.cfg).to(self.device)
        self.train(self.training)

    def update_critic_target(self, rate: float) -> None:
        """V_target <- (1 - rate) V_target + rate V (after each optimizer step)."""
        critic.ema_update(self.heads[critic.VALUE_TARGET], self.heads[critic.VALUE], rate)

    # ------------------------------------------------------------------ experts

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def frozen(self) -> set[str]:
        return self.backbone.frozen

    def expert_modules(self, expert: str) -> list[nn.Module]:
        """Every module whose weights belong to ``expert``."""
        if expert not in self.cfg.experts:
            raise ValueError(f"unknown expert {expert!r}; experts: {list(self.cfg.experts)}")
        mods: list[nn.Module] = [self.backbone.experts[expert]]
        mods += [tok for m, tok in self.tokenizers.items() if self.cfg.expert_of(m) == expert]
        if expert == self.cfg.return_expert and "return" in self.heads:
            mods.append(self.heads["return"])
        return mods

    def expert_parameters(self, expert: str) -> list[nn.Parameter]:
        return [p for mod in self.expert_modules(expert) for p in mod.parameters()]

    def freeze(self, expert: str) -> None:
        """No gradient, eval mode, and no autograd graph in the forward pass for ``expert``.

        Other experts still attend to its tokens' keys and values.
        """
        for mod in self.expert_modules(expert):
            mod.requires_grad_(False)
            mod.eval()
            for p in mod.parameters():
                p.grad = None  # a stale gradient would still move it in the next optimizer step
        self.backbone.frozen.add(expert)

    def unfreeze(self, expert: str) -> None:
        for mod in self.expert_modules(expert):
            mod.requires_grad_(True)
            mod.train(self.training)
        self.backbone.frozen.discard(expert)

    def train(self, mode: bool = True) -> "Model":
        super().train(mode)
        for expert in self.frozen:  # frozen experts stay in eval mode whatever the caller does
            for mod in self.expert_modules(expert):
                mod.eval()
        return self

    def add_expert(self, name: str, init_from: str | None = None,
                   modalities: dict[str, str] | None = None) -> None:
        """Grow the model by one expert (and the tokenizers of the modalities routed to it).

        ``init_from`` copies another expert's backbone weights (tokenizers are per modality
        and start fresh). ``modalities`` adds new ``{modality: expert}`` routes to the config;
        modalities the config already routes to ``name`` get their tokenizers now.
        """
        if name in self.cfg.experts:
            raise ValueError(f"expert {name!r} already exists")
        new_routes = tuple((m, e) for m, e in (modalities or {}).items())
        cfg = replace(self.cfg, experts=self.cfg.experts + (name,),
                      modalities=self.cfg.modalities + new_routes)
        self.backbone.add_expert(name, init_from)
        self.cfg = self.backbone.cfg = cfg
        device = self.device
        for m in cfg.active_modalities():
            if m not in self.tokenizers:
                self.tokenizers[m] = build_tokenizer(m, cfg).to(device)
        if name == cfg.return_expert and "return" not in self.heads:
            self.heads["return"] = ReturnHead(cfg).to(device)
        self.train(self.training)

    def _context(self, expert: str):
        return torch.no_grad() if expert in self.frozen else contextlib.nullcontext()

    # ------------------------------------------------------------------ running sequences

    def tokenizer(self, modality: str) -> Tokenizer:
        if modality not in self.tokenizers:
            raise ValueError(f"this model has no {modality!r} tokenizer (modalities: {list(self.tokenizers)}; "
                             f"experts: {list(self.cfg.experts)})")
        return self.tokenizers[modality]

    @contextlib.contextmanager
    def text_prefixes(self):
        """Inside, a run that starts with a clean text item after no cache reads that text's
        hidden states, keys and values from a store kept per distinct text row, while the
        text's expert is frozen (a trained one takes the ordinary path).

        Text comes first and attends to nothing after it, and a frozen expert computes under
        no_grad in eval mode: its text's keys and values are constants of the text row (to
        rounding, the same whether the row runs alone or in a batch). A training sequence is mostly its task
        text, one instruction repeated over every row of a task. The caller owns the scope: it
        must not change the frozen weights inside it (a learner's phase: ``Learner.train``).
        """
        outer, self._text_prefixes = self._text_prefixes, {}
        try:
            yield
        finally:
            self._text_prefixes = outer

    # Distinct texts kept in one scope; more are computed again (a bound, not a working set:
    # a phase sees one instruction per task).
    _TEXT_PREFIXES = 256

    def _prefix_of(self, text: Data) -> tuple[torch.Tensor, KVCache]:
        """The hidden states and the prefix cache of a batch of texts, from the store."""
        ids = text.values["ids"]
        rows, first, inverse = np.unique(ids.cpu().numpy(), axis=0, return_index=True, return_inverse=True)
        keys = [row.tobytes() for row in rows]
        store = self._text_prefixes
        missing = [i for i, key in enumerate(keys) if key not in store]
        if missing:
            if len(store) + len(missing) > self._TEXT_PREFIXES:
                store.clear()
                missing = list(range(len(keys)))
            pick = torch.as_tensor(first[missing], device=ids.device)
            (hidden,), cache = self.run([Item("text", text.map(lambda t: t[pick]))], keep=True)
            for j, i in enumerate(missing):
                store[keys[i]] = _TextPrefix(hidden[j], [k[j] for k in cache.keys], [v[j] for v in cache.values],
                                             cache.layout)
        found = [store[key] for key in keys]
        index = torch.as_tensor(inverse.reshape(-1), device=ids.device)
        stack = lambda parts: torch.stack(parts)[index]  # noqa: E731
        layers = range(self.cfg.n_layers)
        cache = KVCache([stack([f.keys[i] for f in found]) for i in layers],
                        [stack([f.values[i] for f in found]) for i in layers],
                        found[0].layout, self.tokenizer("text").padding(text))
        return stack([f.hidden for f in found]), cache

    def run(self, items: list[Item], cache: KVCache | None = None, keep: bool = False
            ) -> tuple[list[torch.Tensor], KVCache | None]:
        """Hidden states (B, n_i, D) of each item, laid out after ``cache``.

        With ``keep`` also returns the cache extended by these items (they must be clean).
        """
        if keep and any(it.noisy for it in items):
            raise ValueError("only clean segments may be cached: later segments never see noisy ones")
        if (self._text_prefixes is not None and cache is None and len(items) > 1 and items[0].modality == "text"
                and not items[0].noisy and self.cfg.expert_of("text") in self.frozen):
            text, cache = self._prefix_of(items[0].data)
            hidden, cache = self.run(items[1:], cache, keep)
            return [text, *hidden], cache
        tokens, segments, pads = [], [], []
        any_pad = False
        for it in items:
            tok = self.tokenizer(it.modality)
            expert = self.cfg.expert_of(it.modality)
            with self._context(expert):
                x = tok(it.data, it.t if it.noisy else None)
            pad = tok.padding(it.data)
            any_pad = any_pad or pad is not None
            tokens.append(x)
            pads.append(pad)
            segments.append(Segment(it.modality, expert, x.shape[1], noisy=it.noisy, causal=tok.causal))
        x = torch.cat(tokens, dim=1)
        key_mask = None
        if any_pad:
            key_mask = torch.cat([torch.ones(x.shape[0], t.shape[1], dtype=torch.bool, device=x.device)
                                  if p is None else p for p, t in zip(pads, tokens)], dim=1)
        layout = Layout(tuple(segments))
        if cache is not None:
            layout = cache.layout + layout
        hidden, new_cache = self.backbone(x, layout, cache, key_mask, keep)
        return list(hidden.split([t.shape[1] for t in tokens], dim=1)), new_cache

    def velocity(self, modality: str, x_t: Data, t: torch.Tensor, before: list[Item] = (),
                 cache: KVCache | None = None) -> dict[str, torch.Tensor]:
        """The predicted flow velocity of a noisy ``modality`` segment after ``before`` / ``cache``."""
        hidden, _ = self.run([*before, Item(modality, x_t, noisy=True, t=t)], cache)
        tok = self.tokenizer(modality)
        assert isinstance(tok, FlowTokenizer)
        return tok.velocity(hidden[-1], x_t)

    @torch.no_grad()
    def sample(self, modality: str, template: Data, cache: KVCache | None = None, before: list[Item] = (),
               steps: int | None = None, generator: torch.Generator | None = None) -> Data:
        """Generate a ``modality`` segment by Euler-integrating the flow (``cfg.flow_steps`` by default).

        ``template`` gives shapes and padding masks. Conditioning is the cached prefix plus
        ``before`` (clean items, recomputed every step; prefer caching them).
        """
        if not isinstance(self.tokenizer(modality), FlowTokenizer):
            raise ValueError(f"{modality!r} is not generated by flow matching")
        if cache is None and before:
            _, cache = self.run(list(before), keep=True)
        elif before:
            _, cache = self.run(list(before), cache, keep=True)
        if cache is not None:
            cache = cache.with_room(self.tokenizer(modality).length(template))
        return flow.euler_sample(lambda x, t: self.velocity(modality, x, t, cache=cache), template,
                                 steps or self.cfg.flow_steps, generator)

    def flow_target(self, modality: str, data: Data, generator: torch.Generator | None = None,
                    t: torch.Tensor | None = None, x0: Data | None = None) -> tuple[Item, Data, Data]:
        """A training pair for ``data``: the noisy item x_t, plus x0 (noise) and x1 (the data).

        ``x0`` and ``t`` are drawn from ``generator`` unless the caller supplies them (e.g.
        ``flow.row_noise``, which makes each row's noise independent of its batch).
        """
        x1 = data.zeroed()
        x0 = flow.noise_like(x1, generator) if x0 is None else x1.with_values(x0.values).zeroed()
        if t is None:
            t = flow.sample_time(x1.batch, x1.device, generator)
        return Item(modality, flow.interpolate(x0, x1, t), noisy=True, t=t), x0, x1

    def flow_loss(self, modality: str, hidden: torch.Tensor, x0: Data, x1: Data,
                  weights: torch.Tensor | None = None,
                  denominators: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        tok = self.tokenizer(modality)
        assert isinstance(tok, FlowTokenizer)
        return flow.flow_loss(tok.velocity(hidden, x1), x0, x1, weights, denominators)
