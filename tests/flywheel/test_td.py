"""The critic on chunk rows (``flywheel.td``): end states, candidate columns, what it learns."""

import numpy as np
import pytest
import torch

import sims
from configs.learning import ObjectiveConfig
from flywheel.objective import batch_loss
from flywheel.rollout import RolloutSpec, collect
from flywheel.rows import (ACTIONS, CANDIDATE_ACTIONS, CANDIDATE_NEXT_PROPRIO, CANDIDATE_REWARDS, CANDIDATE_STEPS,
                           CANDIDATE_TERMINATED, EPISODE, PROPRIO, REALIZED, REWARD, REWARDS, STEPS, TASK,
                           TERMINATED, ChunkRows, next_proprio)
from flywheel.td import critic_share
from policies import critic
from policies.agent import Agent
from policies.config import model_config

SIM = "mujoco/reacher-twin"
CANDIDATES = 3


@pytest.fixture(scope="module")
def agent():
    torch.manual_seed(0)
    return Agent(model_config("tiny", critic_ensemble=2)).eval()


@pytest.fixture(scope="module")
def rows(agent):
    envs = [sims.make(SIM, max_episode_steps=20) for _ in range(2)]
    return collect(agent, envs, RolloutSpec(episodes=3, seed=2, n_candidates=CANDIDATES, choose="sim"))


def test_the_end_state_of_a_chunk_is_the_next_chunks_start(rows):
    after = next_proprio(rows[PROPRIO], rows[REALIZED], rows[STEPS])
    following = 0
    for i in range(rows.n - 1):
        if rows[EPISODE][i] == rows[EPISODE][i + 1]:
            assert np.array_equal(after[i], rows[PROPRIO][i + 1])
            following += 1
    assert following >= 3
    assert np.allclose(rows[REWARDS].sum(axis=1), rows[REWARD])
    assert not rows[TERMINATED].any()  # the reacher only ends by its time limit: bootstrap through it


def test_every_candidate_the_sim_ran_is_a_column_and_the_executed_one_is_among_them(rows, agent):
    assert rows.candidates
    cfg = agent.cfg
    assert rows[CANDIDATE_ACTIONS].shape[1:] == (CANDIDATES, cfg.chunk, cfg.action_pad)
    assert rows[CANDIDATE_REWARDS].shape[1:] == (CANDIDATES, cfg.chunk)
    assert rows[CANDIDATE_NEXT_PROPRIO].shape[1:] == (CANDIDATES, cfg.history, cfg.proprio_pad)
    after = next_proprio(rows[PROPRIO], rows[REALIZED], rows[STEPS])
    for i in range(rows.n):
        (c,) = [c for c in range(CANDIDATES) if np.array_equal(rows[CANDIDATE_ACTIONS][i, c], rows[ACTIONS][i])]
        assert np.array_equal(rows[CANDIDATE_REWARDS][i, c], rows[REWARDS][i])
        assert rows[CANDIDATE_STEPS][i, c] == rows[STEPS][i] and not rows[CANDIDATE_TERMINATED][i, c]
        assert np.array_equal(rows[CANDIDATE_NEXT_PROPRIO][i, c], after[i])
    # Without a critic the sim keeps the greedy best; with one it ranks by the TD target, which
    # may differ. Either way the executed chunk is a candidate (checked above).


def test_two_shares_of_the_critic_loss_sum_to_the_whole_batchs(rows, agent):
    config = ObjectiveConfig(critic=True, advantage="critic")
    whole = batch_loss(agent, rows, config, noise_seed=(0, 1))
    shares = [batch_loss(agent, rows, config, noise_seed=(0, 1), rank=r, world_size=2) for r in range(2)]
    for term in ("q", "value", "action", "total", "td_error"):
        assert sum(s[term] for s in shares).item() == pytest.approx(whole[term].item(), rel=1e-5), term


def synthetic_rows(agent, n: int, seed: int) -> ChunkRows:
    """Rows whose candidates' returns are known: each step pays -(a_0 - p_0)^2 (the first
    action dim against the first proprio dim of the state) and the episode then terminates,
    so y = c * R_chunk exactly and the best candidate of each state is known."""
    rng = np.random.default_rng(seed)
    base = collect(agent, [sims.make(SIM, max_episode_steps=8)], RolloutSpec(episodes=1, n_candidates=CANDIDATES,
                                                                            choose="sim"))
    rows = base.take(np.zeros(n, dtype=int))
    cfg, d = agent.cfg, 8
    proprio = np.zeros((n, cfg.history, cfg.proprio_pad), np.float32)
    proprio[:, :, :d] = rng.uniform(-1, 1, (n, 1, d))
    actions = np.zeros((n, CANDIDATES, cfg.chunk, cfg.action_pad), np.float32)
    actions[..., :2] = rng.uniform(-1, 1, (n, CANDIDATES, 1, 2))  # one action held for the chunk
    rewards = -(actions[..., 0] - proprio[:, None, -1:, 0]) ** 2  # (n, C, T)
    return ChunkRows.of({**rows, PROPRIO: proprio, CANDIDATE_ACTIONS: actions,
                         CANDIDATE_REWARDS: rewards.astype(np.float64),
                         CANDIDATE_STEPS: np.full((n, CANDIDATES), cfg.chunk),
                         CANDIDATE_TERMINATED: np.ones((n, CANDIDATES), bool),
                         ACTIONS: actions[:, 0], CANDIDATE_NEXT_PROPRIO: np.repeat(proprio[:, None], CANDIDATES, 1)})


def test_the_critic_learns_which_candidate_is_best(agent):
    torch.manual_seed(0)
    train, held_out = synthetic_rows(agent, 256, seed=0), synthetic_rows(agent, 128, seed=1)
    config = ObjectiveConfig(critic=True, discount=0.9)
    heads = [agent.model.heads[critic.Q], agent.model.heads[critic.VALUE]]
    optimizer = torch.optim.Adam([p for h in heads for p in h.parameters()], lr=3e-3)
    body = sims.make(SIM).embodiment
    for step in range(300):
        batch = train.take(np.random.default_rng(step).choice(train.n, 64, replace=False))
        observed = agent.observe([{"proprio": p[:, :8], "task": str(t)} for p, t in zip(batch[PROPRIO], batch[TASK])],
                                 body)
        share = critic_share(agent, batch, observed, agent.critic_features(observed), config, 64)
        optimizer.zero_grad()
        (share["q"] + share["value"]).backward()
        optimizer.step()
    observed = agent.observe([{"proprio": p[:, :8], "task": str(t)}
                              for p, t in zip(held_out[PROPRIO], held_out[TASK])], body)
    with torch.no_grad():
        q = torch.stack([agent.chunk_values(observed, torch.as_tensor(held_out[CANDIDATE_ACTIONS][:, c])).mean(0)
                         for c in range(CANDIDATES)], dim=1).numpy()
    best = held_out[CANDIDATE_REWARDS].sum(axis=2).argmax(axis=1)
    hits = float((q.argmax(axis=1) == best).mean())
    assert hits > 0.75, f"the critic picks the best of {CANDIDATES} candidates in {hits:.0%} of held-out states"
