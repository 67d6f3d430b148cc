"""What pretraining added to the model: proprio standardization and the ``command`` input."""

from dataclasses import replace

import pytest
import torch

from policies import checkpoint
from policies.config import DEFAULT_MODALITIES, SIZES
from policies.data import PAD, Data, encode_text
from policies.model import Item, Model
from policies.routes import route_loss

TINY = SIZES["tiny"]
CFG = replace(TINY, modalities=DEFAULT_MODALITIES + (("command", "video"),))


def _proprio(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(TINY.proprio_pad) < 5).expand(batch, 1, -1)
    return Data({"proprio": torch.randn(batch, 2, TINY.proprio_pad, generator=g)}, {"proprio": mask})


def test_proprio_normalization_starts_as_the_identity_and_is_saved(tmp_path):
    torch.manual_seed(0)
    model = Model(TINY)
    tok = model.tokenizers["proprio"]
    data = _proprio()
    before = tok(data)
    assert torch.equal(tok.shift, torch.zeros(TINY.proprio_pad)) and torch.equal(tok.scale, torch.ones(TINY.proprio_pad))
    shift, scale = torch.linspace(-1, 1, TINY.proprio_pad), torch.linspace(0.1, 2, TINY.proprio_pad)
    tok.set_normalization(shift, scale)
    standardized = Data({"proprio": (data.values["proprio"] - shift) / scale}, data.masks)
    tok.set_normalization(torch.zeros(TINY.proprio_pad), torch.ones(TINY.proprio_pad))
    expected = tok(standardized)
    tok.set_normalization(shift, scale)
    torch.testing.assert_close(tok(data), expected)
    assert not torch.allclose(tok(data), before)
    loaded = checkpoint.load(checkpoint.save(model, tmp_path / "ckpt"))
    assert torch.equal(loaded.tokenizers["proprio"].scale, scale)
    with pytest.raises(ValueError, match="positive"):
        tok.set_normalization(shift, torch.zeros(TINY.proprio_pad))


def test_the_command_modality_belongs_to_the_video_expert():
    torch.manual_seed(0)
    model = Model(replace(CFG, experts=("understand", "video")))
    assert "command" in model.tokenizers and "action" not in model.tokenizers
    assert any(p is q for p in model.expert_parameters("video") for q in model.tokenizers["command"].parameters())
    amask = (torch.arange(TINY.action_pad) < 2).expand(3, 1, -1)
    command = Data({"action": torch.rand(3, TINY.chunk, TINY.action_pad) * 2 - 1}, {"action": amask})
    future = Data({"proprio": torch.randn(3, TINY.chunk, TINY.proprio_pad)}, _proprio().masks)
    model.freeze("understand")
    loss = route_loss(model, {"proprio": _proprio(), "command": command}, "future", future)
    loss.backward()
    assert model.tokenizers["command"].proj.weight.grad is not None
    # The imagined future reads the commanded actions.
    t = torch.full((3,), 0.5)
    run = lambda c: model.run([Item("proprio", _proprio()), Item("command", c), Item("future", future, True, t)])[0][-1]  # noqa: E731
    other = Data({"action": -command.values["action"]}, command.masks)
    assert not torch.allclose(run(command), run(other))


def test_text_is_encoded_per_row_and_only_real_padding_is_masked():
    tok = Model(SIZES["tiny"]).tokenizer("text")
    mixed = encode_text(["go", "reach", "go"], SIZES["tiny"].text_max)
    ids = mixed.values["ids"]
    assert ids[0].tolist() == ids[2].tolist() and ids[0, 1:3].tolist() == list(b"go")
    assert ids[1, 1:6].tolist() == list(b"reach") and (ids[0, 4:] == PAD).all()
    assert torch.equal(tok.padding(mixed), ids != PAD) and not tok.padding(mixed)[0, -1]
    # One instruction for the whole batch: nothing is padding, so attention needs no key mask.
    assert tok.padding(encode_text(["reach"] * 4, SIZES["tiny"].text_max)) is None
