"""Freezing and growing: frozen experts stay bit-identical, new experts learn and read them."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from policies.config import DEFAULT_EXPERTS, DEFAULT_MODALITIES, SIZES
from policies.data import Data, encode_text
from policies.model import Item, Model
from policies.routes import generate, route_loss
from policies.tokenizers import TOKENIZERS, Tokenizer

TINY = SIZES["tiny"]


def _inputs(batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    pmask = (torch.arange(TINY.proprio_pad) < 6).expand(batch, 1, -1)
    amask = (torch.arange(TINY.action_pad) < 3).expand(batch, 1, -1)
    inputs = {
        "text": encode_text(["reach"] * batch, TINY.text_max),
        "proprio": Data({"proprio": torch.randn(batch, 2, TINY.proprio_pad, generator=g)}, {"proprio": pmask}),
        "future": Data({"proprio": torch.randn(batch, TINY.chunk, TINY.proprio_pad, generator=g)}, {"proprio": pmask}),
    }
    target = Data({"action": torch.rand(batch, TINY.chunk, TINY.action_pad, generator=g) * 2 - 1}, {"action": amask})
    return inputs, target


def _snapshot(params):
    return [p.detach().clone() for p in params]


def test_training_a_new_expert_leaves_frozen_experts_bit_identical():
    torch.manual_seed(0)
    model = Model(replace(TINY, experts=("understand", "video")))
    model.freeze("understand")
    model.freeze("video")
    model.add_expert("action")
    assert "action" in model.tokenizers
    frozen = [p for e in ("understand", "video") for p in model.expert_parameters(e)]
    new = model.expert_parameters("action")
    frozen_before, new_before = _snapshot(frozen), _snapshot(new)
    # Every parameter goes to the optimizer, weight decay on: freezing alone must protect them.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    inputs, target = _inputs()
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        opt.zero_grad()
        loss = route_loss(model, inputs, "action", target, generator=g)
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in frozen)
    assert all(torch.equal(a, b) for a, b in zip(frozen, frozen_before))
    assert all(p.requires_grad for p in new)
    changed = sum(not torch.equal(a, b) for a, b in zip(new, new_before))
    assert changed == len(new), f"only {changed} of {len(new)} new-expert tensors changed"
    # Frozen experts stay in eval mode even though the model is in training mode.
    assert model.training and not model.backbone.experts["understand"].training
    assert not model.tokenizers["text"].training


def test_the_new_expert_reads_the_frozen_experts_tokens():
    torch.manual_seed(0)
    model = Model(replace(TINY, experts=("understand", "video")))
    model.freeze("understand")
    model.freeze("video")
    model.add_expert("action")
    inputs, target = _inputs()
    t = torch.full((4,), 0.5)
    items = [Item("text", inputs["text"]), Item("proprio", inputs["proprio"]), Item("future", inputs["future"])]
    graph = {}
    for name in ("understand", "video", "action"):
        model.backbone.experts[name].final_norm.register_forward_hook(
            lambda mod, args, out, name=name: graph.__setitem__(name, out.requires_grad))
    hidden, _ = model.run([*items, Item("action", target, noisy=True, t=t)])
    # No autograd graph is kept for frozen experts' tokens; the new expert's tokens have one.
    assert graph == {"understand": False, "video": False, "action": True}
    other, _ = _inputs(seed=5)
    for name in ("proprio", "future"):  # an understand input, a video input
        swapped = [Item(it.modality, other[name] if it.modality == name else it.data) for it in items]
        changed, _ = model.run([*swapped, Item("action", target, noisy=True, t=t)])
        assert not torch.allclose(changed[3], hidden[3]), f"action tokens ignore the frozen {name} tokens"


def test_add_expert_can_start_from_another_experts_weights():
    torch.manual_seed(0)
    model = Model(replace(TINY, experts=("understand", "action")))
    model.add_expert("video", init_from="action")
    src, dst = model.backbone.experts["action"].state_dict(), model.backbone.experts["video"].state_dict()
    assert all(torch.equal(src[k], dst[k]) for k in src)
    with torch.no_grad():
        model.backbone.experts["video"].blocks[0].qkv.weight.add_(1.0)
    assert not torch.equal(model.backbone.experts["action"].blocks[0].qkv.weight,
                           model.backbone.experts["video"].blocks[0].qkv.weight)
    with pytest.raises(ValueError, match="already exists"):
        model.add_expert("video")


class TactileTokenizer(Tokenizer):
    """A fifth modality defined entirely in the test: 12 taxel pressures per step."""

    modality = "tactile"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.proj = nn.Linear(12, cfg.d_model)

    def length(self, data):
        return data.values["tactile"].shape[1]

    def forward(self, data, t=None):
        return self.proj(data.values["tactile"])


@pytest.mark.parametrize("how", ["config", "add_expert"])
def test_a_fifth_expert_is_configuration_plus_a_tokenizer(monkeypatch, how):
    monkeypatch.setitem(TOKENIZERS, "tactile", TactileTokenizer)
    torch.manual_seed(0)
    if how == "config":
        cfg = replace(TINY, experts=DEFAULT_EXPERTS + ("tactile",),
                      modalities=DEFAULT_MODALITIES + (("tactile", "tactile"),))
        model = Model(cfg)
    else:
        model = Model(TINY)
        model.add_expert("tactile", modalities={"tactile": "tactile"})
    assert "tactile" in model.backbone.experts and "tactile" in model.tokenizers
    inputs, target = _inputs(batch=2)
    touch = Data({"tactile": torch.rand(2, 3, 12)})
    template = target.with_values({"action": torch.zeros_like(target.values["action"])})

    def act(tactile):
        g = torch.Generator().manual_seed(0)
        return generate(model, {"proprio": inputs["proprio"], "tactile": tactile}, "action", template,
                        generator=g).values["action"]

    a, b = act(touch), act(Data({"tactile": touch.values["tactile"] + 1.0}))
    assert a.shape == (2, TINY.chunk, TINY.action_pad)
    assert not torch.allclose(a, b)  # the action expert reads the tactile expert's tokens
    route_loss(model, {"tactile": touch}, "action", target).backward()
    assert model.tokenizers["tactile"].proj.weight.grad is not None
