"""Perceive -> Imagine -> Act -> Plan, batched over envs."""

import numpy as np
import torch

import sims
from policies.agent import Agent
from sims.embodiment import Embodiment

ARM = Embodiment("arm", 6, 3, (-2.0, -1.0, 0.0), (2.0, 1.0, 4.0))


def _obs(batch, seed=0, image=True):
    rng = np.random.default_rng(seed)
    obs = {"proprio": rng.normal(size=(batch, 6)).astype(np.float32), "task": [f"task {i}" for i in range(batch)]}
    if image:
        obs["image"] = rng.integers(0, 255, (batch, 32, 32, 3), dtype=np.uint8)
    return obs


def test_plan_picks_the_best_candidate_under_a_known_score():
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    ctx = agent.perceive(_obs(3), ARM)
    n = 5

    def reward(imagined, actions):  # (B, n, T, P), (B, n, T, A) -> (B, n)
        return imagined[..., 0].mean(-1) - actions[..., 1].abs().mean(-1)

    plan = agent.plan(ctx, n_candidates=n, reward_fn=reward, return_weight=0.0,
                      generator=torch.Generator().manual_seed(1))
    # Replay the same candidates with the same noise and score them independently.
    g = torch.Generator().manual_seed(1)
    imagined = agent.imagine(ctx, n, generator=g)
    acted = agent.act(ctx, imagined, generator=g)
    prop = imagined.future.values["proprio"].view(3, n, *imagined.future.values["proprio"].shape[1:])
    acts = acted.actions.values["action"].view(3, n, *acted.actions.values["action"].shape[1:])
    scores = reward(prop, acts)
    assert scores.std(dim=1).min() > 0  # the candidates really differ
    assert torch.equal(plan.choice, scores.argmax(dim=1))
    torch.testing.assert_close(plan.scores, scores)
    for b in range(3):
        c = plan.choice[b]
        assert torch.equal(plan.actions[b], acts[b, c])
        assert torch.equal(plan.imagined.values["proprio"][b], prop[b, c])
        assert torch.equal(plan.imagined.values["frames"][b], imagined.future.values["frames"][b * n + c])


def test_a_plan_can_run_another_of_its_candidates():
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    plan = agent.plan(agent.perceive(_obs(3), ARM), n_candidates=4, generator=torch.Generator().manual_seed(2))
    other = plan.choose([3, 0, 1])
    assert other.choice.tolist() == [3, 0, 1]
    for b, c in enumerate([3, 0, 1]):
        assert torch.equal(other.actions[b], plan.candidates[b, c])
        assert torch.equal(other.imagined.values["proprio"][b], plan.futures.values["proprio"][b * 4 + c])
    assert not torch.equal(other.actions, plan.actions)  # at least one env changed its mind
    assert torch.equal(other.scores, plan.scores)  # the model's own scores are kept


def test_plan_uses_the_learned_return_head():
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    ctx = agent.perceive(_obs(2, image=False), ARM)
    plan = agent.plan(ctx, n_candidates=4, generator=torch.Generator().manual_seed(0))
    assert plan.returns.shape == (2, 4)
    assert torch.equal(plan.choice, plan.returns.argmax(dim=1))


def test_one_call_serves_a_vector_of_envs():
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    cfg = agent.cfg
    ctx = agent.perceive(_obs(4), ARM)
    assert ctx.cache.batch == 4
    imagined = agent.imagine(ctx, n=3)
    assert imagined.future.values["proprio"].shape == (12, cfg.chunk, cfg.proprio_pad)
    assert imagined.future.values["frames"].shape == (12, cfg.chunk, cfg.image_size, cfg.image_size, 3)
    assert (imagined.future.values["proprio"][..., 6:] == 0).all()  # padding stays zero
    plan = agent.plan(ctx, n_candidates=3)
    actions = plan.env_actions()
    assert len(actions) == 4 and all(a.shape == (cfg.chunk, 3) for a in actions)
    low, high = np.array(ARM.action_low), np.array(ARM.action_high)
    assert all(((a >= low) & (a <= high)).all() for a in actions)
    assert all(p.shape == (cfg.chunk, 6) for p in plan.imagined_proprio())


def test_each_env_in_a_batch_is_perceived_independently():
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    obs = _obs(3)
    together = agent.perceive(obs, ARM).cache
    for b in range(3):
        alone = agent.perceive({k: v[b] for k, v in obs.items()}, ARM).cache
        for k_all, k_one in zip(together.keys, alone.keys):
            n = k_one.shape[2]  # texts of equal length here, so no padding differs
            torch.testing.assert_close(k_all[b:b + 1, :, :n], k_one, rtol=1e-5, atol=1e-5)


def test_mixed_embodiments_and_history_in_one_batch():
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    small = Embodiment("small", 2, 1, (-1.0,), (1.0,))
    obs = [{"proprio": np.zeros((2, 6), np.float32), "task": "arm task"},
           {"proprio": np.ones((2, 2), np.float32), "task": "a much longer instruction for the small body"}]
    plan = agent.plan(agent.perceive(obs, [ARM, small]), n_candidates=2)
    a, b = plan.env_actions()
    assert a.shape == (agent.cfg.chunk, 3) and b.shape == (agent.cfg.chunk, 1)
    assert (plan.actions[1, :, 1:] == 0).all()  # the small body's padded action dims are exactly zero


def test_the_loop_drives_a_registered_sim():
    torch.manual_seed(0)
    env = sims.make("mujoco/reacher")
    agent = Agent("tiny").eval()
    obs, _ = env.reset(seed=0)
    for _ in range(2):
        plan = agent.plan(agent.perceive(obs, env.embodiment), n_candidates=2)
        for action in plan.env_actions()[0]:
            obs, *_ = env.step(action)
    assert env.step_count == 2 * agent.cfg.chunk
    env.close()


def test_the_kept_task_prefix_matches_a_full_prefix_run_and_follows_the_weights():
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    obs = _obs(3)

    def full_prefix():
        return agent.model.run(agent.observe(obs, ARM).items, keep=True)[1]

    kept = agent.perceive(obs, ARM).cache  # text computed now and kept
    kept_again = agent.perceive(obs, ARM).cache  # text read from what was kept
    for cache in (kept, kept_again):
        assert cache.layout == full_prefix().layout
        for mine, reference in zip(cache.keys + cache.values, full_prefix().keys + full_prefix().values):
            torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)
    # New weights (loaded in place, as the rollout actors do) must not reuse the old text.
    other = Agent("tiny").eval()
    agent.model.load_state_dict(other.model.state_dict())
    after = agent.perceive(obs, ARM).cache
    torch.testing.assert_close(after.keys[0], full_prefix().keys[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after.keys[0], kept.keys[0])
