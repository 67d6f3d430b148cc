"""The chunk ranker (``policies.ranker``): what it learns, how a model grows it, how planning uses it."""

import numpy as np
import pytest
import torch

from policies import checkpoint
from policies.agent import Agent
from policies.model import Model
from policies.config import model_config
from policies.ranker import RANK, ChunkRanker, ranking_loss
from sims.embodiment import Embodiment

ARM = Embodiment("arm", 6, 3, (-2.0, -1.0, 0.0), (2.0, 1.0, 4.0))


def test_the_loss_sees_only_differences_between_one_states_candidates():
    targets = torch.tensor([[1.0, -1.0], [0.5, -0.5]])
    # Hand-checked: centred scores 0 against targets +-1 and +-0.5, over 2 rows x 2 candidates.
    assert ranking_loss(torch.zeros(2, 2), targets, 2).item() == pytest.approx((1 + 1 + 0.25 + 0.25) / 4)
    scores = torch.tensor([[3.0, 1.0], [-7.0, -8.0]])  # the targets' differences, each row shifted
    assert ranking_loss(scores, targets, 2).item() == pytest.approx(0.0)
    # Wrong order costs: swapping one row's candidates is penalised.
    assert ranking_loss(scores.flip(1), targets, 2).item() > 0.5
    # Rank shares: each rank divides by the global batch, so the shares sum to the whole.
    s = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    t = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    whole = ranking_loss(s, t, 4)
    assert (ranking_loss(s[:1], t[:1], 4) + ranking_loss(s[1:], t[1:], 4)).item() == pytest.approx(whole.item())


def test_a_model_grows_a_ranker_seeded_and_without_touching_the_callers_random_stream(tmp_path):
    torch.manual_seed(0)
    a, b = Model(model_config("tiny")), Model(model_config("tiny"))
    torch.manual_seed(5)
    a.grow_ranker(seed=3)
    after = torch.rand(1)
    torch.manual_seed(5)
    b.grow_ranker(seed=3)
    assert torch.equal(torch.rand(1), after)  # the caller's stream went on as if nothing was drawn
    for (name, p), (_, q) in zip(a.heads[RANK].named_parameters(), b.heads[RANK].named_parameters()):
        assert torch.equal(p, q), name
    assert a.has_ranker and a.cfg.ranker
    with pytest.raises(ValueError, match="already has a chunk ranker"):
        a.grow_ranker()
    # The config records it: a checkpoint of the model has it, weights and all.
    checkpoint.save(a, tmp_path / "m")
    loaded = checkpoint.load(tmp_path / "m")
    assert loaded.has_ranker
    assert torch.equal(loaded.heads[RANK].mlp[0].weight, a.heads[RANK].mlp[0].weight)


def test_planning_scores_candidates_by_the_ranker_where_the_model_has_one():
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    agent.model.grow_ranker(seed=0)
    rng = np.random.default_rng(0)
    ctx = agent.perceive({"proprio": rng.normal(size=(3, 6)).astype(np.float32),
                          "task": ["reach", "reach", "lift"]}, ARM)
    n = 5
    plan = agent.plan(ctx, n_candidates=n, generator=torch.Generator().manual_seed(1))
    # The same candidates, scored by the ranker directly.
    g = torch.Generator().manual_seed(1)
    acted = agent.act(ctx, agent.imagine(ctx, n, generator=g), generator=g)
    chunks = acted.actions.zeroed().values["action"].view(3, n, agent.cfg.chunk, agent.cfg.action_pad)
    with torch.no_grad():
        expected = agent.model.heads[RANK](agent.critic_features(ctx.observed), chunks)
    assert expected.std(dim=1).min() > 0  # it tells the candidates apart
    torch.testing.assert_close(plan.scores, expected)
    assert torch.equal(plan.choice, expected.argmax(dim=1))
    assert plan.returns is not None  # the return head still reports, it just does not choose


def test_the_ranker_scores_each_candidate_alone():
    """A candidate's score depends on its own chunk and the state, not on its siblings."""
    torch.manual_seed(0)
    cfg = model_config("tiny")
    ranker = ChunkRanker(cfg)
    features = torch.randn(2, cfg.d_model + cfg.proprio_pad)
    chunks = torch.randn(2, 4, cfg.chunk, cfg.action_pad)
    scores = ranker(features, chunks)
    assert scores.shape == (2, 4)
    torch.testing.assert_close(ranker(features, chunks[:, [2, 0]]), scores[:, [2, 0]])
