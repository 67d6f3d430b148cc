"""Prior data: the starter's pretraining data beside the flywheel's rows (``flywheel.prior``)."""

import shutil

import pytest
import torch
from omegaconf import OmegaConf

from configs import CONFIG_DIR
from configs.errors import ConfigError
from configs.learning import ObjectiveConfig
from configs.run_schema import LearnerConfig
from configs.schema import PretrainConfig, SimConfig, to_dataclass
from flywheel import prior
from flywheel.controller import run
from flywheel.learners import PRIOR, _Objective, make_optimizer
from flywheel.logger import read_cycles
from flywheel.objective import batch_loss
from flywheel.rollout import RolloutSpec, collect
from flywheel.rows import EPISODE, ChunkRows
from policies.agent import Agent
from policies.pretrain import pretrain
from tests.flywheel.test_run import tiny_config
import sims

pytestmark = pytest.mark.xdist_group("ray-prior")

TRAIN = ["video", "action"]


@pytest.fixture(scope="module")
def starter(tmp_path_factory):
    """A tiny starter pretrained on the reacher in seconds, its recipe and cache beside it."""
    tmp = tmp_path_factory.mktemp("starter")
    recipe = OmegaConf.merge(OmegaConf.load(f"{CONFIG_DIR}/pretrain/tiny.yaml"), {
        "name": "starter", "root": str(tmp / "runs"), "data": {"sims": ["mujoco/reacher-twin"], "first": 2000,
                                                               "cache_dir": str(tmp / "cache")},
        "schedule": {"steps": 40}, "eval": {"episodes": 0, "examples": 16}})
    recipe.pop("defaults", None)
    config = to_dataclass(OmegaConf.merge(OmegaConf.structured(PretrainConfig), recipe), PretrainConfig)
    pretrain(config, log=lambda s: None, progress=False)
    return tmp / "runs" / "starter" / "checkpoint"


@pytest.fixture(scope="module")
def rows(starter):
    torch.manual_seed(0)
    envs = [sims.make("mujoco/reacher-twin", max_episode_steps=16)]
    return ChunkRows.of(collect(Agent.from_checkpoint(starter).eval(), envs, RolloutSpec(episodes=2, seed=3,
                                                                                        planning=False)))


def test_the_coefficient_is_checked_with_the_config():
    with pytest.raises(ConfigError, match="learner.prior_coef"):
        LearnerConfig(prior_coef=-0.5)
    assert prior.resolve(None, 0.0, TRAIN, camera=False) is None  # off: nothing to read, nothing checked


def test_a_start_without_pretraining_data_trains_without_the_term_and_says_why(starter, tmp_path):
    lines = []
    assert prior.resolve(None, 1.0, TRAIN, camera=False, log=lines.append) is None
    bare = tmp_path / "bare" / "checkpoint"
    shutil.copytree(starter, bare)  # the weights without the recipe that made them
    assert prior.resolve(bare, 1.0, TRAIN, camera=False, log=lines.append) is None
    assert prior.resolve(starter, 1.0, ["understand"], camera=False, log=lines.append) is None
    assert len(lines) == 3 and all(line.startswith("prior data: none") for line in lines)
    assert "pretrained=scratch" in lines[0] and str(bare.parent / "config.yaml") in lines[1]
    assert "trained experts ['understand']" in lines[2]
    spec = prior.resolve(starter, 1.0, TRAIN, camera=False, log=lines.append)
    assert spec.stages == ("video", "action") and lines[-1].startswith("prior data: the starter's video and action")


def test_the_ranks_slices_make_one_global_prior_batch(starter, monkeypatch):
    """Data parallelism: rank r reads its contiguous slice of the batch one learner reads."""
    from policies.pretrain import objectives

    spec = prior.resolve(starter, 1.0, TRAIN, camera=False)
    data, model = prior.PriorData(spec), Agent.from_checkpoint(starter).model
    drawn, make_batch = [], objectives.make_batch
    monkeypatch.setattr(objectives, "make_batch", lambda bank, index, m: drawn.append(index) or make_batch(bank, index, m))

    def indices(rank, world):
        drawn.clear()
        data.share(model, (5, 0, 2), 7, rank, world)
        return drawn[:]

    whole = indices(0, 1)
    halves = [indices(r, 2) for r in (0, 1)]
    assert [len(i) for i in whole] == [7, 7] and [len(i) for i in halves[0]] == [3, 3]
    for stage in range(2):  # video, action
        assert torch.equal(torch.cat([halves[0][stage], halves[1][stage]]), whole[stage])
    assert torch.equal(indices(0, 1)[0], whole[0])  # the same step: the same draw
    drawn.clear()
    data.share(model, (5, 0, 3), 7)
    assert not torch.equal(drawn[0], whole[0])  # the next step draws another batch


@pytest.mark.parametrize("camera", [False, True])
def test_the_prior_shows_frames_only_when_the_run_renders_them(starter, monkeypatch, camera):
    spec = prior.resolve(starter, 1.0, TRAIN, camera=camera)
    data, model = prior.PriorData(spec), Agent.from_checkpoint(starter).model
    seen = []
    loss = data._loss
    monkeypatch.setattr(data, "_loss", lambda stage, m, batch, g: seen.append(set(batch.observation)) or loss(stage, m, batch, g))
    data.share(model, (0,), 4)
    assert seen and all(("frame" in keys) == camera for keys in seen)


def test_the_learners_objective_adds_the_prior_to_the_flywheel_loss(starter, rows):
    agent = Agent.from_checkpoint(starter)
    config = ObjectiveConfig(act_on="realized")
    spec = prior.resolve(starter, 0.5, TRAIN, camera=False)
    with_prior = _Objective(agent, config, prior.PriorData(spec))(rows, (1, 0, 0), 0, 1)
    alone = batch_loss(agent, rows, config, noise_seed=(1, 0, 0))
    assert with_prior[PRIOR].item() > 0
    assert with_prior["total"].item() == pytest.approx(alone["total"].item() + with_prior[PRIOR].item(), rel=1e-6)
    agent.model.zero_grad()
    with_prior[PRIOR].backward()  # the prior moves the experts the flywheel trains
    moved = {n.split(".")[2] for n, p in agent.model.named_parameters()
             if n.startswith("backbone.experts.") and p.grad is not None and p.grad.abs().sum() > 0}
    assert {"video", "action"} <= moved


def test_the_prior_batch_is_the_flywheel_batch_unless_its_size_is_set(starter, rows, monkeypatch):
    from policies.pretrain import objectives

    agent, config = Agent.from_checkpoint(starter), ObjectiveConfig(act_on="realized")
    drawn, make_batch = [], objectives.make_batch
    monkeypatch.setattr(objectives, "make_batch", lambda bank, index, m: drawn.append(len(index)) or make_batch(bank, index, m))
    for size, expected in ((None, len(rows[EPISODE])), (3, 3)):
        drawn.clear()
        spec = prior.resolve(starter, 1.0, TRAIN, camera=False, batch_size=size)
        _Objective(agent, config, prior.PriorData(spec))(rows, (1, 0, 0), 0, 1)
        assert drawn == [expected, expected]  # one batch per stage: video, action
    with pytest.raises(ConfigError, match="learner.prior_batch_size"):
        LearnerConfig(prior_batch_size=0)


def test_a_cycle_with_prior_data_records_its_loss(starter, tmp_path):
    config = tiny_config(tmp_path / "run", pretrained=str(starter), sim=SimConfig(name="mujoco/reacher-twin",
                         max_episode_steps=16), reference=SimConfig(name="mujoco/reacher-twin", max_episode_steps=16))
    config.learner.prior_coef = 1.0
    config.learner.act_on = "realized"
    run(config, console=lambda s: None)
    (record,) = read_cycles(tmp_path / "run")
    assert record["learner"]["loss_prior"] > 0
    assert record["learner"]["loss_total"] > record["learner"]["loss_prior"]


def test_the_prior_loss_and_its_gradients_are_the_same_with_the_task_text_cached(starter):
    spec = prior.resolve(starter, 1.0, TRAIN, camera=False)
    data, model = prior.PriorData(spec), Agent.from_checkpoint(starter).model
    make_optimizer(model, TRAIN)
    model.train()
    read = []
    model.tokenizers["text"].register_forward_hook(lambda m, args, out: read.append(out.shape[0]))

    def share():
        read.clear()
        model.zero_grad(set_to_none=True)
        loss = data.share(model, (3, 0, 1), 6)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sum(read)

    plain_loss, plain_grads, plain_reads = share()
    with model.text_prefixes():
        loss, grads, reads = share()
    assert (plain_reads, reads) == (12, 1)  # both stages' 6 examples, then the one instruction once
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    assert sorted(grads) == sorted(plain_grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)
