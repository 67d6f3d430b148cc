"""Where a run's starting weights come from.

``pretrained=scratch`` starts from freshly initialised weights of the configured ``agent``
(for smoke tests and ablations); a path names a pretrained checkpoint directory. Unset,
the default pretrained checkpoint ``runs/pretrain/default/checkpoint`` (``flywheel
pretrain``) is used; when there is none, the small starter ``runs/pretrain/small``
(``configs/pretrain/small.yaml``: the default task alone, a few minutes on 2 cores) is
used, and pretrained first if it does not exist yet, so the README's main job works on a
fresh clone. A named checkpoint that is missing is pretrained first too when a starter preset
(``starter_presets``: every ``configs/pretrain/small*.yaml``) writes it: the fidelity sweep's
cartpole runs name ``runs/pretrain/small-cartpole/checkpoint`` (``small_cartpole.yaml``), the
multi-task experiment's ``runs/pretrain/small-multitask/checkpoint`` (``small_multitask.yaml``),
the Panda's ``runs/pretrain/small-panda/checkpoint`` (``small_panda.yaml``). A new starter is one
more such file.
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
from sims.files import exclusive

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
    if not config.pretrained and path != DEFAULT:
        console(f"no checkpoint at {DEFAULT}; using the small pretrained one")
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
            return preset_checkpoint(_preset_of(path), console)
        return path
    if (DEFAULT / "config.json").is_file():
        return DEFAULT
    return small_checkpoint(console)


def check_starter(config: RunConfig) -> None:
    """Fails where ``starter`` would for a missing checkpoint, without pretraining anything: before
    a run claims its directory, so a mistyped ``pretrained=`` leaves nothing behind."""
    if config.pretrained and config.pretrained != SCRATCH:
        path = Path(config.pretrained)
        if not (path / "config.json").is_file():
            _preset_of(path)


def _preset_of(path: Path) -> Path:
    """The starter preset whose checkpoint ``path`` is (pretrained on demand), or a clear error."""
    for preset in starter_presets():
        if checkpoint_of(preset_config(preset)).resolve() == path.resolve():
            return preset
    raise FileNotFoundError(f"pretrained={path}: no pretrained checkpoint there. Run `flywheel pretrain` first, "
                            f"point pretrained= at a checkpoint directory, or use pretrained={SCRATCH}")


def starter_presets() -> tuple[Path, ...]:
    """The pretraining presets a run pretrains itself when their checkpoint is missing: small ones,
    a few minutes each on 2 cores (a bigger one, such as the default, is ``flywheel pretrain``'s):
    ``small.yaml`` and every ``small_*.yaml`` beside it."""
    return SMALL_PRESET, *sorted(SMALL_PRESET.parent.glob("small_*.yaml"))


def preset_config(preset: Path):
    """A pretraining preset as a ``PretrainConfig``, without Hydra (a run may be inside one): its
    ``defaults`` may name sibling presets, merged first, as Hydra would."""
    from omegaconf import OmegaConf

    from configs.schema import PretrainConfig, to_dataclass

    node = OmegaConf.load(preset)
    parents = [OmegaConf.load(preset.parent / f"{name}.yaml") for name in node.pop("defaults", []) if name != "_self_"]
    return to_dataclass(OmegaConf.merge(*parents, node), PretrainConfig)


def checkpoint_of(config) -> Path:
    return Path(config.root) / config.name / "checkpoint"


def small_config():
    """The ``small`` pretraining preset as a ``PretrainConfig`` (no Hydra needed)."""
    return preset_config(SMALL_PRESET)


def small_checkpoint(console=print) -> Path:
    """The small starter checkpoint, pretrained now (resuming a half-finished one) if missing."""
    return preset_checkpoint(SMALL_PRESET, console)


def preset_checkpoint(preset: Path, console=print) -> Path:
    """A starter preset's checkpoint, pretrained now (resuming a half-finished one) if missing."""
    from policies.pretrain import pretrain

    config = preset_config(preset)
    path = checkpoint_of(config)
    if (path / "config.json").is_file():
        return path
    with exclusive(path):  # runs of a parallel sweep: one pretrains, the others wait for it
        if (path / "config.json").is_file():
            return path
        console(f"no pretrained checkpoint at {DEFAULT if preset == SMALL_PRESET else path} (`flywheel pretrain` "
                f"makes it): pretraining a small one first into {path.parent} (`flywheel pretrain "
                f"pretrain={preset.stem}`, a few minutes)")
        pretrain(config, log=console)
    return path
