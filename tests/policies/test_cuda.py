"""The agent on a CUDA device computes what it computes on the CPU (skipped without a GPU)."""

import numpy as np
import pytest
import torch

from policies import flow
from policies.agent import Agent
from sims.embodiment import Embodiment

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ARM = Embodiment("arm", 6, 3, (-2.0, -1.0, 0.0), (2.0, 1.0, 4.0))


@pytest.fixture(scope="module")
def agents():
    torch.manual_seed(0)
    cpu = Agent("tiny").eval()
    gpu = Agent("tiny", device="cuda").eval()
    gpu.model.load_state_dict(cpu.model.state_dict())
    return cpu, gpu


def _obs(batch: int):
    rng = np.random.default_rng(0)
    return {"proprio": rng.normal(size=(batch, 2, 6)).astype(np.float32), "task": ["reach the target"] * batch}


def _act(agent: Agent, x0):
    """Perceive, then the action sampler's Euler steps from given noise (the devices'
    generators differ), through the prefix cache with room, as ``Model.sample`` runs them."""
    ctx = agent.perceive(_obs(x0.batch), ARM)
    cache = ctx.cache.with_room(x0.values["action"].shape[1])
    x = x0
    with torch.no_grad():
        for i in range(4):
            t = torch.full((x.batch,), i / 4, device=agent.device)
            v = agent.model.velocity("action", x, t, cache=cache)
            x = x.with_values({k: x.values[k] + 0.25 * v[k] for k in x.values})
    return ctx, x.values["action"]


def test_perceive_and_act_agree_with_the_cpu(agents):
    cpu, gpu = agents
    template = cpu.perceive(_obs(5), ARM).observed.action_data(torch.zeros(5, cpu.cfg.chunk, cpu.cfg.action_pad))
    x0 = flow.noise_like(template, torch.Generator().manual_seed(1))
    ctx_c, act_c = _act(cpu, x0)
    ctx_g, act_g = _act(gpu, x0.to("cuda"))
    for a, b in zip(ctx_c.cache.keys, ctx_g.cache.keys):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-4)
    assert act_g.is_cuda
    torch.testing.assert_close(act_g.cpu(), act_c, rtol=1e-3, atol=1e-4)


def test_a_training_step_gives_the_cpu_loss_and_finite_gradients(agents):
    cpu, gpu = agents
    losses = []
    for agent in (cpu, gpu):
        observed = agent.observe(_obs(4), ARM)
        rng = torch.Generator().manual_seed(2)
        future = observed.future_data(torch.randn(4, agent.cfg.chunk, agent.cfg.proprio_pad, generator=rng).to(agent.device))
        actions = observed.action_data((torch.rand(4, agent.cfg.chunk, agent.cfg.action_pad, generator=rng) * 2 - 1)
                                       .to(agent.device))
        noise = {}
        for name, data in (("future", future), ("action", actions)):
            x0, t = flow.row_noise(data.to("cpu"), [7, 8, 9, 10])  # the same noise on both devices
            noise[name] = (x0.to(agent.device), t.to(agent.device))
        agent.model.zero_grad()
        loss = agent.loss(observed, future, actions, returns=torch.randn(4, generator=rng).to(agent.device),
                          noise=noise)["total"]
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in agent.model.parameters())
        losses.append(float(loss.detach()))
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_plan_runs_on_the_device(agents):
    _, gpu = agents
    ctx = gpu.perceive(_obs(3), ARM)
    plan = gpu.plan(ctx, 4, generator=torch.Generator("cuda").manual_seed(0))
    assert plan.actions.is_cuda and plan.actions.shape == (3, gpu.cfg.chunk, gpu.cfg.action_pad)
    assert torch.isfinite(plan.actions).all() and plan.choice.shape == (3,)
