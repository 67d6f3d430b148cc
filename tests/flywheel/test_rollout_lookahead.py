"""``lookahead_chunks``: ``choose=sim`` ranks each candidate by its chunk and the policy's next
chunks after it, run in the sim from the state the candidate ended in (``flywheel.rollout``)."""

import dataclasses

import numpy as np
import pytest
import torch

import sims
from configs.errors import ConfigError
from configs.run_schema import RunConfig
from flywheel import rollout
from flywheel.controller import validate
from flywheel.rollout import RolloutSpec, collect, ranked, run_candidates
from flywheel.rows import CANDIDATE_LOOKAHEAD_REWARD, SIM_STEPS, STEPS
from policies.agent import Agent
from tests.flywheel.test_step_accounting import count_steps

SIM = "mujoco/reacher-twin"  # never terminates: only its time limit ends a run
H = 2  # chunks of look-ahead past each candidate


def _decision(agent, env, n=3, seed=0):
    """The candidates of one decision from ``env``'s current state, and the model's history there."""
    obs, _ = env.reset(seed=seed)
    history = np.stack([obs["proprio"]] * agent.cfg.history)
    context = agent.perceive([{**obs, "proprio": history}], [env.embodiment])
    plan = agent.plan(context, n, generator=torch.Generator().manual_seed(seed))
    return plan.candidates.cpu().numpy().reshape(1, n, *plan.candidates.shape[-2:]), history


def test_each_candidate_is_continued_by_the_policy_from_the_state_it_ended_in(agent, monkeypatch):
    env = sims.make(SIM, max_episode_steps=100)
    candidates, history = _decision(agent, env)
    start = env.get_state()
    runs = [run_candidates(env, candidates[0], keep_end=True)]
    acted = []  # every chunk the policy acted in the look-ahead, in order
    act = type(agent).act

    def spied(self, *args, **kwargs):
        out = act(self, *args, **kwargs)
        acted.append(out.actions.values["action"].cpu().numpy())
        return out

    monkeypatch.setattr(type(agent), "act", spied)
    spec = RolloutSpec(episodes=1, n_candidates=3, choose="sim", lookahead_chunks=H)
    ends = [[history] * 3]
    spent = np.zeros(1, np.int64)
    continued, _ = rollout._continued(agent, [env], runs, ends, spec, torch.Generator().manual_seed(1), spent)
    chunk = agent.cfg.chunk
    assert len(acted) == H and all(a.shape[0] == 3 for a in acted)  # all candidates in one batch a chunk
    assert spent[0] == 3 * H * chunk
    emb = env.embodiment
    for c, (own, longer) in enumerate(zip(runs[0], continued[0])):
        assert longer.rewards[:chunk] == own.rewards and len(longer.rewards) == (1 + H) * chunk
        env.set_state(own.end)  # replayed by hand: the policy's chunks from this candidate's own end
        replayed = [env.step(a)[1] for k in range(H) for a in emb.to_env_action(emb.unpad_action(acted[k][c]))]
        assert np.allclose(longer.rewards[chunk:], replayed)
    assert len({round(sum(r.rewards[chunk:]), 9) for r in continued[0]}) > 1  # not one continuation for all
    env.set_state(start)
    again = rollout._continued(agent, [env], runs, ends, spec, torch.Generator().manual_seed(1), spent)[0]
    assert [r.rewards for r in again[0]] == [r.rewards for r in continued[0]]
    assert all(np.array_equal(a, b) for a, b in zip(env.get_state().arrays, start.arrays))  # left as it was


def test_the_sim_picks_the_candidate_whose_continued_run_earns_the_most(agent):
    env = sims.make(SIM, max_episode_steps=100)
    candidates, history = _decision(agent, env, n=4, seed=3)
    spec = RolloutSpec(episodes=1, n_candidates=4, choose="sim", lookahead_chunks=H)
    choice, columns, spent = rollout._sim_choice(agent, [env], candidates, None, [history], spec,
                                                 torch.Generator().manual_seed(7))
    runs = [run_candidates(env, candidates[0], keep_end=True)]
    # Each continuation perceives the history its candidate ended with.
    ends = [[np.concatenate([history, np.asarray(r.realized, np.float32)])[-agent.cfg.history:] for r in runs[0]]]
    continued, _ = rollout._continued(agent, [env], runs, ends, spec, torch.Generator().manual_seed(7),
                                      np.zeros(1, np.int64))
    totals = [sum(r.rewards) for r in continued[0]]
    assert choice == [int(np.argmax(totals))]
    assert np.array_equal(columns[0][CANDIDATE_LOOKAHEAD_REWARD], totals)  # the row keeps what it was ranked by
    assert spent[0] == 4 * (1 + H) * agent.cfg.chunk


def test_sim_steps_count_every_step_of_the_look_ahead(agent, monkeypatch):
    chunk = agent.cfg.chunk
    envs = [sims.make(SIM, max_episode_steps=5 * chunk) for _ in range(2)]
    calls = count_steps(monkeypatch)
    rows = collect(agent, envs, RolloutSpec(episodes=2, seed=1, n_candidates=3, choose="sim", lookahead_chunks=H))
    assert rows[SIM_STEPS].sum() == len(calls) and rows[STEPS].sum() == 2 * 5 * chunk
    # A chunk far enough from the time limit paid its 3 candidates, H chunks past each, and itself.
    early = np.arange(rows.n) % 5 < 5 - H
    assert np.all(rows[SIM_STEPS][early] == 3 * (1 + H) * chunk + chunk)
    assert np.all(rows[SIM_STEPS][~early] < 3 * (1 + H) * chunk + chunk)  # the look-ahead stops at the limit


@pytest.mark.parametrize("changes, message", [
    ({"lookahead_chunks": -1}, "lookahead_chunks must be an int >= 0"),
    ({"lookahead_chunks": 2, "choose": "model"}, "lookahead_chunks=2 .* needs choose=sim"),
    ({"lookahead_chunks": 2, "camera": True}, "lookahead_chunks: .* camera"),
])
def test_a_look_ahead_that_cannot_work_names_the_field_before_ray_starts(changes, message):
    with pytest.raises(ConfigError, match=message):
        validate(dataclasses.replace(RunConfig(pretrained="scratch"), **changes))


def test_with_a_critic_the_continued_runs_are_valued_where_they_end():
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    agent.model.grow_critic(ensemble=2, seed=0)
    env = sims.make(SIM, max_episode_steps=100)
    candidates, history = _decision(agent, env, n=4, seed=5)
    spec = RolloutSpec(episodes=1, n_candidates=4, choose="sim", lookahead_chunks=H, discount=0.9)
    choice, _, _ = rollout._sim_choice(agent, [env], candidates, None, [history], spec,
                                       torch.Generator().manual_seed(2))
    runs = [run_candidates(env, candidates[0], keep_end=True)]
    continued, ends = rollout._continued(agent, [env], runs, [[history] * 4], spec,
                                         torch.Generator().manual_seed(2), np.zeros(1, np.int64))
    assert all(len(end) == agent.cfg.history for end in ends[0])
    states = [{"proprio": end, "task": env.task_text} for end in ends[0]]
    with torch.no_grad():
        values = agent.values(agent.observe(states, [env.embodiment] * 4), target=True).double().numpy()
    assert choice == [ranked(continued[0], 0.9, values)]
    own_ends = [{"proprio": np.concatenate([history, np.asarray(r.realized, np.float32)])[-agent.cfg.history:],
                 "task": env.task_text} for r in runs[0]]
    with torch.no_grad():
        at_own = agent.values(agent.observe(own_ends, [env.embodiment] * 4), target=True).double().numpy()
    assert not np.allclose(values, at_own)  # valued past the look-ahead, not at the candidates' own ends
