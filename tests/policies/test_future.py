"""The imagined future's coordinates (``policies.future``): relative to the latest observed step,
in units of the motion's spread; identity for checkpoints that imagine absolute proprio."""

import numpy as np
import pytest
import torch

from policies.agent import Agent
from policies.config import SIZES, ModelConfig
from policies.future import from_model, to_model
from policies.model import Model
from sims import make


def _model(relative: bool = True) -> Model:
    torch.manual_seed(0)
    model = Model(ModelConfig(**{**SIZES["tiny"].to_dict(), "relative_future": relative}))
    scale = torch.rand(model.cfg.chunk, model.cfg.proprio_pad) + 0.1
    model.tokenizers["future"].set_motion_scale(scale)
    return model


def _observed(agent: Agent):
    env = make("mujoco/reacher-twin")
    obs, _ = env.reset(seed=3)
    history = [obs["proprio"]]
    for _ in range(agent.cfg.history - 1):
        obs, *_ = env.step(np.array([0.5, -0.5], np.float32))
        history.append(obs["proprio"])
    return agent.observe({"proprio": np.stack(history), "task": env.task_text}, env.embodiment), env


def test_holding_still_is_the_origin_and_the_map_inverts():
    agent = Agent(model=_model())
    observed, env = _observed(agent)
    history = observed.history()
    hold = observed.future_data(history[:, -1:].expand(1, agent.cfg.chunk, -1).clone())
    z = to_model(agent.model, hold, history)
    assert torch.count_nonzero(z.values["proprio"]) == 0  # staying put is z = 0, the flow's mean
    moved = observed.future_data(torch.randn(1, agent.cfg.chunk, agent.cfg.proprio_pad))
    z = to_model(agent.model, moved, history)
    real = env.embodiment.proprio_dim
    assert torch.all(z.values["proprio"][..., real:] == 0)  # padding stays exactly zero
    back = from_model(agent.model, z, history).values["proprio"]
    torch.testing.assert_close(back[..., :real], moved.values["proprio"][..., :real])
    # one step of a unit motion scale's size is one unit of z
    scale = agent.model.tokenizers["future"].motion_scale
    step = hold.values["proprio"].clone()
    step[0, 2, 0] += scale[2, 0]
    assert to_model(agent.model, hold.with_values({"proprio": step}), history).values["proprio"][0, 2, 0] == \
        pytest.approx(1.0)


def test_a_checkpoint_saved_before_relative_futures_loads_as_absolute(tmp_path):
    import json

    from policies import checkpoint

    torch.manual_seed(0)
    old = Model(ModelConfig(**{**SIZES["tiny"].to_dict(), "relative_future": False}))
    path = checkpoint.save(old, tmp_path / "old")
    config = json.loads((path / "config.json").read_text())
    config["config"].pop("relative_future")  # as written before the field existed
    (path / "config.json").write_text(json.dumps(config))
    loaded = checkpoint.load(path)
    assert loaded.cfg.relative_future is False and not hasattr(loaded.tokenizers["future"], "motion_scale")
    with pytest.raises(ValueError, match="imagines absolute proprio"):
        loaded.tokenizers["future"].set_motion_scale(torch.ones(8, loaded.cfg.proprio_pad))


def test_absolute_checkpoints_are_untouched():
    model = Model(ModelConfig(**{**SIZES["tiny"].to_dict(), "relative_future": False}))
    agent = Agent(model=model)
    observed, _ = _observed(agent)
    future = observed.future_data(torch.randn(1, agent.cfg.chunk, agent.cfg.proprio_pad))
    assert to_model(model, future, observed.history()) is future
    # a config saved before the field existed loads as absolute
    legacy = {k: v for k, v in SIZES["tiny"].to_dict().items() if k != "relative_future"}
    assert ModelConfig.from_dict(legacy).relative_future is False
    assert ModelConfig.from_dict(SIZES["tiny"].to_dict()).relative_future is True


def test_imagination_comes_back_in_absolute_proprio_near_the_body():
    """An untrained relative expert imagines noise of one motion's size around where the body is:
    its imagined steps stay within a few motion scales of the latest observation."""
    model = _model()
    model.tokenizers["future"].set_motion_scale(torch.full((model.cfg.chunk, model.cfg.proprio_pad), 1e-3))
    agent = Agent(model=model)
    observed, _ = _observed(agent)
    context = agent.perceive(observed)
    imagined = agent.imagine(context, 4, generator=torch.Generator().manual_seed(0)).future.values["proprio"]
    latest = observed.history()[:, -1:]
    assert imagined.shape[0] == 4
    assert (imagined - latest).abs().max() < 0.5  # absolute states would be O(1) apart


def test_a_motion_scale_must_be_positive():
    model = _model()
    with pytest.raises(ValueError, match="motion scale"):
        model.tokenizers["future"].set_motion_scale(torch.zeros(model.cfg.chunk, model.cfg.proprio_pad))
