"""Attention-mask semantics: causal across segments, bidirectional inside, noisy segments private."""

import torch

from policies.config import SIZES
from policies.data import Data, encode_text
from policies.layout import Layout, Segment
from policies.model import Item, Model

TEXT, FRAME, NOISY_FUT, CLEAN_FUT, ACTION = range(5)
LAYOUT = Layout((
    Segment("text", "understand", 3, causal=True),
    Segment("frame", "understand", 4),
    Segment("future", "video", 3, noisy=True),
    Segment("future", "video", 3),
    Segment("action", "action", 2, noisy=True),
))


def _block(mask, i, j):
    return mask[LAYOUT.span(i), LAYOUT.span(j)]


def test_mask_is_causal_across_segments_and_bidirectional_inside():
    mask = LAYOUT.mask()
    assert mask.shape == (15, 15) and mask.dtype == torch.bool
    for i in range(5):
        for j in range(i + 1, 5):
            assert not _block(mask, i, j).any(), f"segment {i} sees later segment {j}"
    for seg in (FRAME, NOISY_FUT, CLEAN_FUT, ACTION):
        assert _block(mask, seg, seg).all(), f"segment {seg} is not bidirectional inside"
    assert torch.equal(_block(mask, TEXT, TEXT), torch.ones(3, 3, dtype=torch.bool).tril())  # text: next-token
    assert _block(mask, FRAME, TEXT).all() and _block(mask, ACTION, FRAME).all()


def test_noisy_segments_are_invisible_to_later_segments():
    mask = LAYOUT.mask()
    assert _block(mask, NOISY_FUT, FRAME).all()            # a noisy segment reads the clean prefix
    assert not _block(mask, CLEAN_FUT, NOISY_FUT).any()    # but nothing later reads it
    assert not _block(mask, ACTION, NOISY_FUT).any()
    assert _block(mask, ACTION, CLEAN_FUT).all()           # actions read the clean future
    # The action (noisy, last) is seen by nobody else; nothing follows it.
    assert not mask[:13, 13:].any()


def test_mask_is_built_once_per_layout():
    same = Layout(tuple(LAYOUT.segments))
    assert same.mask() is LAYOUT.mask()
    assert torch.equal(LAYOUT.rows(7), LAYOUT.mask()[7:])


def _model_inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = SIZES["tiny"]
    pmask = torch.ones(batch, 1, cfg.proprio_pad, dtype=torch.bool)
    amask = torch.ones(batch, 1, cfg.action_pad, dtype=torch.bool)
    text = encode_text(["push the block"] * batch, cfg.text_max)
    frame = Data({"frame": torch.rand(batch, 16, 16, 3, generator=g) * 2 - 1})
    future = Data({"proprio": torch.randn(batch, cfg.chunk, cfg.proprio_pad, generator=g)}, {"proprio": pmask})
    action = Data({"action": torch.randn(batch, cfg.chunk, cfg.action_pad, generator=g)}, {"action": amask})
    return text, frame, future, action


def _run(model, text, frame, noisy_future, clean_future, action):
    t = torch.full((text.batch,), 0.3)
    items = [Item("text", text), Item("frame", frame), Item("future", noisy_future, noisy=True, t=t),
             Item("future", clean_future), Item("action", action, noisy=True, t=t)]
    hidden, _ = model.run(items)
    return hidden


def test_through_the_model_prefix_outputs_ignore_later_segments():
    torch.manual_seed(0)
    model = Model(SIZES["tiny"]).eval()
    text, frame, future, action = _model_inputs()
    _, _, other_future, other_action = _model_inputs(seed=1)
    base = _run(model, text, frame, future, future, action)
    changed = _run(model, text, frame, other_future, other_future, other_action)
    assert torch.equal(base[TEXT], changed[TEXT]) and torch.equal(base[FRAME], changed[FRAME])
    assert not torch.allclose(base[CLEAN_FUT], changed[CLEAN_FUT])


def test_through_the_model_tokens_of_one_segment_see_each_other():
    torch.manual_seed(0)
    model = Model(SIZES["tiny"]).eval()
    text, frame, future, action = _model_inputs()
    base = _run(model, text, frame, future, future, action)
    last_step = action.with_values({"action": action.values["action"].clone()})
    last_step.values["action"][:, -1] += 1.0  # change only the last action step
    changed = _run(model, text, frame, future, future, last_step)
    # The first action token changed although only a later token of its segment did.
    assert not torch.allclose(base[ACTION][:, 0], changed[ACTION][:, 0])


def test_through_the_model_a_noisy_segment_does_not_leak():
    torch.manual_seed(0)
    model = Model(SIZES["tiny"]).eval()
    text, frame, future, action = _model_inputs()
    _, _, other, _ = _model_inputs(seed=2)
    base = _run(model, text, frame, future, future, action)
    changed = _run(model, text, frame, other, future, action)  # only the noisy future differs
    assert not torch.allclose(base[NOISY_FUT], changed[NOISY_FUT])
    assert torch.equal(base[CLEAN_FUT], changed[CLEAN_FUT])
    assert torch.equal(base[ACTION], changed[ACTION])
