"""Checkpoints: safetensors + JSON, strict on load, bit-for-bit round trips, never unpickled."""

import json
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from policies import checkpoint
from policies.agent import Agent
from policies.checkpoint import CheckpointError
from policies.config import SIZES
from policies.model import Model
from sims.embodiment import Embodiment

ARM = Embodiment("arm", 4, 2, (-1.0, -1.0), (1.0, 1.0))
OBS = {"proprio": np.linspace(-1, 1, 4, dtype=np.float32), "task": "reach the cup",
       "image": np.full((16, 16, 3), 80, np.uint8)}


def _plan(agent):
    ctx = agent.perceive(OBS, ARM)
    return agent.plan(ctx, n_candidates=3, generator=torch.Generator().manual_seed(0))


def test_save_and_load_round_trip_bit_for_bit(tmp_path, monkeypatch):
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    agent.model.freeze("understand")
    before = _plan(agent)
    path = agent.save(tmp_path / "ckpt", metadata={"cycle": 3})
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint must never be unpickled")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    loaded = checkpoint.load(path, expect=SIZES["tiny"])
    assert loaded.cfg == agent.cfg and loaded.frozen == {"understand"}
    assert checkpoint.read_header(path)["metadata"] == {"cycle": 3}
    after = _plan(Agent.from_checkpoint(path).eval())
    for a, b in ((before.actions, after.actions), (before.scores, after.scores),
                 (before.imagined.values["proprio"], after.imagined.values["proprio"]),
                 (before.imagined.values["frames"], after.imagined.values["frames"])):
        assert torch.equal(a, b)


def test_a_grown_model_round_trips(tmp_path):
    torch.manual_seed(0)
    model = Model(replace(SIZES["tiny"], experts=("understand",)))
    model.add_expert("action", init_from="understand")
    loaded = checkpoint.load(checkpoint.save(model, tmp_path / "grown"))
    assert loaded.cfg.experts == ("understand", "action")
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())


def test_load_rejects_tensors_that_do_not_fit_the_config(tmp_path):
    torch.manual_seed(0)
    path = checkpoint.save(Model(SIZES["tiny"]), tmp_path / "ckpt")
    weights = path / "model.safetensors"
    tensors = load_file(str(weights))
    name = "backbone.experts.action.blocks.0.qkv.weight"
    tensors[name] = torch.zeros(7, 7)
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match=r"shape mismatch .*blocks\.0\.qkv\.weight: \[7, 7\]"):
        checkpoint.load(path)
    del tensors[name]
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match="missing"):
        checkpoint.load(path)


def test_load_checks_the_config(tmp_path):
    torch.manual_seed(0)
    path = checkpoint.save(Model(SIZES["tiny"]), tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="config differs"):
        checkpoint.load(path, expect=SIZES["small"])
    header = json.loads((path / "config.json").read_text())
    header["config"]["d_model"] = 64  # the weights were saved for 32
    (path / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="does not match"):
        checkpoint.load(path)
    header["config"]["d_model"] = "wide"
    (path / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="d_model must be int"):
        checkpoint.load(path)
    header["config"]["colour"] = "red"
    (path / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="unknown ModelConfig field"):
        checkpoint.load(path)
    header["format"] = "something-else"
    (path / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="format"):
        checkpoint.load(path)


@pytest.mark.parametrize("posing", ["pickle", "truncated"])
def test_a_file_posing_as_the_weights_is_a_checkpoint_error_naming_it(tmp_path, posing):
    path = checkpoint.save(Model(SIZES["tiny"]), tmp_path / "ckpt")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(pickle.dumps({"weights": [1.0]}) if posing == "pickle" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{weights}: not a readable safetensors file"):
        checkpoint.load(path)
