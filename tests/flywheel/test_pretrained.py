"""Where a run starts: scratch, a named checkpoint, the default one, or a small one pretrained first."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from configs import CONFIG_DIR
from configs.run_schema import RunConfig
from flywheel import pretrained


@pytest.fixture
def quick_small_preset(tmp_path, monkeypatch):
    """The small preset shrunk to seconds (the tiny sizes), in a fresh working directory."""
    preset = OmegaConf.merge(OmegaConf.load(f"{CONFIG_DIR}/pretrain/tiny.yaml"), {
        "name": "small", "data": {"sims": ["mujoco/reacher-twin"], "workers": 1, "first": 2000},
        "schedule": {"steps": 60}, "eval": {"episodes": 0, "examples": 16}})
    path = tmp_path / "small.yaml"
    OmegaConf.save(preset, path)
    monkeypatch.setattr(pretrained, "SMALL_PRESET", path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_shipped_small_preset_pretrains_the_default_task():
    config = pretrained.small_config()
    assert config.name == "small" and RunConfig().sim.name in config.data.sims
    assert list(config.stages) == ["understand", "image", "video", "action"]


def test_without_any_checkpoint_a_small_one_is_pretrained_first_then_reused(quick_small_preset):
    lines = []
    agent, source = pretrained.starting_agent(RunConfig(), quick_small_preset, console=lines.append)
    small = quick_small_preset / "runs" / "pretrain" / "small" / "checkpoint"
    assert (small / "model.safetensors").is_file() and Path(source).resolve() == small.resolve()
    assert any("pretraining a small one first" in line for line in lines)
    assert agent.cfg.experts == ("understand", "image", "video", "action")

    lines.clear()
    again, _ = pretrained.starting_agent(RunConfig(), quick_small_preset, console=lines.append)
    assert not any("pretraining" in line for line in lines)  # reused, not trained again
    assert sum("using the small pretrained one" in line for line in lines) == 1
    lines.clear()
    pretrained.starter(RunConfig(), console=lines.append)  # as the prior data resolves it: said once is enough
    assert lines == []
    assert all(a.equal(b) for a, b in zip(agent.model.state_dict().values(), again.model.state_dict().values()))


def test_a_named_missing_checkpoint_that_a_starter_preset_writes_is_pretrained_first(quick_small_preset, monkeypatch):
    # As configs/pretrain/small_cartpole.yaml: the small preset (here the quick one) on another sim.
    preset = quick_small_preset / "small_other.yaml"
    preset.write_text("defaults:\n  - small\n  - _self_\nname: small-other\ndata:\n  sims: [mujoco/cartpole-balance-twin]\n")
    assert preset in pretrained.starter_presets()  # a starter is one more file beside small.yaml
    path = Path("runs/pretrain/small-other/checkpoint")
    lines = []
    agent, source = pretrained.starting_agent(RunConfig(pretrained=str(path)), quick_small_preset, console=lines.append)
    assert source == str(path) and (path / "model.safetensors").is_file()
    assert any("pretraining a small one first" in line and "pretrain=small_other" in line for line in lines)
    recipe = (path.parent / "config.yaml").read_text()
    assert "mujoco/cartpole-balance-twin" in recipe and "steps: 60" in recipe  # the sibling preset merged under it
    assert not Path("runs/pretrain/small").exists()  # only the named starter


def test_the_default_checkpoint_wins_over_the_small_one(quick_small_preset):
    from policies import checkpoint
    from policies.config import model_config
    from policies.model import Model

    checkpoint.save(Model(model_config("tiny")), quick_small_preset / pretrained.DEFAULT)
    lines = []
    pretrained.starting_agent(RunConfig(), quick_small_preset, console=lines.append)
    assert lines == [f"starting from the pretrained checkpoint {pretrained.DEFAULT}"]
    assert not (quick_small_preset / "runs" / "pretrain" / "small").exists()


def test_a_named_checkpoint_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no pretrained checkpoint there"):
        pretrained.starting_agent(RunConfig(pretrained=str(tmp_path / "nowhere")), tmp_path)


def test_a_checkpoint_of_another_architecture_is_a_config_error_naming_pretrained(tmp_path):
    from dataclasses import replace

    from configs.errors import ConfigError
    from policies import checkpoint
    from policies.config import model_config
    from policies.model import Model

    no_video = tmp_path / "no-video"
    checkpoint.save(Model(replace(model_config("tiny"), experts=("understand", "action"),
                                  modalities=(("text", "understand"), ("frame", "understand"),
                                              ("proprio", "understand"), ("action", "action")))), no_video)
    with pytest.raises(ConfigError, match=r"pretrained=.*learner\.train_experts \['video'\] are not experts of the model"):
        pretrained.starting_agent(RunConfig(pretrained=str(no_video)), tmp_path)

    mismatched = tmp_path / "mismatched"
    checkpoint.save(Model(model_config("tiny")), mismatched)
    header = (mismatched / "config.json").read_text().replace('"d_model": 32', '"d_model": 48')
    (mismatched / "config.json").write_text(header)
    with pytest.raises(ConfigError, match=r"pretrained=.*does not match"):
        pretrained.starting_agent(RunConfig(pretrained=str(mismatched)), tmp_path)


@pytest.mark.parametrize("posing", ["pickle", "truncated"])
def test_pretrained_weights_that_are_not_safetensors_are_one_line_and_exit_code_2(tmp_path, capsys, posing):
    import pickle

    from flywheel.cli import main
    from policies import checkpoint
    from policies.config import model_config
    from policies.model import Model

    path = checkpoint.save(Model(model_config("tiny")), tmp_path / "ckpt")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(pickle.dumps({"weights": [1.0]}) if posing == "pickle" else data[: len(data) // 2])
    assert main(["run", f"run_dir={tmp_path / 'run'}", f"pretrained={path}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"flywheel: error: pretrained={path}: {weights}: not a readable safetensors file")
    assert line.endswith("or start from pretrained=scratch")
