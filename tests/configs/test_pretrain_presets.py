"""Every shipped pretraining preset passes the checks `flywheel pretrain` runs before any work:
in particular its episodes are long enough for each sim's demonstrator to finish the task (the
swing-up presets once cut every demonstration before the pole came up)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from configs import CONFIG_DIR
from configs.schema import PretrainConfig, to_dataclass
from policies.pretrain.run import check

PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "pretrain").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_the_preset_passes_the_checks_run_before_any_work(tmp_path, preset):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=[f"pretrain={preset}", f"root={tmp_path / 'runs'}",
                                                         f"data.cache_dir={tmp_path / 'cache'}"])
    checked = check(to_dataclass(cfg, PretrainConfig))  # raises, naming the field, where a preset is wrong
    assert checked.spec.sims == tuple(cfg.data.sims)
