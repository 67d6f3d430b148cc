"""Crash-safe file writes and file checksums: the one copy the whole project uses.

A write goes to a temp file in the target's directory, is fsynced, made 0644 and renamed
over the target, so a reader sees the old file or the new one, never half of one, and a
crash leaves no partial artefact. Checkpoints, shards, manifests and reports are ordinary
outputs, hence 0644 rather than ``mkstemp``'s private 0600.

It lives in ``sims`` because ``sims`` is the bottom of the import graph (it imports nothing
of ours): ``sims.twins`` writes a figure, and every other package may import ``sims``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_directory", "atomic_path", "json_bytes", "sha256_bytes", "sha256_file", "write_bytes_atomic",
           "write_json_atomic"]

MODE = 0o644


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temp path beside ``path`` for a library that writes to a path itself
    (safetensors, Parquet); if the block finishes, the file replaces ``path``, else it is removed."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    try:
        yield tmp
        with naming(path):
            # Reopened rather than the mkstemp fd: the writer may have replaced the file.
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, MODE)
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """An ``OSError`` inside names ``path``, the file being written, rather than a temp file or
    nothing (a full disk's ENOSPC): the one line a user reads must say where."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def write_figure_atomic(path: str | os.PathLike, fig, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG, written atomically; the figure is closed, since open
    figures pile up in a long run."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def json_bytes(payload: Any) -> bytes:
    """The bytes ``write_json_atomic`` writes (for a writer of its own: remote storage)."""
    return (json.dumps(payload, indent=2) + "\n").encode()


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    return write_bytes_atomic(path, json_bytes(payload))


@contextmanager
def exclusive(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` + ``.lock`` (an advisory ``flock``, freed if the holder
    dies), so that of several processes about to make the same artefact (runs of a parallel
    sweep, each wanting the starter checkpoint) one makes it while the others wait, then find it."""
    lock = Path(f"{path}.lock")
    with naming(lock):
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = lock.open("a")
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory beside ``path``; if the block finishes, it replaces
    ``path`` whole (an existing ``path`` is removed first), else it is removed."""
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield staging
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
