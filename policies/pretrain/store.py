"""Done markers and config hashes for the pretraining run.

Everything the run writes goes through ``sims.files``'s atomic writes: a reader sees the
old file or the new one, never half of one, so a run killed at any moment leaves either
a finished artefact or nothing. A *done marker* (``done.json``) is written last, after
the files it vouches for, and holds their sha256: a stage or a dataset shard counts as
finished only when its marker exists and the checksums still match.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sims.files import sha256_bytes, sha256_file, write_json_atomic

DONE = "done.json"


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def config_hash(payload: Any) -> str:
    """A stable hash of a JSON-able payload (key order does not matter)."""
    return sha256_bytes(json.dumps(payload, sort_keys=True, default=str).encode())


def mark_done(directory: str | os.PathLike, files: list[str], **info: Any) -> Path:
    """Write ``directory/done.json`` vouching for ``files`` (names relative to ``directory``)."""
    directory = Path(directory)
    sums = {name: sha256_file(directory / name) for name in files}
    return write_json_atomic(directory / DONE, {**info, "files": sums})


def read_done(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The done marker of ``directory`` if it exists and every file it names still matches."""
    directory = Path(directory)
    try:
        done = read_json(directory / DONE)
        files = done["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for name, digest in files.items():
        path = directory / name
        if not path.is_file() or sha256_file(path) != digest:
            return None
    return done
