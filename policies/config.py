"""``ModelConfig``: every number that shapes the model, and the named sizes as data.

One dataclass drives the whole network (nanoGPT-style). The sizes differ only in data,
so a test, a CPU run and a GPU run build the same code from ``SIZES["tiny" | "small" | "base"]``.
Checkpoints store this config as JSON and rebuild the model from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sims.embodiment import ACTION_PAD, PROPRIO_PAD

# Token modality -> the expert whose weights process it. Inputs the agent perceives go to
# `understand`; everything the model generates has its own expert, so a stage of the
# curriculum can train one generator while the experts before it stay frozen.
DEFAULT_MODALITIES: tuple[tuple[str, str], ...] = (
    ("text", "understand"),      # task text / captions, bytes, next-token prediction
    ("frame", "understand"),     # the observed camera frame, as patches
    ("proprio", "understand"),   # proprio history, one token per step
    ("image", "image"),          # a generated frame (flow matching)
    ("future", "video"),         # the imagined chunk: proprio (+ frame) tokens per future step
    ("action", "action"),        # the action chunk (flow matching)
)
DEFAULT_EXPERTS: tuple[str, ...] = ("understand", "image", "video", "action")


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape. Frozen and hashable: layouts and checkpoints key on it."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ffn_mult: int = 4
    experts: tuple[str, ...] = DEFAULT_EXPERTS
    # (modality, expert) pairs; a modality whose expert is absent has no tokenizer yet.
    modalities: tuple[tuple[str, str], ...] = DEFAULT_MODALITIES
    qk_norm: bool = True
    dropout: float = 0.0
    image_size: int = 32           # frames are resized to this before patching
    patch_size: int = 8
    proprio_pad: int = PROPRIO_PAD
    action_pad: int = ACTION_PAD
    history: int = 2               # proprio steps the agent perceives (most recent last)
    chunk: int = 8                 # action chunk = imagination horizon, in control steps
    future_frames: bool = True     # imagine frames too (when the observation has a camera)
    flow_steps: int = 4            # Euler steps of the flow-matching sampler
    text_max: int = 64             # bytes of text, BOS/EOS included
    return_expert: str = "video"   # owner of the return head (it reads imagined futures)
    critic_ensemble: int = 0       # Q heads of the chunk critic (``policies.critic``); 0: no critic
    ranker: bool = False           # the chunk ranker planning scores candidates by (``policies.ranker``)
    # Imagine proprio as its change from the latest observed step, in standard units (``policies.future``).
    relative_future: bool = True

    def __post_init__(self) -> None:
        # Hydra/JSON give lists; the config must stay hashable.
        object.__setattr__(self, "experts", tuple(self.experts))
        object.__setattr__(self, "modalities", tuple((str(m), str(e)) for m, e in self.modalities))
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if len(set(self.experts)) != len(self.experts) or not self.experts:
            raise ValueError(f"experts must be distinct and non-empty, got {self.experts}")
        names = [m for m, _ in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"a modality is listed twice in {self.modalities}")
        for name, value in (("n_layers", self.n_layers), ("ffn_mult", self.ffn_mult), ("chunk", self.chunk),
                            ("flow_steps", self.flow_steps), ("history", self.history)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.critic_ensemble < 0:
            raise ValueError(f"critic_ensemble must be >= 0 (0: no critic), got {self.critic_ensemble}")
        if self.text_max < 3:
            raise ValueError(f"text_max must be >= 3 (BOS, one byte, EOS), got {self.text_max}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def expert_of(self, modality: str) -> str:
        for m, e in self.modalities:
            if m == modality:
                return e
        raise KeyError(f"unknown modality {modality!r}; configured: {[m for m, _ in self.modalities]}")

    def active_modalities(self) -> tuple[str, ...]:
        """Modalities whose expert exists: the ones the model can read or write."""
        return tuple(m for m, e in self.modalities if e in self.experts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["experts"] = list(self.experts)
        d["modalities"] = [list(p) for p in self.modalities]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}")
        # Checkpoints written before ``relative_future`` existed imagine absolute proprio.
        data = {"relative_future": False, **data}
        defaults = cls()
        for f in fields(cls):
            if f.name in data:
                _check_type(f.name, data[f.name], getattr(defaults, f.name))
        return cls(**data)


def _check_type(name: str, value: Any, default: Any) -> None:
    kind = type(default)
    if kind is tuple:
        ok = isinstance(value, (list, tuple))
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ValueError(f"ModelConfig.{name} must be {kind.__name__}, got {value!r}")


SIZES: dict[str, ModelConfig] = {
    # Tests: a few thousand parameters per expert, 16x16 frames of 4 patches.
    "tiny": ModelConfig(d_model=32, n_layers=2, n_heads=2, ffn_mult=2, image_size=16, patch_size=8,
                        history=2, chunk=8, flow_steps=4, text_max=48),
    # CPU runs: about 4.7M backbone parameters per expert.
    "small": ModelConfig(d_model=256, n_layers=6, n_heads=8, ffn_mult=4, image_size=32, patch_size=8,
                         history=4, chunk=8, flow_steps=8, text_max=96),
    # One GPU: about 85M backbone parameters per expert.
    "base": ModelConfig(d_model=768, n_layers=12, n_heads=12, ffn_mult=4, image_size=64, patch_size=8,
                        history=8, chunk=8, flow_steps=10, text_max=192),
}


def model_config(size: str = "tiny", **overrides: Any) -> ModelConfig:
    """A named size with some fields replaced (``None`` values are ignored)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; known: {sorted(SIZES)}")
    return replace(SIZES[size], **{k: v for k, v in overrides.items() if v is not None})
