"""Crash-safe file writes: a reader sees the old file or the new one, never half of one.

The temp-file + fsync + rename lives in ``world_model.atomic`` (which cannot import
``flywheel``); the service uses the same one.
"""

from __future__ import annotations

import json
import os
from typing import Any

from world_model.atomic import write_bytes_atomic

__all__ = ["write_bytes_atomic", "write_json_atomic"]


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    write_bytes_atomic(path, (json.dumps(payload, indent=2) + "\n").encode())
