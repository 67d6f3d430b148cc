"""Learned-simulator checkpoints: safetensors for the tensors, JSON for everything else.

A checkpoint is a directory:

    checkpoint.safetensors   the ensemble's weights and normalization statistics
    config.json              {"format", "version", "reference" (the sim it was fitted on),
                              "proprio_dim", "action_dim", "action_low", "action_high",
                              "model" (WorldModelNetConfig), "tensors" ({name: shape}),
                              "sha256" (of the safetensors file), "metadata" (how it was trained)}

Both files are written atomically, the JSON last, and the JSON names the hash of the tensor
file it belongs to, so a reader never pairs a new config with old weights. Loading never
unpickles: the network is rebuilt from the JSON and must match the file's tensors exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.torch import load, save

from configs.schema import WorldModelNetConfig
from sims.files import sha256_bytes, write_bytes_atomic, write_json_atomic
from world_model.model import Ensemble
from world_model.simulator import LearnedSimulator

FORMAT = "physics-flywheel/world-model"
VERSION = 1
WEIGHTS = "checkpoint.safetensors"
CONFIG = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, or not for the sim it is asked for."""


def save_checkpoint(simulator: LearnedSimulator, directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    tensors = {k: v.detach().contiguous() for k, v in simulator.net.state_dict().items()}
    blob = save(tensors)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "reference": simulator.reference,
        "proprio_dim": simulator.proprio_dim,
        "action_dim": simulator.action_dim,
        "action_low": simulator.action_low.tolist(),
        "action_high": simulator.action_high.tolist(),
        "model": simulator.config.to_dict(),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "sha256": sha256_bytes(blob),
        "metadata": simulator.metadata,
    }
    write_bytes_atomic(directory / WEIGHTS, blob)
    write_json_atomic(directory / CONFIG, header)
    return directory


def load_checkpoint(directory: str | os.PathLike, reference: str | None = None) -> LearnedSimulator:
    """Load the checkpoint in ``directory``; with ``reference``, insist it was fitted on that sim."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG, directory / WEIGHTS
    wanted = f" for {reference!r}" if reference else ""
    if not config_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"no world-model checkpoint{wanted} at {str(directory)!r}: expected {WEIGHTS} and "
                              f"{CONFIG} there (write one with `flywheel world-model fit`)")
    try:
        header = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: unreadable checkpoint config: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{config_path} is not a {FORMAT} v{VERSION} checkpoint")
    if reference is not None and header.get("reference") != reference:
        raise CheckpointError(f"checkpoint {str(directory)!r} was fitted on sim {header.get('reference')!r}, "
                              f"not on {reference!r}")
    blob = weights_path.read_bytes()
    if sha256_bytes(blob) != header.get("sha256"):
        raise CheckpointError(f"{weights_path} does not match the hash in {config_path} (a partial or mixed write)")
    try:
        model = WorldModelNetConfig(**header["model"])
        net = Ensemble(int(header["proprio_dim"]), int(header["action_dim"]), model)
        tensors = load(blob)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory}: malformed checkpoint: {exc}") from exc
    expected = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    found = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    if expected != found:
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise CheckpointError(f"{weights_path}: tensors do not fit the model in {CONFIG} "
                              f"(missing {missing}, unexpected {extra}, wrong shape or dtype {wrong})")
    net.load_state_dict(tensors)
    return LearnedSimulator(header["reference"], net, np.asarray(header["action_low"]),
                            np.asarray(header["action_high"]), dict(header.get("metadata") or {}))
