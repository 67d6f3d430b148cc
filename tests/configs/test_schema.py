from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

import configs.schema  # noqa: F401  (registers the schema)
import sims
from configs import CONFIG_DIR
from configs.schema import SimsRolloutConfig, SimConfig, to_dataclass

SIM_FILES = sorted(p.stem for p in (Path(CONFIG_DIR) / "sim").glob("*.yaml"))


def compose_rollout(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="rollout", overrides=overrides)


@pytest.mark.parametrize("sim_file", SIM_FILES)
def test_every_sim_config_names_a_registered_sim(sim_file):
    config = to_dataclass(compose_rollout([f"sim={sim_file}"]), SimsRolloutConfig)
    assert isinstance(config.sim, SimConfig)
    sims.check_config(config.sim.name, {"fidelity": config.sim.fidelity, "params": config.sim.params})


def test_every_builtin_sim_has_a_config_file():
    named = {to_dataclass(compose_rollout([f"sim={f}"]), SimsRolloutConfig).sim.name for f in SIM_FILES}
    missing = set(sims.names()) - named
    assert not missing, f"no configs/sim/*.yaml selects {sorted(missing)}"


def test_overrides_are_typed():
    config = to_dataclass(compose_rollout(["sim=dmc_cartpole_swingup", "sim.fidelity=0.5", "+sim.params.mass_scale=1.2"]), SimsRolloutConfig)
    assert config.sim.fidelity == 0.5 and config.sim.params == {"mass_scale": 1.2}
    with pytest.raises(Exception, match="fidelity"):
        compose_rollout(["sim=dmc_cartpole_swingup", "sim.fidelity=high"])


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigCompositionException):
        compose_rollout(["episodez=3"])


def test_keys_added_with_plus_must_be_fields_except_in_free_form_dicts():
    from configs.errors import ConfigError

    with pytest.raises(ConfigError, match=r"SimsRolloutConfig has no setting episodez \(did you mean episodes\?\)"):
        to_dataclass(compose_rollout(["+episodez=3"]), SimsRolloutConfig)
    with pytest.raises(ConfigError, match=r"no setting sim\.fidelty \(did you mean sim\.fidelity\?\)"):
        to_dataclass(compose_rollout(["sim=dmc_cartpole_swingup", "+sim.fidelty=0.5"]), SimsRolloutConfig)
    config = to_dataclass(compose_rollout(["sim=dmc_cartpole_swingup", "+sim.params.anything=1.5"]), SimsRolloutConfig)
    assert config.sim.params == {"anything": 1.5}
