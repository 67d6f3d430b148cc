"""The backbone: a one-expert MoT is a dense transformer; routing and the prefix cache are exact."""

from dataclasses import replace

import torch

from policies.config import SIZES
from policies.dense import DenseTransformer
from policies.layout import Layout, Segment
from policies.mot import MoT, routing_for

TINY = SIZES["tiny"]


def _layout(*specs):
    return Layout(tuple(Segment(m, e, n, noisy=noisy) for m, e, n, noisy in specs))


def test_one_expert_mot_is_exactly_a_dense_transformer():
    torch.manual_seed(0)
    cfg = replace(TINY, experts=("understand",))
    mot = MoT(cfg).eval()
    dense = DenseTransformer.like(cfg).copy_expert(mot.experts["understand"]).eval()
    layout = _layout(("text", "understand", 5, False), ("frame", "understand", 4, False),
                     ("proprio", "understand", 3, True), ("action", "understand", 6, True))
    x = torch.randn(3, len(layout), cfg.d_model)
    got, _ = mot(x, layout)
    want = dense(x, layout.mask())
    assert torch.equal(got, want)
    # And without any mask (a single bidirectional segment).
    one = _layout(("frame", "understand", 7, False))
    assert torch.equal(mot(x[:, :7], one)[0], dense(x[:, :7], one.mask()))


def test_interleaved_experts_with_equal_weights_match_dense():
    """Gather/scatter routing puts every token back where it came from, even when an
    expert's tokens are not contiguous."""
    torch.manual_seed(1)
    cfg = replace(TINY, experts=("understand", "action"))
    mot = MoT(cfg).eval()
    mot.experts["action"].load_state_dict(mot.experts["understand"].state_dict())
    dense = DenseTransformer.like(cfg).copy_expert(mot.experts["understand"]).eval()
    layout = _layout(("text", "understand", 3, False), ("action", "action", 4, False),
                     ("proprio", "understand", 2, False), ("action", "action", 5, True))
    assert not routing_for(layout.experts()).in_order
    x = torch.randn(2, len(layout), cfg.d_model)
    torch.testing.assert_close(mot(x, layout)[0], dense(x, layout.mask()), rtol=1e-5, atol=1e-5)


def test_experts_really_differ_and_each_token_uses_its_own():
    torch.manual_seed(2)
    cfg = replace(TINY, experts=("understand", "action"))
    mot = MoT(cfg).eval()
    layout = _layout(("text", "understand", 3, False), ("action", "action", 4, True))
    x = torch.randn(2, 7, cfg.d_model)
    base, _ = mot(x, layout)
    with torch.no_grad():
        mot.experts["action"].blocks[-1].ffn[2].bias.add_(1.0)
    moved, _ = mot(x, layout)
    assert torch.equal(moved[:, :3], base[:, :3])  # understand tokens: untouched (and causal)
    assert not torch.allclose(moved[:, 3:], base[:, 3:])


def test_prefix_cache_gives_the_same_result_as_one_full_pass():
    torch.manual_seed(3)
    mot = MoT(TINY).eval()
    prefix = _layout(("text", "understand", 5, False), ("proprio", "understand", 2, False))
    full = prefix + _layout(("future", "video", 6, False), ("action", "action", 4, True))
    x = torch.randn(2, len(full), TINY.d_model)
    want, _ = mot(x, full)
    _, cache = mot(x[:, :7], prefix, keep=True)
    got, _ = mot(x[:, 7:], full, cache=cache)
    torch.testing.assert_close(got, want[:, 7:], rtol=1e-5, atol=1e-6)
    # Expanding the cache shares one prefix among candidates.
    many = cache.expand(3)
    got3, _ = mot(x[:, 7:].repeat_interleave(3, dim=0), full, cache=many)
    torch.testing.assert_close(got3, want[:, 7:].repeat_interleave(3, dim=0), rtol=1e-5, atol=1e-6)


def test_a_cache_with_room_gives_the_same_result_step_after_step():
    torch.manual_seed(5)
    mot = MoT(TINY).eval()
    prefix = _layout(("text", "understand", 5, False), ("proprio", "understand", 2, False))
    full = prefix + _layout(("action", "action", 4, True))
    _, cache = mot(torch.randn(3, 7, TINY.d_model), prefix, keep=True)
    roomy = cache.with_room(4)
    for _ in range(2):  # the second run overwrites the first one's keys in the room
        x = torch.randn(3, 4, TINY.d_model)
        want, _ = mot(x, full, cache=cache)
        got, _ = mot(x, full, cache=roomy)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert torch.equal(roomy.keys[0][:, :, :7], cache.keys[0])  # the prefix itself is never written
    # A run that keeps its keys copies them out, so nothing can later overwrite a kept cache.
    _, kept = mot(torch.randn(3, 4, TINY.d_model), full, cache=roomy, keep=True)
    assert kept.keys[0].data_ptr() != roomy.keys[0].data_ptr() and kept.keys[0].shape[2] == 11


def test_padding_keys_are_ignored():
    torch.manual_seed(4)
    mot = MoT(TINY).eval()
    layout = _layout(("text", "understand", 6, False), ("action", "action", 4, True))
    x = torch.randn(1, 10, TINY.d_model)
    pad = torch.tensor([[True] * 4 + [False] * 2 + [True] * 4])
    a, _ = mot(x, layout, key_mask=pad)
    y = x.clone()
    y[:, 4:6] = torch.randn(1, 2, TINY.d_model)  # change only the padding tokens
    b, _ = mot(y, layout, key_mask=pad)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=1e-6)
    torch.testing.assert_close(a[:, 6:], b[:, 6:], rtol=0, atol=1e-6)
    assert torch.isfinite(a).all()
