"""Checkpoints: safetensors for the weights, JSON for the config and metadata.

A checkpoint is a directory:

    model.safetensors   every tensor of the state dict (no pickle anywhere)
    config.json         {"format", "version", "config": ModelConfig, "frozen": [...],
                         "tensors": {name: shape}, "metadata": {...}}

Loading rebuilds the model from the config, then requires the file's tensors to match the
model's state dict exactly: same names, shapes and dtypes; anything else is a
``CheckpointError`` naming the difference. ``torch.load`` is never used. A model loaded from
a checkpoint computes bit for bit what the saved one computed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from policies.config import ModelConfig
from policies.model import Model
from sims.files import atomic_path, write_bytes_atomic

FORMAT = "physics-flywheel/mot"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(ValueError):
    pass


def save(model: Model, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to the directory ``path`` (created if needed); returns the directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "frozen": sorted(model.frozen),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "metadata": metadata or {},
    }
    # Weights first, config last: a directory with a config.json is complete.
    with atomic_path(path / WEIGHTS) as tmp:
        save_file(tensors, tmp, metadata={"format": FORMAT})
    write_bytes_atomic(path / CONFIG, json.dumps(header, indent=2).encode())
    return path


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's JSON, checked for format and version (weights are not read)."""
    file = Path(path) / CONFIG
    if not file.is_file():
        raise CheckpointError(f"{path}: no {CONFIG}; not a checkpoint directory")
    try:
        header = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from exc
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{file}: format {header.get('format')!r} v{header.get('version')}, "
                              f"expected {FORMAT!r} v{VERSION}")
    return header


def read_config(path: str | os.PathLike) -> ModelConfig:
    try:
        return ModelConfig.from_dict(read_header(path)["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad model config: {exc}") from exc


def load(path: str | os.PathLike, device: torch.device | str = "cpu",
         expect: ModelConfig | None = None) -> Model:
    """Rebuild the model of checkpoint ``path``; ``expect`` (optional) must equal its config."""
    header = read_header(path)
    cfg = read_config(path)
    if expect is not None and expect != cfg:
        diff = {k: (v, getattr(cfg, k)) for k, v in expect.to_dict().items() if cfg.to_dict()[k] != v}
        raise CheckpointError(f"{path}: config differs from the expected one (expected, found): {diff}")
    model = Model(cfg)
    weights = Path(path) / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS}")
    expected = {k: list(v.shape) for k, v in model.state_dict().items()}
    # A file posing as the weights (a pickle, a truncated copy) fails in safetensors with an
    # error that names no file; it is the checkpoint's error, named.
    try:
        with safe_open(str(weights), framework="pt") as f:  # read the header first: no tensor is loaded yet
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        _compare(path, "file", shapes, expected)
        _compare(path, "config.json", header.get("tensors", {}), expected)
        tensors = load_file(str(weights), device="cpu")
    except SafetensorError as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc}): it is damaged, or not "
                              "a checkpoint's weights") from exc
    state = model.state_dict()
    wrong_dtype = [k for k, v in tensors.items() if v.dtype != state[k].dtype]
    if wrong_dtype:
        raise CheckpointError(f"{path}: tensors with an unexpected dtype: {wrong_dtype[:5]}")
    model.load_state_dict(tensors, strict=True)
    for expert in header.get("frozen", []):
        model.freeze(expert)
    return model.to(device)


def _compare(path, what: str, found: dict[str, list[int]], expected: dict[str, list[int]]) -> None:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
    if missing or extra or shapes:
        detail = "; ".join(s for s in (
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {extra[:5]}" if extra else "",
            "shape mismatch " + ", ".join(f"{k}: {found[k]} vs {expected[k]}" for k in shapes[:5]) if shapes else "",
        ) if s)
        raise CheckpointError(f"{path}: {what} does not match the model its config builds: {detail}")
