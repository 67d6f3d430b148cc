"""Typed schema of every Hydra config, registered in Hydra's ConfigStore.

YAML files under ``configs/`` fill these dataclasses; Hydra rejects keys that are not
fields and values of the wrong type before any command starts. Commands convert the
composed config to these plain dataclasses (``to_dataclass``) before passing it on, so
nothing downstream (Ray actors included) depends on OmegaConf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


@dataclass
class SimConfig:
    """One simulator: a registered name plus the ``sims.make`` keyword arguments."""

    name: str = "???"
    fidelity: float = 1.0
    run_seed: int = 0
    camera: bool = False
    image_size: int = 64
    max_episode_steps: Optional[int] = None
    # Physical parameter overrides on top of the fidelity perturbation, e.g. {mass_scale: 1.2}.
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class RolloutConfig:
    """``flywheel sims rollout``: run demonstrators and time the simulators.

    With ``sim`` unset, every registered sim is rolled out with default settings;
    ``sim=<file in configs/sim>`` (plus ``sim.fidelity=...`` etc.) selects one.
    """

    sim: Optional[SimConfig] = None
    episodes: int = 5
    seed: int = 0
    camera: bool = True
    image_size: int = 64
    tags: list[str] = field(default_factory=list)  # only sims carrying all these tags
    json_out: Optional[str] = None  # also write the table as JSON here


_store = ConfigStore.instance()
_store.store(group="sim", name="sim_schema", node=SimConfig)
_store.store(name="rollout_schema", node=RolloutConfig)

T = TypeVar("T")


def to_dataclass(cfg: DictConfig, schema: type[T]) -> T:
    """A composed config as its plain schema dataclass (nested dataclasses included)."""
    obj: Any = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))
    return obj


# ---------------------------------------------------------------------- the agent (policies)


@dataclass
class AgentConfig:
    """The agent's model: a named size (``policies.config.SIZES``) plus optional overrides.

    Fields left ``None`` keep the size's value, so the numbers of each size live in one
    place; ``agent=small agent.d_model=320`` changes one of them. ``checkpoint`` loads
    weights (and the config stored with them) instead of building a fresh model.
    """

    size: str = "tiny"
    device: str = "cpu"
    d_model: Optional[int] = None
    n_layers: Optional[int] = None
    n_heads: Optional[int] = None
    ffn_mult: Optional[int] = None
    experts: Optional[list[str]] = None
    qk_norm: Optional[bool] = None
    image_size: Optional[int] = None
    patch_size: Optional[int] = None
    history: Optional[int] = None
    chunk: Optional[int] = None
    flow_steps: Optional[int] = None
    text_max: Optional[int] = None
    checkpoint: Optional[str] = None


@dataclass
class RoutesConfig:
    """``flywheel routes``: the routes (inputs -> output) the configured agent supports."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    json_out: Optional[str] = None  # also write the table as JSON here


_store.store(group="agent", name="agent_schema", node=AgentConfig)
_store.store(name="routes_schema", node=RoutesConfig)
