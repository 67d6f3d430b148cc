"""Model sizes are data, selected by the Hydra group ``configs/agent``."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

import configs.schema  # noqa: F401  (registers the schema)
from configs import CONFIG_DIR
from configs.schema import AgentConfig, RoutesConfig, to_dataclass
from flywheel.commands.routes import model_config_of
from policies.config import SIZES

AGENT_FILES = sorted(p.stem for p in (Path(CONFIG_DIR) / "agent").glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return to_dataclass(compose(config_name="routes", overrides=overrides), RoutesConfig)


def test_every_size_has_a_config_file_and_back():
    assert set(AGENT_FILES) == set(SIZES)


@pytest.mark.parametrize("name", AGENT_FILES)
def test_each_agent_file_selects_its_size(name):
    agent = _compose([f"agent={name}"]).agent
    assert isinstance(agent, AgentConfig) and agent.size == name
    assert model_config_of(agent) == SIZES[name]


def test_agent_overrides_are_typed_and_applied():
    agent = _compose(["agent=small", "agent.d_model=320", "agent.experts=[understand,action]"]).agent
    cfg = model_config_of(agent)
    assert cfg.d_model == 320 and cfg.experts == ("understand", "action") and cfg.n_layers == SIZES["small"].n_layers
    with pytest.raises(Exception, match="d_model"):
        _compose(["agent.d_model=wide"])
    with pytest.raises(ConfigCompositionException):
        _compose(["agent.widht=3"])
    with pytest.raises(ValueError, match="not divisible"):
        model_config_of(_compose(["agent.d_model=33"]).agent)
