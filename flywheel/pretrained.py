"""Where a run's starting weights come from.

``pretrained=scratch`` starts from freshly initialised weights of the configured ``agent``
(for smoke tests and ablations); a path names a pretrained checkpoint directory; unset, the
default pretrained checkpoint ``runs/pretrain/default/checkpoint`` is used.
"""

from __future__ import annotations

from pathlib import Path

import torch

from configs.run_schema import RunConfig
from policies.agent import Agent
from policies.config import model_config

DEFAULT = Path("runs") / "pretrain" / "default" / "checkpoint"
SCRATCH = "scratch"


def starting_agent(config: RunConfig, run_dir: Path, console=print) -> Agent:
    if config.pretrained == SCRATCH:
        torch.manual_seed(config.seed)
        overrides = {k: v for k, v in vars(config.agent).items() if k not in ("size", "device", "checkpoint")}
        console(f"starting from scratch: freshly initialised '{config.agent.size}' weights (pretrained=scratch)")
        return Agent(model_config(config.agent.size, **overrides), device=config.agent.device)
    path = Path(config.pretrained) if config.pretrained else DEFAULT
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"pretrained={path}: no pretrained checkpoint there. Run `flywheel pretrain` first, "
            f"point pretrained= at a checkpoint directory, or use pretrained={SCRATCH}")
    console(f"starting from the pretrained checkpoint {path}")
    return Agent.from_checkpoint(path, device=config.agent.device)
