"""One model, many problems: every route through the same weights, and ``flywheel routes``."""

import json
from dataclasses import replace

import pytest
import torch

import numpy as np

from flywheel.cli import main
from policies.agent import Agent
from policies import checkpoint
from policies.config import SIZES
from policies.data import Data, encode_text
from policies.model import Model
from policies.routes import ROUTES, generate, route, route_loss, route_table
from sims.embodiment import Embodiment

TINY = SIZES["tiny"]
# With the command tokenizer pretraining adds for the video stage: the world-model route's input.
CMD = replace(TINY, modalities=TINY.modalities + (("command", "video"),))
B = 2


def _data(g):
    pmask = (torch.arange(TINY.proprio_pad) < 4).expand(B, 1, -1)
    amask = (torch.arange(TINY.action_pad) < 2).expand(B, 1, -1)
    s = TINY.image_size
    return {
        "text": encode_text(["open the drawer", "stack"], TINY.text_max),
        "frame": Data({"frame": torch.randint(0, 255, (B, 24, 24, 3), generator=g, dtype=torch.uint8)}),
        "proprio": Data({"proprio": torch.randn(B, 2, TINY.proprio_pad, generator=g)}, {"proprio": pmask}),
        "action": Data({"action": torch.rand(B, TINY.chunk, TINY.action_pad, generator=g) * 2 - 1}, {"action": amask}),
        "command": Data({"action": torch.rand(B, TINY.chunk, TINY.action_pad, generator=g) * 2 - 1}, {"action": amask}),
        "future": Data({"proprio": torch.randn(B, TINY.chunk, TINY.proprio_pad, generator=g),
                        "frames": torch.rand(B, TINY.chunk, s, s, 3, generator=g) * 2 - 1}, {"proprio": pmask}),
        "image": Data({"image": torch.rand(B, s, s, 3, generator=g) * 2 - 1}),
    }


@pytest.mark.parametrize("r", ROUTES, ids=lambda r: r.name)
def test_every_route_generates_and_trains_through_the_same_weights(r):
    torch.manual_seed(0)
    model = Model(CMD)
    data = _data(torch.Generator().manual_seed(0))
    inputs = {m: data[m] for m in r.inputs}
    target = encode_text(["a caption", "b"], TINY.text_max) if r.output == "text" else data[r.output]
    loss = route_loss(model, inputs, r.output, target)
    assert torch.isfinite(loss)
    loss.backward()
    out_expert = CMD.expert_of(r.output)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.expert_parameters(out_expert))
    out = generate(model, inputs, r.output, template=None if r.output == "text" else data[r.output],
                   steps=2, max_len=6)
    if r.output == "text":
        assert isinstance(out, list) and len(out) == B
    else:
        for k, v in data[r.output].values.items():
            assert out.values[k].shape == v.shape


def test_routes_from_a_raw_observation_through_the_agent():
    torch.manual_seed(0)
    agent = Agent("tiny").eval()
    body = Embodiment("arm", 3, 2, (-1.0, -1.0), (1.0, 1.0))
    observed = agent.observe({"proprio": np.zeros(3, np.float32), "task": "lift",
                              "image": np.zeros((20, 20, 3), np.uint8)}, body)
    actions = observed.action_data(torch.zeros(1, TINY.chunk, TINY.action_pad))
    future = agent.generate({**observed.inputs(), "action": actions}, "future",  # any inputs, any output
                            template=agent.future_template(observed))
    assert future.values["proprio"].shape == (1, TINY.chunk, TINY.proprio_pad)
    assert (future.values["proprio"][..., 3:] == 0).all()
    assert future.values["frames"].shape == (1, TINY.chunk, TINY.image_size, TINY.image_size, 3)
    caption = agent.generate({"frame": observed.inputs()["frame"]}, "text")
    assert isinstance(caption[0], str)


def test_a_text_output_learns_to_describe_frames():
    torch.manual_seed(0)
    cfg = replace(TINY, experts=("understand",))
    model = Model(cfg)
    frames = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    frames[0, :, :, 0] = 255  # a red frame
    frames[1, :, :, 2] = 255  # a blue frame
    captions = encode_text(["red", "blue"], cfg.text_max)
    inputs = {"frame": Data({"frame": frames})}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(120):
        opt.zero_grad()
        route_loss(model, inputs, "text", captions).backward()
        opt.step()
    assert generate(model, inputs, "text") == ["red", "blue"]


def test_route_table_follows_the_experts():
    rows = {r["route"]: r for r in route_table(replace(TINY, experts=("understand", "action")))}
    assert rows["policy"]["supported"] and rows["policy"]["trained"] == "action"
    assert not rows["world_model"]["supported"] and rows["world_model"]["missing"] == ["command", "future"]
    assert rows["policy"]["experts"] == ["understand", "action"]
    model = Model(replace(TINY, experts=("understand", "action")))
    with pytest.raises(ValueError, match="no 'future' tokenizer"):
        generate(model, {"proprio": _data(torch.Generator())["proprio"]}, "future", template=None)
    with pytest.raises(ValueError, match="unknown route"):
        route("teleport")


def test_flywheel_routes_for_a_config_and_for_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "routes.json"
    assert main(["routes", "agent=small", "agent.experts=[understand,action]", f"json_out={out}"]) == 0
    rows = {r["route"]: r for r in json.loads(out.read_text())}
    assert rows["policy"]["supported"] and not rows["frame_generation"]["supported"]
    assert "policy" in capsys.readouterr().out

    model = Model(replace(TINY, experts=("understand", "image")))
    model.freeze("understand")
    checkpoint.save(model, tmp_path / "ckpt")
    assert main(["routes", "--checkpoint", str(tmp_path / "ckpt"), "--json-out", str(out)]) == 0
    rows = {r["route"]: r for r in json.loads(out.read_text())}
    assert rows["frame_generation"]["supported"] and not rows["policy"]["supported"]
    printed = capsys.readouterr().out
    assert "frame_generation" in printed and "frozen: understand" in printed


def test_flywheel_routes_bad_input_is_one_line(tmp_path, capsys):
    assert main(["routes", "--checkpoint", str(tmp_path)]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err
    assert main(["routes", "agent.size=huge"]) == 2
    assert "unknown model size 'huge'" in capsys.readouterr().err
