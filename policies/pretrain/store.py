"""Crash-safe files: atomic writes, checksums, and done markers.

Everything the pretraining run writes goes through ``write_atomic``: a reader sees the
old file or the new one, never half of one, so a run killed at any moment leaves either
a finished artefact or nothing. A *done marker* (``done.json``) is written last, after
the files it vouches for, and holds their sha256: a stage or a dataset shard counts as
finished only when its marker exists and the checksums still match.

(``flywheel.atomic`` does the same for the service; ``policies`` never imports
``flywheel``, hence this small twin.)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

DONE = "done.json"


def write_atomic(path: str | os.PathLike, data: bytes | Callable[[str], None]) -> Path:
    """Write ``data`` (bytes, or a function writing a temp path) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; these are ordinary outputs
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    return write_atomic(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_hash(payload: Any) -> str:
    """A stable hash of a JSON-able payload (key order does not matter)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def mark_done(directory: str | os.PathLike, files: list[str], **info: Any) -> Path:
    """Write ``directory/done.json`` vouching for ``files`` (names relative to ``directory``)."""
    directory = Path(directory)
    sums = {name: sha256(directory / name) for name in files}
    return write_json(directory / DONE, {**info, "files": sums})


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
        if not path.is_file() or sha256(path) != digest:
            return None
    return done
