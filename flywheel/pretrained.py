"""Where a run's starting weights come from.

``pretrained=scratch`` starts from freshly initialised weights of the configured ``agent``
(for smoke tests and ablations); a path names a pretrained checkpoint directory. Unset,
the default pretrained checkpoint ``runs/pretrain/default/checkpoint`` (``flywheel
pretrain``) is used; when there is none, the small starter ``runs/pretrain/small``
(``configs/pretrain/small.yaml``: the default task alone, a few minutes on 2 cores) is
used, and pretrained first if it does not exist yet, so the README's main job works on a
fresh clone.
"""

from __future__ import annotations

from pathlib import Path

import torch

from configs import CONFIG_DIR
from configs.errors import ConfigError
from configs.run_schema import RunConfig
from policies.agent import Agent
from policies.checkpoint import CheckpointError
from policies.config import model_config

DEFAULT = Path("runs") / "pretrain" / "default" / "checkpoint"
SMALL_PRESET = Path(CONFIG_DIR) / "pretrain" / "small.yaml"
SCRATCH = "scratch"


def starting_agent(config: RunConfig, run_dir: Path, console=print) -> tuple[Agent, str]:
    """The run's starting agent and where its weights come from (a checkpoint directory, or
    ``pretrained=scratch``), for the errors that must name them."""
    path = starter(config, console)
    if path is None:
        torch.manual_seed(config.seed)
        overrides = {k: v for k, v in vars(config.agent).items() if k not in ("size", "device", "checkpoint")}
        console(f"starting from scratch: freshly initialised '{config.agent.size}' weights (pretrained=scratch)")
        return Agent(model_config(config.agent.size, **overrides), device=config.agent.device), \
            f"pretrained={SCRATCH} (seed {config.seed})"
    console(f"starting from the pretrained checkpoint {path}")
    try:
        agent = Agent.from_checkpoint(path, device=config.agent.device)
    except CheckpointError as exc:
        raise ConfigError(f"pretrained={path}: {exc}. Point pretrained= at a sound checkpoint (`flywheel pretrain` "
                          f"writes one), or start from pretrained={SCRATCH}") from exc
    from flywheel.learners import check_train_experts

    try:
        check_train_experts(config.learner.train_experts, agent.cfg.experts)
    except ValueError as exc:
        raise ConfigError(f"pretrained={path}: a model of another architecture: learner.{exc}") from exc
    return agent, str(path)


def starter(config: RunConfig, console=print) -> Path | None:
    """The run's pretrained checkpoint directory (pretrained first when it is the missing small
    one), or None for ``pretrained=scratch``."""
    if config.pretrained == SCRATCH:
        return None
    if config.pretrained:
        path = Path(config.pretrained)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"pretrained={path}: no pretrained checkpoint there. Run `flywheel pretrain` first, "
                f"point pretrained= at a checkpoint directory, or use pretrained={SCRATCH}")
        return path
    if (DEFAULT / "config.json").is_file():
        return DEFAULT
    return small_checkpoint(console)


def small_config():
    """The ``small`` pretraining preset as a ``PretrainConfig`` (no Hydra needed)."""
    from omegaconf import OmegaConf

    from configs.schema import PretrainConfig, to_dataclass

    return to_dataclass(OmegaConf.load(SMALL_PRESET), PretrainConfig)


def small_checkpoint(console=print) -> Path:
    """The small starter checkpoint, pretrained now (resuming a half-finished one) if missing."""
    from policies.pretrain import pretrain

    config = small_config()
    path = Path(config.root) / config.name / "checkpoint"
    if (path / "config.json").is_file():
        console(f"no checkpoint at {DEFAULT}; using the small pretrained one")
        return path
    console(f"no pretrained checkpoint at {DEFAULT} (`flywheel pretrain` makes it, about 40 min on 2 cores): "
            f"pretraining a small one first into {path.parent} (`flywheel pretrain pretrain=small`, a few minutes)")
    pretrain(config, log=console)
    return path
