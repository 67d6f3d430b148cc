"""Flywheel checkpoints: everything a run needs to continue exactly where it stopped.

    checkpoints/cycle-000004/
        model/                  policies.checkpoint: safetensors weights + config.json
        trainer.safetensors     optimizer tensors ("optim.<param>.<key>") and torch RNG state
        trainer.json            cycle, weight version, optimizer hyper-parameters, numpy and
                                python RNG states, replay manifest, sha256 of every file
    checkpoints/latest          name of the newest complete checkpoint (written last)

A checkpoint directory is assembled under a temporary name and renamed into place, then
``latest`` is replaced atomically, so a crash at any moment leaves the previous checkpoint
current. Loading verifies every file's checksum and never unpickles anything.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from policies import checkpoint as model_checkpoint
from policies.model import Model
from sims.files import atomic_directory, sha256_file, write_bytes_atomic

FORMAT = "physics-flywheel/run-checkpoint"
VERSION = 1
# Optimizer options that choose an implementation, not the optimization (see load_optimizer_state).
IMPLEMENTATION = ("fused", "foreach", "capturable", "differentiable")


class RunCheckpointError(ValueError):
    pass


@dataclass
class TrainerState:
    """What besides weights a resumed run needs; ``extra`` is free-form JSON for the controller."""

    cycle: int
    weight_version: int
    replay_cycles: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def save(run_dir: str | os.PathLike, model: Model,
         optimizer: torch.optim.Optimizer | tuple[dict[str, torch.Tensor], dict] | None,
         state: TrainerState, generator: np.random.Generator | None = None) -> Path:
    """Write a complete checkpoint for ``state.cycle`` and make it the latest.

    ``optimizer`` is a live optimizer, or its state already flattened by ``flatten_optimizer``
    (what remote learners send back), or None.
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"cycle-{state.cycle:06d}"
    # A checkpoint of this cycle written before a crash is replaced whole.
    with atomic_directory(final) as staging:
        model_checkpoint.save(model, staging / "model")
        tensors, optim_meta = optimizer if isinstance(optimizer, tuple) else flatten_optimizer(optimizer)
        tensors = dict(tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(staging / "trainer.safetensors"))
        files = {str(p.relative_to(staging)): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        header = {
            "format": FORMAT, "version": VERSION,
            "cycle": state.cycle, "weight_version": state.weight_version,
            "replay_cycles": list(state.replay_cycles), "extra": state.extra,
            "optimizer": optim_meta,
            "rng": {"numpy": generator.bit_generator.state if generator is not None else None,
                    "python": _python_rng_state()},
            "files": files,
        }
        (staging / "trainer.json").write_text(json.dumps(header, indent=2))
    write_bytes_atomic(root / "latest", final.name.encode())
    return final


def superseded(pointer: bytes | None):
    """Given ``latest``'s bytes (None: no checkpoint), whether a path relative to the run
    directory is in an older checkpoint: what a resume never reads (a remote run's download
    leaves them in storage, ``flywheel.storage.Mirror``)."""
    current = f"checkpoints/{pointer.decode().strip()}/" if pointer else None
    return lambda relative: (relative.startswith("checkpoints/cycle-") and
                             (current is None or not relative.startswith(current)))


def latest(run_dir: str | os.PathLike) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / "trainer.json").is_file():
        raise RunCheckpointError(f"{pointer} points at {path.name}, which is not a complete checkpoint")
    return path


def load(path: str | os.PathLike, device: str = "cpu", optimizer_factory=None,
         generator: np.random.Generator | None = None, restore_rng: bool = True):
    """Load a checkpoint directory: (model, optimizer or None, TrainerState).

    ``optimizer_factory(model)`` builds a fresh optimizer whose state is then restored;
    ``generator``'s state and the global torch/python RNGs are restored when asked.
    """
    path = Path(path)
    verify(path)
    header = _read_header(path)
    model = model_checkpoint.load(path / "model", device=device)
    tensors = load_file(str(path / "trainer.safetensors"))
    optimizer = None
    if optimizer_factory is not None:
        optimizer = optimizer_factory(model)
        if header["optimizer"] is None:
            raise RunCheckpointError(f"{path}: was saved without optimizer state")
        optimizer.load_state_dict(_unflatten_optimizer(tensors, header["optimizer"], device))
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
        random.setstate(_python_rng_from_json(header["rng"]["python"]))
        if generator is not None and header["rng"]["numpy"] is not None:
            generator.bit_generator.state = header["rng"]["numpy"]
    state = TrainerState(header["cycle"], header["weight_version"], header["replay_cycles"], header["extra"])
    return model, optimizer, state


def corrupt(path: Path, what: str) -> RunCheckpointError:
    """The error for checkpoint ``path`` with a bad file (``what`` names it), saying what to do."""
    return RunCheckpointError(f"{what}; the checkpoint is corrupt. To resume from the one before, write its "
                              f"directory name (cycle-NNNNNN) into {path.parent / 'latest'}")


def verify(path: str | os.PathLike) -> None:
    """Every file of checkpoint ``path`` is there with its checksum, or ``RunCheckpointError``."""
    path = Path(path)
    for name, digest in _read_header(path)["files"].items():
        file = path / name
        if not file.is_file() or sha256_file(file) != digest:
            raise corrupt(path, f"{file}: missing or fails its checksum")


def _read_header(path: Path) -> dict[str, Any]:
    file = path / "trainer.json"
    if not file.is_file():
        raise RunCheckpointError(f"{path}: no trainer.json; not a run checkpoint")
    try:
        header = json.loads(file.read_text())
    except ValueError as exc:
        raise corrupt(path, f"{file}: not readable JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise RunCheckpointError(f"{file}: not a run checkpoint header (a JSON {type(header).__name__})")
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise RunCheckpointError(f"{file}: format {header.get('format')!r} v{header.get('version')}, "
                                 f"expected {FORMAT!r} v{VERSION}")
    return header


def record(run_dir: str | os.PathLike, cycle: int) -> dict[str, Any] | None:
    """The cycle record that ``cycle``'s checkpoint holds (``Cycle.commit`` saves it as
    ``TrainerState.extra``), or None without one: what rebuilds a ``cycles.jsonl`` line lost to
    a stop between the checkpoint and the line."""
    path = Path(run_dir) / "checkpoints" / f"cycle-{cycle:06d}"
    if not (path / "trainer.json").is_file():
        return None
    extra = _read_header(path)["extra"]
    return extra if extra.get("cycle") == cycle else None


def optimizer_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict] | None:
    """A checkpoint's optimizer state, flattened as ``flatten_optimizer`` makes it (checksums verified)."""
    path = Path(path)
    header = _read_header(path)
    digest = header["files"].get("trainer.safetensors")
    if digest is None or sha256_file(path / "trainer.safetensors") != digest:
        raise corrupt(path, f"{path / 'trainer.safetensors'}: missing or fails its checksum")
    if header["optimizer"] is None:
        return None
    tensors = {k: v for k, v in load_file(str(path / "trainer.safetensors")).items() if k.startswith("optim.")}
    return tensors, header["optimizer"]


def load_optimizer_state(optimizer: torch.optim.Optimizer, flat: tuple[dict[str, torch.Tensor], dict],
                         device: str = "cpu") -> None:
    """Restore a flattened state into ``optimizer`` (built over the same parameters)."""
    tensors, meta = flat
    state = _unflatten_optimizer(tensors, meta, device)
    # How the update runs (fused, foreach) is this code's choice, not the saved run's: a
    # checkpoint written before the learners fused their AdamW resumes fused.
    for saved, live in zip(state["param_groups"], optimizer.param_groups):
        saved.update({k: live[k] for k in IMPLEMENTATION if k in live})
    optimizer.load_state_dict(state)


def flatten_optimizer(optimizer) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Optimizer state as safetensors-ready tensors plus JSON-ready metadata."""
    if optimizer is None:
        return {}, None
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, per_param in sd["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars, "params_with_state": sorted(sd["state"])}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict, device: str) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): {} for i in meta["params_with_state"]}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state[int(index)][key] = value if key == "step" else value.to(device)
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state[int(index)][key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _python_rng_from_json(value: list) -> tuple:
    version, internal, gauss = value
    return version, tuple(internal), gauss

