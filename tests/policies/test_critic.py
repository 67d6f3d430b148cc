"""The chunk critic's heads and TD math (``policies.critic``), and how the model carries them."""

import numpy as np
import pytest
import torch

from policies import checkpoint, critic
from policies.agent import Agent
from policies.config import DEFAULT_MODALITIES, model_config


def test_td_targets_of_a_three_chunk_chain_match_the_hand_computation():
    # One episode of three chunks of up to 3 steps, discount 0.5 (c = 1 - 0.5 = 0.5):
    #   chunk 0: rewards 1, 2, 4 (3 steps), V_target(s1) = 10
    #   chunk 1: rewards 8, 0, 0 (3 steps), V_target(s2) = -2
    #   chunk 2: rewards 4, 4, - (2 steps: the episode ended inside it), V_target(s3) = 100
    rewards = torch.tensor([[1.0, 2.0, 4.0], [8.0, 0.0, 0.0], [4.0, 4.0, 0.0]], dtype=torch.float64)
    steps = torch.tensor([3, 3, 2])
    next_value = torch.tensor([10.0, -2.0, 100.0], dtype=torch.float64)
    # R_chunk = sum_t 0.5^t r_t: 1 + 1 + 1 = 3; 8; 4 + 2 = 6. Then y = 0.5 R + 0.5^steps * alive * V'.
    truncated = critic.td_target(rewards, steps, torch.tensor([False, False, False]), next_value, 0.5)
    assert truncated.tolist() == [0.5 * 3 + 0.125 * 10, 0.5 * 8 + 0.125 * -2, 0.5 * 6 + 0.25 * 100]
    # A termination stops the bootstrap; a time limit (above) does not.
    terminated = critic.td_target(rewards, steps, torch.tensor([False, False, True]), next_value, 0.5)
    assert terminated.tolist() == [2.75, 3.75, 3.0]
    # Undiscounted: plain sums, c = 1.
    assert critic.td_target(rewards, steps, torch.tensor([False, False, True]), next_value, 1.0).tolist() == [
        7 + 10, 8 - 2, 8]


def test_expectile_leans_towards_the_upper_values():
    diff = torch.tensor([-1.0, 1.0])
    assert critic.expectile(diff, 0.8).tolist() == pytest.approx([0.2, 0.8])
    # Minimising over a constant v: the 0.8-expectile of {0, 1} lies above their mean.
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        critic.expectile(torch.tensor([0.0, 1.0]) - v, 0.8).sum().backward()
        opt.step()
    assert v.item() == pytest.approx(0.8, abs=1e-3)


def test_the_target_follows_the_value_head_by_its_rate():
    cfg = model_config("tiny", critic_ensemble=1)
    heads = critic.build_heads(cfg, seed=0)
    value, target = heads[critic.VALUE], heads[critic.VALUE_TARGET]
    assert all(torch.equal(a, b) for a, b in zip(value.parameters(), target.parameters()))
    assert not any(p.requires_grad for p in target.parameters())
    before = [p.clone() for p in target.parameters()]
    with torch.no_grad():
        for p in value.parameters():
            p.add_(1.0)
    critic.ema_update(target, value, 0.25)
    for b, t in zip(before, target.parameters()):
        assert torch.allclose(t, b + 0.25)


def test_a_model_without_a_critic_grows_one_seeded_and_its_checkpoint_keeps_it(tmp_path):
    torch.manual_seed(0)
    plain = Agent("tiny")
    plain.save(tmp_path / "plain")
    grown = [checkpoint.load(tmp_path / "plain") for _ in range(2)]
    for model in grown:
        assert not model.has_critic
        model.grow_critic(2, seed=7)
    assert grown[0].cfg.critic_ensemble == 2
    first, second = grown[0].state_dict(), grown[1].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)  # the seed fixes the new heads
    checkpoint.save(grown[0], tmp_path / "grown")
    again = checkpoint.load(tmp_path / "grown")
    assert again.has_critic and all(torch.equal(v, again.state_dict()[k]) for k, v in first.items())
    with pytest.raises(ValueError, match="already has a critic"):
        again.grow_critic(2)


def test_a_model_that_perceives_no_proprio_cannot_grow_a_critic():
    cfg = model_config("tiny", modalities=tuple(p for p in DEFAULT_MODALITIES if p[0] != "proprio"))
    with pytest.raises(ValueError, match="proprio"):
        Agent(cfg).model.grow_critic(2)


def test_planning_with_a_critic_keeps_the_candidate_with_the_highest_mean_q():
    torch.manual_seed(0)
    agent = Agent(model_config("tiny", critic_ensemble=2)).eval()
    obs = {"proprio": np.zeros((2, 8), np.float32), "task": "reach"}
    from sims import make

    emb = make("mujoco/reacher-twin").embodiment
    context = agent.perceive([obs, {**obs, "proprio": np.ones((2, 8), np.float32)}], emb)
    plan = agent.plan(context, n_candidates=3, generator=torch.Generator().manual_seed(0))
    observed = context.observed
    q = torch.stack([agent.chunk_values(observed, plan.candidates[:, c]).mean(dim=0) for c in range(3)], dim=1)
    assert torch.allclose(plan.scores, q, atol=1e-6)
    assert torch.equal(plan.choice, q.argmax(dim=1))
