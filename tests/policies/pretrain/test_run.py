"""The tiny configuration end to end: interrupted, resumed, checkpoint loads, frozen experts
are bit-identical across later stages, understanding beats chance, every listed route is trained
and reported; bad input fails early."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from configs import CONFIG_DIR
from configs.schema import PretrainConfig, to_dataclass
from flywheel.cli import main
from policies import checkpoint
from policies.agent import Agent
from policies.pretrain import pretrain
from policies.pretrain.schedule import DECAY

STAGES = ["understand", "image", "video", "action"]

# One worker builds the module fixture; split across two, each would build it at once (~4x slower).
pytestmark = pytest.mark.xdist_group("pretrain-tiny")


def _config(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=["pretrain=tiny", f"root={tmp_path / 'runs'}",
                                                         f"data.cache_dir={tmp_path / 'cache'}", *overrides])
    return to_dataclass(cfg, PretrainConfig)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny run, killed after the video stage, then resumed through ``flywheel pretrain``."""
    tmp = tmp_path_factory.mktemp("pretrain")
    config = _config(tmp)

    def stop_after_video(band, metrics):
        if band == "video":
            raise Interrupted

    with pytest.raises(Interrupted):
        pretrain(config, on_band_end=stop_after_video, log=lambda s: None, progress=False)
    run_dir = tmp / "runs" / "tiny"
    before = {s: (run_dir / "stages" / s / "done.json").read_bytes() for s in ("understand", "image", "video")}
    assert not (run_dir / "stages" / "action").exists() and not (run_dir / "checkpoint").exists()
    rc = main(["pretrain", "pretrain=tiny", f"root={tmp / 'runs'}", f"data.cache_dir={tmp / 'cache'}"])
    assert rc == 0
    return run_dir, before, config


def test_tiny_run_writes_the_run_directory(tiny_run):
    # Its duration (about a minute on 2 cores) shows in `pytest --durations`; the project
    # keeps wall-clock targets out of unit tests.
    run_dir = tiny_run[0]
    for name in ("schedule.png", "metrics.json", "metrics.md", "config.yaml", "checkpoint/model.safetensors"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert [m["stage"] for m in summary["metrics"]] == [*STAGES, DECAY]
    assert "| understand |" in (run_dir / "metrics.md").read_text()


def test_the_checkpoint_loads_with_every_expert_and_acts(tiny_run):
    run_dir = tiny_run[0]
    model = checkpoint.load(run_dir / "checkpoint")
    assert model.cfg.experts == tuple(STAGES) and not model.frozen
    assert ("command", "video") in model.cfg.modalities
    agent = Agent.from_checkpoint(run_dir / "checkpoint").eval()
    import sims

    env = sims.make("mujoco/reacher-twin")
    obs, _ = env.reset(seed=0)
    obs["proprio"] = obs["proprio"][None].repeat(2, 0)
    actions = agent.act(agent.perceive(obs, env.embodiment)).actions.values["action"]
    assert actions.shape == (1, model.cfg.chunk, model.cfg.action_pad) and torch.isfinite(actions).all()
    # The proprio statistics of the pretraining data travel with the weights.
    assert not torch.all(model.tokenizers["proprio"].scale == 1)


def test_frozen_experts_are_bit_identical_across_later_stages(tiny_run):
    run_dir = tiny_run[0]
    states = {s: checkpoint.load(run_dir / "stages" / s / "model") for s in STAGES}
    for i, stage in enumerate(STAGES):
        owner = states[stage]
        assert owner.frozen == set(STAGES[:i]), f"after {stage}: frozen {owner.frozen}"
        reference = {id(p): p for p in owner.expert_parameters(stage)}
        trained_once = [p.detach().clone() for p in reference.values()]
        for later in STAGES[i + 1:]:
            now = states[later].expert_parameters(stage)
            assert len(now) == len(trained_once)
            assert all(torch.equal(a, b) for a, b in zip(trained_once, now)), f"{stage} moved during {later}"
    # The decay unfreezes every expert by default, so they do move there.
    decayed = checkpoint.load(run_dir / "stages" / DECAY / "model")
    assert not all(torch.equal(a, b) for a, b in zip(states["action"].expert_parameters("understand"),
                                                     decayed.expert_parameters("understand")))


def test_understanding_beats_chance_on_held_out_questions(tiny_run):
    summary = json.loads((tiny_run[0] / "metrics.json").read_text())
    for m in summary["metrics"]:
        assert m["understand_accuracy"] > m["understand_chance"] + 0.1, m


def test_every_route_flywheel_routes_lists_is_trained_and_reported(tiny_run):
    """A route is listed only if a pretraining stage trains it and the report measures it."""
    from policies.routes import ROUTES, missing_modalities

    run_dir = tiny_run[0]
    summary = json.loads((run_dir / "metrics.json").read_text())
    by_stage = {m["stage"]: m for m in summary["metrics"]}
    trained = checkpoint.read_config(run_dir / "checkpoint")
    for route in ROUTES:
        assert route.stage in by_stage and route.stage in by_stage[route.stage]["training"], route
        assert route.metric in by_stage[route.stage], route  # measured as its stage ends
        assert route.metric in by_stage[DECAY], route  # and at the end of the run
        assert not missing_modalities(route, trained), route  # the pretrained model serves it


def test_an_interrupted_run_resumes_from_its_last_completed_stage(tiny_run):
    run_dir, before, _ = tiny_run
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["resumed_from"] == "video"
    for stage, content in before.items():  # completed stages were not trained again
        assert (run_dir / "stages" / stage / "done.json").read_bytes() == content


def test_joint_curriculum_trains_every_expert_from_the_start(tiny_run, tmp_path, monkeypatch):
    from policies.pretrain import objectives

    # A flywheel run acts without a camera by default: half the acting and imagining batches
    # (train.frame_dropout) go without their frames; understanding is about the frame.
    seen: dict[str, list[bool]] = {}

    def recording(stage, loss):
        def wrapped(model, batch, generator, **kwargs):
            seen.setdefault(stage, []).append("frame" in batch.observation)
            return loss(model, batch, generator, **kwargs)
        return wrapped

    for stage in ("understand", "action"):
        monkeypatch.setitem(objectives.OBJECTIVES, stage, recording(stage, objectives.OBJECTIVES[stage]))
    monkeypatch.setattr(objectives, "video_loss", recording("video", objectives.video_loss))
    _, _, config = tiny_run
    cache = config.data.cache_dir  # the same data: the cache is reused
    rc = main(["pretrain", "pretrain=tiny", "curriculum=joint", "name=joint", f"root={tmp_path}",
               f"data.cache_dir={cache}", "schedule.steps=60", "eval.episodes=0", "eval.examples=16"])
    assert rc == 0
    summary = json.loads((tmp_path / "joint" / "metrics.json").read_text())
    assert all(m["training"] == STAGES for m in summary["metrics"])
    assert summary["data"]["key"] == json.loads((tiny_run[0] / "metrics.json").read_text())["data"]["key"]
    assert all(seen["understand"])
    shown = seen["video"] + seen["action"]
    assert 0.25 < sum(shown) / len(shown) < 0.75, shown


def test_the_starter_is_also_evaluated_as_a_run_without_a_camera_acts(tiny_run):
    decay = json.loads((tiny_run[0] / "metrics.json").read_text())["metrics"][-1]
    assert set(decay["success_no_frames"]) == set(decay["success"]) == set(tiny_run[2].data.sims)
    assert all(0.0 <= v <= 1.0 for v in decay["success_no_frames"].values())
    assert "without frames" in (tiny_run[0] / "metrics.md").read_text()


@pytest.mark.parametrize("override, message", [
    ("train.frame_dropout=1.5", "train.frame_dropout must be in [0, 1]"),
    ("data.sims=[mujoco/reacher-twin,acme/nothing]", "unknown sim 'acme/nothing'"),
    ("stages=[image,understand,video,action]", "does not match the expert list"),
    ("model.experts=[understand,image]", "does not match the expert list"),
    ("data.first=20", "dataset would be empty"),
    ("data.camera=false", "needs data.camera=true"),
    ("curriculum=sideways", "curriculum must be"),
    # The swing-up's demonstrator first succeeds ~285 steps in; tiny cuts episodes at 100.
    ("data.sims=[dmc/cartpole-swingup]", "data.max_steps=100: dmc/cartpole-swingup's demonstrator does not succeed"),
    # Once, a model without it failed after generating its data, on a missing proprio tokenizer.
    (("stages=[action]", "model.experts=[action]"), "leave out 'understand', the expert that reads the proprio"),
])
def test_bad_input_fails_before_any_work_with_a_clear_message(tmp_path, capsys, override, message):
    rc = main(["pretrain", "pretrain=tiny", f"root={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}",
               *(override if isinstance(override, tuple) else (override,))])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "cache").exists()  # nothing was generated
    assert not (tmp_path / "runs").exists()  # no run directory was started
