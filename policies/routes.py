"""One model, many problems: a route picks input modalities and one output modality.

Every route runs through the same weights: the inputs are clean segments in the config's
modality order, the output is one segment generated after them (next-token prediction for
text, flow matching for everything else). A checkpoint supports a route when it has a
tokenizer (hence an expert) for every modality the route touches.

    generate(model, inputs={"text": ..., "frame": ..., "proprio": ...}, output="action")  # the policy
    route_loss(model, inputs=..., output="future", target=...)               # train any route
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from policies.config import ModelConfig
from policies.data import BOS, EOS, PAD, Data, decode_text
from policies.model import Item, Model
from policies.tokenizers import TOKENIZERS


@dataclass(frozen=True)
class Route:
    name: str
    inputs: tuple[str, ...]
    output: str
    description: str
    stage: str  # the pretraining stage whose objective trains it (``policies.pretrain.objectives.OBJECTIVES``)
    metric: str  # the key of the pretraining report's metrics that evaluates it (``metrics.json``)


# Only routes pretraining trains and its report evaluates are listed. Captioning (frame -> text)
# and text-free inverse dynamics were listed without either; they are gone (docs/policies.md,
# "Routes", says why).
ROUTES: tuple[Route, ...] = (
    Route("policy", ("text", "frame", "proprio"), "action", "task + observation -> action chunk",
          "action", "action_mse"),
    Route("world_model", ("text", "frame", "proprio", "command"), "future",
          "observation + commanded actions -> imagined future", "video", "imagination_error"),
    Route("imagine_act", ("text", "frame", "proprio", "future"), "action",
          "observation + imagined future -> actions (the agent's Act step)", "action", "action_mse_given_future"),
    Route("frame_generation", ("text", "proprio"), "image", "caption + proprio -> frame", "image", "frame_mse"),
)


def route(name: str) -> Route:
    for r in ROUTES:
        if r.name == name:
            return r
    raise ValueError(f"unknown route {name!r}; known: {[r.name for r in ROUTES]}")


def missing_modalities(r: Route, cfg: ModelConfig) -> list[str]:
    """Modalities of route ``r`` that a model with config ``cfg`` cannot read or write."""
    active = cfg.active_modalities()
    return [m for m in (*r.inputs, r.output) if m not in active or m not in TOKENIZERS]


def route_table(cfg: ModelConfig) -> list[dict]:
    """Every known route, with the experts it uses and whether ``cfg`` supports it."""
    rows = []
    for r in ROUTES:
        missing = missing_modalities(r, cfg)
        experts = []
        for m in (*r.inputs, r.output):
            e = dict(cfg.modalities).get(m, "?")
            if e not in experts:
                experts.append(e)
        rows.append({"route": r.name, "inputs": list(r.inputs), "output": r.output, "experts": experts,
                     "supported": not missing, "missing": missing, "description": r.description,
                     "trained": r.stage, "metric": r.metric})
    return rows


def _ordered_inputs(model: Model, inputs: dict[str, Data], output: str) -> list[Item]:
    if output in inputs:
        raise ValueError(f"{output!r} is both an input and the output")
    order = [m for m, _ in model.cfg.modalities]
    unknown = [m for m in inputs if m not in order]
    if unknown:
        raise ValueError(f"unknown input modality {unknown}; configured: {order}")
    return [Item(m, inputs[m]) for m in sorted(inputs, key=order.index)]


@torch.no_grad()
def generate(model: Model, inputs: dict[str, Data], output: str, template: Data | None = None,
             steps: int | None = None, generator: torch.Generator | None = None,
             max_len: int | None = None) -> Data | list[str]:
    """Generate ``output`` from ``inputs`` with the one model.

    Flow outputs need a ``template`` (shapes and padding masks of the output) and return
    ``Data``; text output is decoded greedily from BOS to EOS and returned as strings.
    """
    items = _ordered_inputs(model, inputs, output)
    tok = model.tokenizer(output)
    cache = model.run(items, keep=True)[1] if items else None
    if tok.kind == "text":
        if not items:
            raise ValueError("text generation needs at least one input")
        return _greedy_text(model, cache, max_len or model.cfg.text_max)
    if template is None:
        raise ValueError(f"generating {output!r} needs a template (its shapes and padding masks)")
    return model.sample(output, template, cache, steps=steps, generator=generator)


def _greedy_text(model: Model, cache, max_len: int) -> list[str]:
    b = cache.batch
    ids = torch.full((b, 1), BOS, dtype=torch.long, device=model.device)
    done = torch.zeros(b, dtype=torch.bool, device=model.device)
    while ids.shape[1] < max_len and not bool(done.all()):
        (hidden,), _ = model.run([Item("text", Data({"ids": ids}))], cache)
        nxt = model.tokenizer("text").logits(hidden[:, -1]).argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        done = done | (nxt == EOS)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    return decode_text(ids)


def route_loss(model: Model, inputs: dict[str, Data], output: str, target: Data,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """The training loss of one route: masked flow matching, or next-byte cross-entropy."""
    items = _ordered_inputs(model, inputs, output)
    tok = model.tokenizer(output)
    if tok.kind == "text":
        hidden, _ = model.run([*items, Item("text", target)])
        logits = tok.logits(hidden[-1][:, :-1])
        labels = target.values["ids"][:, 1:].masked_fill(~target.masks["ids"][:, 1:], -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    noisy, x0, x1 = model.flow_target(output, target, generator)
    hidden, _ = model.run([*items, noisy])
    return model.flow_loss(output, hidden[-1], x0, x1)
