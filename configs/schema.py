"""Typed schema of every Hydra config, registered in Hydra's ConfigStore.

YAML files under ``configs/`` fill these dataclasses; Hydra rejects keys that are not
fields and values of the wrong type before any command starts. Commands convert the
composed config to these plain dataclasses (``to_dataclass``) before passing it on, so
nothing downstream (Ray actors included) depends on OmegaConf.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from difflib import get_close_matches
from types import UnionType
from typing import Any, Optional, TypeVar, Union, get_args, get_origin, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from configs.errors import ConfigError


@dataclass
class SimConfig:
    """One simulator: a registered name plus the ``sims.make`` keyword arguments."""

    name: str = "???"
    fidelity: float = 1.0
    run_seed: int = 0
    camera: bool = False  # a flywheel run's frames are its own knob, ``RunConfig.camera``
    image_size: Optional[int] = None  # camera frames' side; None: the sim's default (64), in a camera run the agent's
    max_episode_steps: Optional[int] = None
    # Physical parameter overrides on top of the fidelity perturbation, e.g. {mass_scale: 1.2}.
    params: dict[str, float] = field(default_factory=dict)
    # Learned sims (``learned/<reference>``) only: the world model's checkpoint directory, and
    # re-anchor to the engine every N steps ("1", "8", ...) or "never".
    checkpoint: Optional[str] = None
    correct_every: Optional[str] = None

    def make_kwargs(self) -> dict[str, Any]:
        """The ``sims.make`` keyword arguments: every field but the name, less unset learned-sim ones."""
        kwargs = {k: v for k, v in asdict(self).items() if k != "name"}
        for key in ("checkpoint", "correct_every", "params", "image_size"):
            if not kwargs[key]:
                kwargs.pop(key)
        return kwargs


@dataclass
class SimsRolloutConfig:
    """``flywheel sims rollout``: run demonstrators and time the simulators (not the flywheel's
    rollouts: those are ``RunConfig``'s). Registered as ``rollout_schema``, which
    ``configs/rollout.yaml`` names in its defaults.

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
_store.store(name="rollout_schema", node=SimsRolloutConfig)

T = TypeVar("T")


def to_dataclass(cfg: DictConfig, schema: type[T]) -> T:
    """A composed config as its plain schema dataclass (nested dataclasses included).

    A key the schema does not have is a ``ConfigError`` naming it: Hydra lets ``+key=value``
    add one, and OmegaConf would carry it along unused, so a typo such as ``+cycels=5`` would
    otherwise run with the default it meant to change."""
    unknown = unknown_keys(cfg, schema)
    if unknown:
        named = "; ".join(f"{key}{_did_you_mean(key, schema)}" for key in unknown)
        raise ConfigError(f"{schema.__name__} has no setting {named}")
    obj: Any = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))
    return obj


def unknown_keys(cfg: Any, schema: type, prefix: str = "") -> list[str]:
    """The dotted keys of ``cfg`` that are not fields of the dataclass ``schema`` (free-form
    dict fields, such as ``sim.params``, take any key). Interpolations are left unresolved."""
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    if not isinstance(tree, dict):
        return []
    hints = get_type_hints(schema)
    unknown = []
    for key, value in tree.items():
        if key not in hints:
            unknown.append(f"{prefix}{key}")
        elif (nested := _dataclass_of(hints[key])) is not None:
            unknown += unknown_keys(value, nested, f"{prefix}{key}.")
    return unknown


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds, ``Optional`` unwrapped; None for any other type."""
    if is_dataclass(hint):
        return hint
    if get_origin(hint) in (Union, UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        return inner[0] if len(inner) == 1 and is_dataclass(inner[0]) else None
    return None


def _did_you_mean(key: str, schema: type) -> str:
    *parents, leaf = key.split(".")
    for parent in parents:
        schema = _dataclass_of(get_type_hints(schema)[parent])
    close = get_close_matches(leaf, [f.name for f in fields(schema)], n=1)
    return f" (did you mean {'.'.join([*parents, close[0]])}?)" if close else ""


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
    future_frames: Optional[bool] = None
    checkpoint: Optional[str] = None


@dataclass
class RoutesConfig:
    """``flywheel routes``: the routes (inputs -> output) the configured agent supports."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    json_out: Optional[str] = None  # also write the table as JSON here


_store.store(group="agent", name="agent_schema", node=AgentConfig)
_store.store(name="routes_schema", node=RoutesConfig)


# ---------------------------------------------------------------------- the world model (world_model)


@dataclass
class WorldModelCollectConfig:
    """Transitions collected from the sim: demonstrator-with-noise and random-action episodes."""

    steps: int = 6000
    seed: int = 0
    demo_fraction: float = 0.5  # episodes driven by the demonstrator (with noise), the rest random
    noise: float = 0.3  # std of the noise on the demonstrator's normalized actions


def _positive_ints(what: str, config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} {name} must be an int >= 1, got {value!r}")


@dataclass
class WorldModelNetConfig:
    """The ensemble's size (``world_model.Ensemble``): members, hidden width, hidden layers.

    The one definition: ``world_model`` builds, fits and checkpoints with it (a checkpoint's
    ``config.json`` stores it as its ``model``).
    """

    ensemble: int = 4
    hidden: int = 64
    layers: int = 2

    def __post_init__(self) -> None:
        _positive_ints("world model", self, ("ensemble", "hidden", "layers"))
        if self.ensemble < 2:
            raise ValueError("world model ensemble needs at least 2 members (their spread is the error estimate)")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class WorldModelTrainConfig:
    """Optimization (``world_model.fit``): AdamW with a cosine learning-rate decay over ``steps``."""

    steps: int = 600
    batch: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-5
    horizon: int = 2  # steps unrolled in the loss (1 = one-step loss only)
    seed: int = 0
    # torch threads while fitting: small matmuls lose more to threading than they gain
    threads: int = 1

    def __post_init__(self) -> None:
        _positive_ints("fit", self, ("steps", "batch", "horizon", "threads"))
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise ValueError(f"fit lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")


@dataclass
class WorldModelReportConfig:
    """The fidelity report written beside the checkpoint: the learned sim at each ``correct_every``."""

    probes: int = 4
    horizon: int = 30
    seed: int = 0
    correct_every: list[str] = field(default_factory=lambda: ["never", "16", "4", "1"])


@dataclass
class WorldModelRecipe:
    """How a learned simulator is fitted: the transitions, the ensemble, the optimization, the report."""

    collect: WorldModelCollectConfig = field(default_factory=WorldModelCollectConfig)
    model: WorldModelNetConfig = field(default_factory=WorldModelNetConfig)
    train: WorldModelTrainConfig = field(default_factory=WorldModelTrainConfig)
    report: WorldModelReportConfig = field(default_factory=WorldModelReportConfig)


WORLD_MODEL_ROOT = "runs/world-model"


def world_model_dir(sim: str, root: str = WORLD_MODEL_ROOT) -> str:
    """Where the learned simulator of ``sim`` lives unless told otherwise: ``<root>/<sim, '/' as '_'>``."""
    return f"{root}/{sim.replace('/', '_')}"


@dataclass
class WorldModelFitConfig(WorldModelRecipe):
    """``flywheel world-model fit``: collect transitions from ``sim``, fit, write checkpoint + report.

    ``sim`` is a file of ``configs/sim`` (``sim=mujoco_inverted_pendulum``), or any name with
    ``sim.name=...``; the checkpoint's reference sim is ``sim.name``. ``out`` defaults to
    ``world_model_dir(sim.name)``: ``runs/world-model/<sim.name with '/' as '_'>``.
    """

    sim: SimConfig = field(default_factory=SimConfig)
    out: Optional[str] = None


@dataclass
class FidelityConfig:
    """``flywheel fidelity``: fidelity of candidate sims against a reference on its probe set.

    A candidate is ``NAME`` or ``NAME:key=value,key=value`` with ``sims.make`` keywords, e.g.
    ``dmc/cartpole-swingup:fidelity=0.5`` or
    ``learned/dmc/cartpole-swingup:checkpoint=runs/wm,correct_every=4``.
    """

    reference: str = "???"
    candidates: list[str] = field(default_factory=list)
    probes: int = 8
    horizon: int = 50
    seed: int = 0
    out: str = "fidelity-report"  # directory for fidelity.json and fidelity.png


_store.store(name="world_model_fit_schema", node=WorldModelFitConfig)
_store.store(name="fidelity_schema", node=FidelityConfig)


# ---------------------------------------------------------------------- staged pretraining (policies.pretrain)


@dataclass
class PretrainDataConfig:
    """The four datasets, generated from ``sims`` (``policies.pretrain.datasets``).

    ``first`` examples train the first stage (understanding: one question each); each later
    stage's dataset is ``ratios[k]`` times smaller than the one before.
    """

    sims: list[str] = field(default_factory=lambda: ["mujoco/reacher-twin", "dmc/point_mass-easy",
                                                     "mujoco/cartpole-balance-twin"])
    first: int = 60000
    ratios: list[float] = field(default_factory=lambda: [10.0, 10.0, 10.0])
    held_out: float = 0.1  # eval examples per dataset, as a fraction of its train examples
    camera: bool = True  # frames at model.image_size; the image stage needs them
    scene_every: int = 20  # one understanding/image scene every this many steps, on average
    random_episodes: float = 0.25  # share of scene and video episodes driven by random actions
    scene_noise: float = 0.5  # max std of the noise injected into executed demonstrator actions
    video_noise: float = 0.5
    action_noise: float = 0.3
    stride: int = 4  # steps between the starts of consecutive windows
    after_success: int = 20  # steps recorded after an episode first succeeds
    max_steps: int = 200  # per episode, at most
    shard: int = 1000  # examples per generation unit (one file in the cache)
    seed: int = 0
    workers: int = 2  # Ray actors generating in parallel (1: in-process, no Ray)
    cache_dir: str = "runs/pretrain/cache"


@dataclass
class PretrainScheduleConfig:
    """One warmup-stable-decay learning-rate schedule over the whole run."""

    steps: int = 6000
    peak_lr: float = 1e-3
    warmup: float = 0.02  # fraction of the steps
    decay: float = 0.15  # fraction of the steps, at the end
    first_share: float = 0.5  # fraction of the plateau for the first stage alone
    shares: list[float] = field(default_factory=list)  # how the later stages split the rest (default equal)
    final_lr_ratio: float = 0.0


@dataclass
class PretrainTrainConfig:
    batch_size: int = 32
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    decay_unfreeze: bool = True  # the decay phase trains every expert (false: only the last)
    decay_quality: float = 0.5  # the high-quality slice of each dataset the decay phase uses
    video_uncond: float = 0.2  # share of video batches imagined without the chunk's actions
    # Share of video and action batches shown without their camera frame. A flywheel run acts
    # without one (camera=false, its default): a starter that always saw frames leans on them, and
    # without them its actions were no better than a zero action (docs/pretraining.md).
    frame_dropout: float = 0.5
    threads: int = 0  # torch threads (0: leave as is)
    log_every: int = 200


@dataclass
class PretrainEvalConfig:
    examples: int = 256  # held-out examples per metric, at most
    episodes: int = 20  # closed-loop episodes per sim (0: skip)
    execute: int = 4  # steps of each action chunk executed before the policy is asked again
    batch_size: int = 64
    seed: int = 1000000  # first episode seed of the closed-loop evaluation


@dataclass
class PretrainConfig:
    """``flywheel pretrain``: grow the backbone one generative capability at a time.

    Writes ``<root>/<name>/``: ``checkpoint/``, ``stages/<stage>/``, ``schedule.png``,
    ``metrics.json``, ``metrics.md``, ``config.yaml``. ``curriculum=joint`` trains every
    expert from the start on the same data and steps.
    """

    name: str = "default"
    root: str = "runs/pretrain"
    seed: int = 0
    curriculum: str = "staged"  # staged | joint
    stages: list[str] = field(default_factory=lambda: ["understand", "image", "video", "action"])
    resume: bool = True  # continue from the last completed stage of <root>/<name>
    model: AgentConfig = field(default_factory=AgentConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    schedule: PretrainScheduleConfig = field(default_factory=PretrainScheduleConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    eval: PretrainEvalConfig = field(default_factory=PretrainEvalConfig)


_store.store(name="pretrain_schema", node=PretrainConfig)
