"""Rectified flow: it learns a known distribution, the sampler honours its step count, and
padded dimensions never reach a loss."""

from dataclasses import replace

import pytest
import torch

from policies import flow
from policies.agent import Agent, Observed
from policies.config import SIZES
from policies.data import Data, encode_text
from policies.model import Item, Model
from policies.routes import generate, route_loss
from sims.embodiment import Embodiment

TINY = SIZES["tiny"]
MODES = torch.tensor([[0.6, 0.6], [-0.6, 0.6], [0.6, -0.6], [-0.6, -0.6]])


def _mixture(batch, chunk, g):
    """A 2-D mixture of four tight Gaussians; every action step is one i.i.d. point."""
    x = MODES[torch.randint(0, 4, (batch, chunk), generator=g)] + 0.05 * torch.randn(batch, chunk, 2, generator=g)
    return Data({"action": x}, {"action": torch.ones(batch, 1, 2, dtype=torch.bool)})


def _sample_quality(model, cfg):
    g = torch.Generator().manual_seed(123)
    points = generate(model, {}, "action", _mixture(64, cfg.chunk, g), steps=8, generator=g)
    nearest = torch.cdist(points.values["action"].reshape(-1, 2), MODES).min(dim=1)
    share = torch.bincount(nearest.indices, minlength=4).float() / nearest.indices.numel()
    return nearest.values.mean().item(), share


def test_flow_matching_fits_a_2d_mixture():
    torch.manual_seed(0)
    cfg = replace(TINY, experts=("action",), modalities=(("action", "action"),), action_pad=2)
    model = Model(cfg)
    before, _ = _sample_quality(model, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        opt.zero_grad()
        route_loss(model, {}, "action", _mixture(64, cfg.chunk, g), generator=g).backward()
        opt.step()
    after, share = _sample_quality(model, cfg)
    # Untrained samples sit ~0.95 from the nearest mode; trained ones far closer, on every mode.
    assert after < 0.6 * before, (before, after)
    assert (share > 0.1).all(), share


def test_euler_sampler_calls_the_velocity_exactly_steps_times():
    template = Data({"x": torch.zeros(3, 2)}, {"x": torch.tensor([[True, False]] * 3)})
    for steps in (1, 3, 7):
        calls = []

        def velocity(x, t):
            calls.append(t[0].item())
            return {"x": torch.ones_like(x.values["x"])}

        out = flow.euler_sample(velocity, template, steps, torch.Generator().manual_seed(0))
        assert calls == pytest.approx([i / steps for i in range(steps)])
        assert torch.equal(out.values["x"][:, 1], torch.zeros(3))  # padding stays zero
    with pytest.raises(ValueError):
        flow.euler_sample(velocity, template, 0)


def test_model_and_agent_honour_the_step_count(monkeypatch):
    torch.manual_seed(0)
    agent = Agent("tiny")
    calls = []
    real = agent.model.velocity
    monkeypatch.setattr(agent.model, "velocity", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    obs = {"proprio": torch.randn(5).numpy(), "task": "reach"}
    body = Embodiment("toy", 5, 2, (-1.0, -1.0), (1.0, 1.0))
    ctx = agent.perceive(obs, body)
    agent.imagine(ctx, n=2, steps=3)
    assert calls == ["future"] * 3
    calls.clear()
    agent.plan(ctx, n_candidates=2)
    assert calls == ["future"] * TINY.flow_steps + ["action"] * TINY.flow_steps
    calls.clear()
    agent.act(ctx, steps=5)
    assert calls == ["action"] * 5


def _padded_batch(garbage):
    g = torch.Generator().manual_seed(0)
    pmask = (torch.arange(TINY.proprio_pad) < 5).expand(2, 1, -1)
    amask = (torch.arange(TINY.action_pad) < 3).expand(2, 1, -1)
    actions = torch.rand(2, TINY.chunk, TINY.action_pad, generator=g) * 2 - 1
    future = torch.randn(2, TINY.chunk, TINY.proprio_pad, generator=g)
    proprio = torch.randn(2, 2, TINY.proprio_pad, generator=g)
    if garbage is not None:
        actions = torch.where(amask, actions, garbage)
        future = torch.where(pmask, future, garbage)
        proprio = torch.where(pmask, proprio, garbage)
    return (Data({"action": actions}, {"action": amask}), Data({"proprio": future}, {"proprio": pmask}),
            Data({"proprio": proprio}, {"proprio": pmask}))


@pytest.mark.parametrize("garbage", [1e6, float("nan")])
def test_padded_dimensions_have_zero_effect_on_the_loss(garbage):
    torch.manual_seed(0)
    agent = Agent("tiny")
    model = agent.model
    text = encode_text(["reach", "push"], TINY.text_max)

    def losses(garbage_value):
        actions, future, proprio = _padded_batch(garbage_value)
        model.zero_grad()
        g = torch.Generator().manual_seed(7)
        policy = route_loss(model, {"text": text, "proprio": proprio}, "action", actions, generator=g)
        observed = Observed([Item("text", text), Item("proprio", proprio)], proprio.masks["proprio"],
                            actions.masks["action"], False, ())
        joint = agent.loss(observed, future, actions, generator=g)["total"]
        (policy + joint).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return policy.detach(), joint.detach(), grads

    clean = losses(None)
    dirty = losses(garbage)
    assert torch.equal(clean[0], dirty[0]) and torch.equal(clean[1], dirty[1])
    assert len(clean[2]) == len(dirty[2]) and all(torch.equal(a, b) for a, b in zip(clean[2], dirty[2]))


def test_flow_loss_ignores_padding_in_numerator_and_denominator():
    x1 = Data({"a": torch.tensor([[1.0, 5.0]])}, {"a": torch.tensor([[True, False]])})
    x0 = x1.with_values({"a": torch.zeros(1, 2)})
    assert flow.flow_loss({"a": torch.tensor([[0.0, 123.0]])}, x0, x1).item() == 1.0


def test_sample_weights_reweight_the_flow_loss():
    from policies.data import Data
    from policies.flow import flow_loss

    gen = torch.Generator().manual_seed(0)
    x0 = Data({"a": torch.randn(3, 4, 2, generator=gen)}, {"a": torch.tensor([True, True])[None, None].expand(3, 1, 2)})
    x1 = Data({"a": torch.randn(3, 4, 2, generator=gen)}, x0.masks)
    pred = {"a": torch.randn(3, 4, 2, generator=gen)}
    assert torch.allclose(flow_loss(pred, x0, x1, torch.ones(3)), flow_loss(pred, x0, x1))
    # A zero weight removes a sample: the loss equals the loss of the other samples alone.
    only = lambda d, idx: Data({"a": d.values["a"][idx]}, {"a": d.masks["a"][idx]})  # noqa: E731
    keep = torch.tensor([0, 2])
    expected = flow_loss({"a": pred["a"][keep]}, only(x0, keep), only(x1, keep))
    assert torch.allclose(flow_loss(pred, x0, x1, torch.tensor([1.0, 0.0, 1.0])), expected)
    assert not torch.allclose(flow_loss(pred, x0, x1, torch.tensor([1.0, 5.0, 1.0])), flow_loss(pred, x0, x1))
