"""Every candidate the sim ran, as labelled data: the action expert learning them
(``learner.candidate_samples``) and the chunk ranker planning scores by (``learner.ranker``),
``flywheel.objective``, on rows the rollout loop really writes."""

import numpy as np
import pytest
import torch

import sims
from configs.errors import ConfigError
from configs.learning import ObjectiveConfig
from configs.run_schema import LearnerConfig, RunConfig
from flywheel.objective import CANDIDATES, batch_loss, candidate_probabilities, sibling_scores, unread_columns
from flywheel.rollout import RolloutSpec, collect
from flywheel.rows import (ACTIONS, CANDIDATE_ACTIONS, CANDIDATE_IMAGINED, CANDIDATE_LOOKAHEAD_REWARD,
                           CANDIDATE_REWARDS, IMAGINED, PROPRIO, PROPRIO_DIM, TASK, ChunkRows)
from policies import flow
from policies.agent import Agent
from policies.data import Data
from policies.ranker import RANK
from sims import make

SIM = "mujoco/reacher-twin"
N = 3  # candidates per chunk


@pytest.fixture(scope="module")
def rows(agent):
    envs = [sims.make(SIM, max_episode_steps=20) for _ in range(2)]
    return collect(agent, envs, RolloutSpec(episodes=3, seed=2, n_candidates=N, choose="sim", candidate_futures=True))


@pytest.fixture(scope="module")
def looked(agent):
    """Rows of a sim that ranked each candidate by its chunk and the policy's next chunk after it."""
    envs = [sims.make(SIM, max_episode_steps=20) for _ in range(2)]
    return collect(agent, envs, RolloutSpec(episodes=3, seed=2, n_candidates=N, choose="sim", lookahead_chunks=1,
                                            candidate_futures=True))


def _executed(rows, i):
    (c,) = [c for c in range(N) if np.array_equal(rows[CANDIDATE_ACTIONS][i, c], rows[ACTIONS][i])]
    return c


def test_every_candidate_keeps_the_future_it_was_acted_from_where_the_run_learns_them(rows, agent):
    envs = [sims.make(SIM, max_episode_steps=20)]
    plain = collect(agent, envs, RolloutSpec(episodes=1, seed=2, n_candidates=N, choose="sim"))
    assert CANDIDATE_ACTIONS in plain and CANDIDATE_IMAGINED not in plain  # twice a row's bytes: only if asked
    assert rows[CANDIDATE_IMAGINED].shape[1:] == (N, agent.cfg.chunk, agent.cfg.proprio_pad)
    for i in range(rows.n):
        assert np.array_equal(rows[CANDIDATE_IMAGINED][i, _executed(rows, i)], rows[IMAGINED][i])
    # Each candidate imagined its own future: they differ within a row.
    assert not np.array_equal(rows[CANDIDATE_IMAGINED][:, 0], rows[CANDIDATE_IMAGINED][:, 1])


def test_candidates_are_drawn_by_their_reward_against_their_siblings(rows):
    returns = rows[CANDIDATE_REWARDS].sum(axis=-1)
    warm, cold = (candidate_probabilities(rows, ObjectiveConfig(temperature=t)) for t in (1.0, 0.01))
    assert np.allclose(warm.sum(axis=1), 1.0)
    for i in range(rows.n):
        order = np.argsort(returns[i])
        assert np.all(np.diff(warm[i][order]) >= 0)  # more reward, likelier
        # Cold, it imitates the sim's pick alone: the executed chunk, the most rewarded one.
        assert cold[i, _executed(rows, i)] > 0.99
    tied = dict(rows, **{CANDIDATE_REWARDS: np.zeros_like(rows[CANDIDATE_REWARDS])})
    assert np.allclose(candidate_probabilities(tied, ObjectiveConfig()), 1.0 / N)


def test_the_action_loss_alone_is_the_action_term_of_the_whole_loss(rows, agent):
    # The noisy future is invisible to the actions, so leaving it out changes nothing.
    from flywheel.objective import _chunk_data

    observed, future, actions, plan = _chunk_data(agent, rows, ObjectiveConfig(act_on="imagined"))
    noise = {term: flow.row_noise(data, list(range(10 * k, 10 * k + rows.n)))
             for k, (term, data) in enumerate((("future", future), ("action", actions)))}
    returns = torch.linspace(-1.0, 1.0, rows.n)
    whole = agent.loss(observed, future, actions, returns, noise=noise, plan=plan)
    alone = agent.action_loss(observed, plan, actions, returns, noise=noise["action"])
    for term in ("action", "return"):
        assert torch.allclose(alone[term], whole[term], rtol=1e-5), term


def test_the_candidates_term_is_added_and_its_shares_sum_to_the_whole_batch(rows):
    torch.manual_seed(1)
    agent, key = Agent("tiny"), (5, 0, 2)
    on, off = ObjectiveConfig(candidate_samples=2), ObjectiveConfig()

    def run(cfg, **kw):
        agent.zero_grad()
        losses = batch_loss(agent, rows, cfg, noise_seed=key, **kw)
        losses["total"].backward()
        return losses, {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}

    whole, whole_grad = run(on)
    without, _ = run(off)
    assert CANDIDATES not in without and torch.isfinite(whole[CANDIDATES]) and whole[CANDIDATES] > 0
    # The return head trades the executed chunks' return-to-go for ranking the drawn candidates.
    assert not torch.allclose(whole["return"], without["return"])
    assert torch.allclose(whole["total"] - whole[CANDIDATES] - cfg_coef(on) * whole["return"],
                          without["total"] - cfg_coef(off) * without["return"], rtol=1e-5)
    shares = [run(on, rank=r, world_size=2) for r in range(2)]  # 9 rows: 4 + 5
    for term in (CANDIDATES, "return", "total"):
        assert torch.allclose(sum(s[term] for s, _ in shares), whole[term], rtol=1e-5), term
    for name, grad in whole_grad.items():
        summed = sum(g[name] for _, g in shares if name in g)
        # Float32 roundoff of two shares' sums, at the scale of the tensor's largest entry: measured
        # up to 2.3e-6 of it (the action time embedding's gradient sums over 3 times the samples).
        assert torch.allclose(summed, grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max())), name


def cfg_coef(cfg):
    return cfg.return_coef


def test_the_return_head_learns_to_rank_a_states_candidates_as_the_sim_did(rows):
    # Trained on the candidates' sibling scores alone, the head orders a state's imagined futures
    # by the reward the sim gave them: its scores come to correlate with the sim's.
    torch.manual_seed(3)
    agent = Agent("tiny")
    cfg = ObjectiveConfig(candidate_samples=N, return_coef=1.0)
    opt = torch.optim.Adam(agent.model.heads["return"].parameters(), lr=3e-3)
    from flywheel.objective import _chunk_data, sibling_scores

    observed, *_ = _chunk_data(agent, rows, cfg)  # the head reads the plan's hidden states: only it trains
    before = _rank_agreement(agent, rows, observed)
    for step in range(300):
        opt.zero_grad()
        batch_loss(agent, rows, cfg, noise_seed=(step,))["return"].backward()
        opt.step()
    after = _rank_agreement(agent, rows, observed)
    assert after > 0.5 and after > before + 0.5, (before, after)  # measured: -0.52 -> 0.70
    assert sibling_scores(rows).std() > 0


def _rank_agreement(agent, rows, observed):
    """The Pearson correlation of the return head's scores of every candidate's imagined future
    with the candidates' sibling scores, over all rows."""
    from flywheel.objective import sibling_scores
    from policies.future import to_model
    from policies.model import Item

    scores = []
    with torch.no_grad():
        for c in range(N):
            plan = Data({"proprio": torch.as_tensor(rows[CANDIDATE_IMAGINED][:, c])}, {"proprio": observed.proprio_mask})
            hidden, _ = agent.model.run([*observed.items, Item("future", to_model(agent.model, plan,
                                                                                   observed.history()))])
            scores.append(agent.model.heads["return"](hidden[-1]).numpy())
    return float(np.corrcoef(np.stack(scores, axis=1).ravel(), sibling_scores(rows).ravel())[0, 1])


def test_the_candidates_term_trains_the_action_expert_towards_the_drawn_candidates(rows):
    # Cold, every draw is the executed chunk on its own plan: the term is the action loss on those.
    torch.manual_seed(2)
    agent = Agent("tiny")
    cold = ObjectiveConfig(candidate_samples=1, temperature=1e-3)
    drawn = batch_loss(agent, rows, cold, noise_seed=(7,))[CANDIDATES]
    from flywheel.objective import _chunk_data, seed_of

    observed, _, actions, plan = _chunk_data(agent, rows, ObjectiveConfig(act_on="imagined"))
    noise = flow.row_noise(actions, [seed_of(7, i, 3, 0) for i in range(rows.n)])
    expected = agent.action_loss(observed, plan, actions, noise=noise,
                                 denominators={"action": flow.loss_denominators(actions)})
    assert torch.allclose(drawn, expected["action"], rtol=1e-5)


def test_rows_without_candidates_are_refused_naming_the_knob(agent):
    envs = [sims.make(SIM, max_episode_steps=20)]
    plain = collect(agent, envs, RolloutSpec(episodes=1, seed=0, n_candidates=2, choose="model"))
    with pytest.raises(ValueError, match="candidate_samples"):
        batch_loss(agent, plain, ObjectiveConfig(candidate_samples=2), noise_seed=(0,))


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_candidate_count_names_the_field(bad):
    with pytest.raises(ValueError, match="learner.candidate_samples"):
        ObjectiveConfig(candidate_samples=bad)


def test_a_run_that_does_not_choose_in_the_sim_cannot_learn_its_candidates():
    with pytest.raises(ConfigError, match="learner.candidate_samples=4.*choose=sim"):
        RunConfig(choose="model", learner=LearnerConfig(candidate_samples=4))
    RunConfig(learner=LearnerConfig(candidate_samples=4))  # the defaults choose in the sim
    with pytest.raises(ValueError, match="learner.candidate_samples.*choose=sim"):
        RolloutSpec(episodes=1, choose="model", candidate_futures=True)


def test_the_ranker_learns_to_pick_the_candidate_the_sim_picked(rows):
    torch.manual_seed(4)
    agent = Agent("tiny")
    agent.model.grow_ranker(seed=0)
    cfg = ObjectiveConfig(ranker=True)
    opt = torch.optim.Adam(agent.model.heads[RANK].parameters(), lr=3e-3)
    before = _ranker_agrees(agent, rows)
    for step in range(200):
        opt.zero_grad()
        batch_loss(agent, rows, cfg, noise_seed=(step,))[RANK].backward()
        opt.step()
    after = _ranker_agrees(agent, rows)
    assert after >= 0.9 and after > before + 0.3, (before, after)  # measured: 0.33 -> 1.0 of 9 rows


def _ranker_agrees(agent, rows):
    """The fraction of rows where the ranker's best candidate is the one the sim scored best."""
    from flywheel.objective import _chunk_data

    observed, *_ = _chunk_data(agent, rows, ObjectiveConfig())
    chunks = torch.as_tensor(rows[CANDIDATE_ACTIONS]) * observed.action_mask[:, None]
    with torch.no_grad():
        scores = agent.model.heads[RANK](agent.critic_features(observed), chunks).numpy()
    return float(np.mean(scores.argmax(axis=1) == sibling_scores(rows).argmax(axis=1)))


def test_the_ranker_never_moves_the_policy_and_its_shares_sum_to_the_whole_batch(rows):
    torch.manual_seed(5)
    agent, key = Agent("tiny"), (1, 0, 3)
    agent.model.grow_ranker(seed=0)

    def run(cfg, **kw):
        agent.zero_grad()
        losses = batch_loss(agent, rows, cfg, noise_seed=key, **kw)
        losses["total"].backward()
        return losses, {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}

    (on, on_grad), (off, off_grad) = run(ObjectiveConfig(ranker=True)), run(ObjectiveConfig())
    assert RANK not in off and torch.isfinite(on[RANK]) and on[RANK] > 0
    assert torch.allclose(on["total"] - on[RANK], off["total"])
    ranker = {n for n in on_grad if f"heads.{RANK}." in n}
    assert ranker and not ranker & set(off_grad)
    assert set(on_grad) - ranker == set(off_grad)
    for name, grad in off_grad.items():  # every other parameter's gradient is untouched
        assert torch.equal(on_grad[name], grad), name
    shares = [run(ObjectiveConfig(ranker=True), rank=r, world_size=2)[0][RANK] for r in range(2)]
    assert torch.allclose(sum(shares), on[RANK], rtol=1e-5)


def test_the_ranker_refuses_rows_without_candidates_naming_the_knob(agent):
    envs = [sims.make(SIM, max_episode_steps=20)]
    plain = collect(agent, envs, RolloutSpec(episodes=1, seed=0, n_candidates=2, choose="model"))
    with pytest.raises(ValueError, match="learner.ranker"):
        batch_loss(agent, plain, ObjectiveConfig(ranker=True), noise_seed=(0,))
    with pytest.raises(ConfigError, match="learner.ranker=true.*choose=sim"):
        RunConfig(choose="model", learner=LearnerConfig(ranker=True))
    with pytest.raises(ValueError, match="learner.ranker must be true or false"):
        ObjectiveConfig(ranker=1)


def test_with_the_look_ahead_the_candidates_rank_by_their_continued_run(looked, rows, agent):
    continued = looked[CANDIDATE_LOOKAHEAD_REWARD]
    assert CANDIDATE_LOOKAHEAD_REWARD not in rows and continued.shape == (looked.n, N)
    for i in range(looked.n):
        assert _executed(looked, i) == int(np.argmax(continued[i]))  # what the sim picked by
    z = sibling_scores(looked)
    expected = (continued - continued.mean(axis=1, keepdims=True)) / continued.std(axis=1, keepdims=True)
    assert np.allclose(z, expected)
    one_chunk = sibling_scores({k: v for k, v in looked.items() if k != CANDIDATE_LOOKAHEAD_REWARD})
    assert not np.allclose(z, one_chunk)  # the look-ahead reorders some rows' candidates
    cold = candidate_probabilities(looked, ObjectiveConfig(temperature=0.01))
    assert all(cold[i, _executed(looked, i)] > 0.99 for i in range(looked.n))
    # The ranker learns that order: its loss reads the column.
    torch.manual_seed(3)
    learner = Agent("tiny")
    learner.model.grow_ranker(seed=0)
    without = ChunkRows({k: v for k, v in looked.items() if k != CANDIDATE_LOOKAHEAD_REWARD})
    on, off = (batch_loss(learner, r, ObjectiveConfig(ranker=True), noise_seed=(4,))[RANK] for r in (looked, without))
    assert not torch.equal(on, off)


@pytest.mark.parametrize("config", [ObjectiveConfig(), ObjectiveConfig(critic=True, advantage="critic"),
                                    ObjectiveConfig(ranker=True), ObjectiveConfig(candidate_samples=2)],
                         ids=["defaults", "critic", "ranker", "candidate_samples"])
@pytest.mark.parametrize("kind", ["rows", "looked"])
def test_the_loss_is_the_same_without_the_columns_it_never_reads(kind, config, request):
    rows = request.getfixturevalue(kind)
    torch.manual_seed(3)
    agent = Agent("tiny")
    agent.model.grow_critic(ensemble=2, seed=0)
    agent.model.grow_ranker(seed=0)
    unread = unread_columns(config)
    read = ChunkRows({k: v for k, v in rows.items() if k not in unread})
    whole, projected = (batch_loss(agent, r, config, noise_seed=(4,)) for r in (rows, read))
    assert whole.keys() == projected.keys()
    for term in whole:
        assert torch.equal(whole[term], projected[term]), term
    if config == ObjectiveConfig():  # the default run reads none of the candidates the sim ran
        assert not ChunkRows.of(read).candidates and CANDIDATE_IMAGINED not in read


def test_a_term_that_reads_the_candidates_keeps_them():
    assert set(unread_columns(ObjectiveConfig())) >= {CANDIDATE_ACTIONS, CANDIDATE_REWARDS, CANDIDATE_IMAGINED}
    assert unread_columns(ObjectiveConfig(critic=True)) == (CANDIDATE_IMAGINED, CANDIDATE_LOOKAHEAD_REWARD)
    assert unread_columns(ObjectiveConfig(ranker=True)) == (CANDIDATE_IMAGINED,)
    assert unread_columns(ObjectiveConfig(candidate_samples=1)) == ()
