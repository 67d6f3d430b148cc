"""Where a run's files live: a local directory, or remote storage named by a URI.

    is_uri(location)           "s3://bucket/runs/a" and the like, as opposed to a local path
    join(location, *parts)     a location below another (a URI keeps its query string)
    files(location)            ``LocalFiles`` or ``RemoteFiles``: the few operations the store needs
    check_writable(uri, field) a probe written, read back and deleted; fails naming the URI
    Mirror(uri, staging)       the driver's own files: kept in a local directory, uploaded to the URI

A run given ``run_dir=s3://bucket/runs/a`` (or ``gs://``, ``hdfs://``, ``file://``, any scheme
pyarrow knows, else any fsspec knows) keeps its rollout store at ``<run_dir>/store``: rollout
actors write their shards there from whatever node they run on and the driver reads them
back, so a cluster needs no shared disk, only credentials on every node (pyarrow reads them
from the environment as the cloud's own tools do: AWS_ACCESS_KEY_ID..., an instance role,
GOOGLE_APPLICATION_CREDENTIALS). The URI's query string configures pyarrow's filesystem
(``?endpoint_override=host:port&scheme=http`` for an S3-compatible server), as
``pyarrow.fs.FileSystem.from_uri`` reads it; credentials do not belong there, since the URI
is the run's name in ``config.json`` and in every message.

The driver's own files (config, checkpoints, ``cycles.jsonl``, TensorBoard events, figures) are
written by libraries that want a local path (safetensors, TensorBoard), so the driver writes
them to a local staging directory, as today, and ``Mirror.upload`` copies what changed to the
URI at each commit: every other file first, then the checkpoint pointer and ``cycles.jsonl``,
so storage never names a checkpoint that is not all there. ``resume=URI`` on any machine
downloads them (the store stays remote) and continues exactly as a local resume does.

Why pyarrow rather than fsspec first: it is already a dependency (the shards are Parquet),
and its S3 and GCS filesystems need no further package. Ray Train's ``storage_path`` makes the
same choice, falling back to fsspec for schemes pyarrow lacks.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from configs.errors import ConfigError
from sims.files import write_bytes_atomic

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Object stores make a written object visible whole or not at all; other filesystems (HDFS,
# a local one behind file://, fsspec's) need the write-then-move that local files get.
_ATOMIC_PUT = ("s3", "gcs")


def is_uri(location: str | os.PathLike | None) -> bool:
    return isinstance(location, str) and _SCHEME.match(location) is not None


def join(location: str | os.PathLike, *parts: str) -> str:
    """``location``/``parts``; a URI's query string stays at the end, where pyarrow reads it."""
    if not is_uri(location):
        return str(Path(location, *parts))
    base, sep, query = str(location).partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


def without_query(uri: str) -> str:
    return uri.partition("?")[0]


def filesystem(uri: str, field: str = "run_dir"):
    """(pyarrow filesystem, path inside it) of ``uri``, or a ``ConfigError`` naming it."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    scheme = _SCHEME.match(uri).group(1)
    try:
        return pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid as exc:
        if "Unrecognized filesystem type" not in str(exc):  # a known scheme, a bad URI (e.g. its query)
            raise ConfigError(f"{field}={uri}: {exc}") from exc
    except (pa.ArrowException, OSError) as exc:  # e.g. an HDFS library missing
        raise ConfigError(f"{field}={uri}: pyarrow cannot open {scheme}:// storage ({exc})") from exc
    try:
        import fsspec
        from fsspec.registry import known_implementations
    except ImportError:
        raise ConfigError(f"{field}={uri}: pyarrow has no {scheme}:// filesystem (it has s3://, gs://, hdfs://, "
                          "file://), and fsspec, which may, is not installed") from None
    if scheme not in known_implementations and scheme not in fsspec.available_protocols():
        raise ConfigError(f"{field}={uri}: unknown storage scheme {scheme}:// (neither pyarrow nor fsspec has a "
                          "filesystem for it; pyarrow's are s3://, gs://, hdfs://, file://)")
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError as exc:  # fsspec names the package its filesystem needs
        raise ConfigError(f"{field}={uri}: {scheme}:// needs a package that is not installed: {exc}") from exc
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{field}={uri}: fsspec cannot open it ({exc})") from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


class LocalFiles:
    """A directory on this machine (created if missing); writes are ``sims.files``' atomic ones."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, relative: str) -> Path:
        return self.root / relative

    def write(self, relative: str, data: bytes) -> None:
        write_bytes_atomic(self.root / relative, data)

    def exists(self, relative: str) -> bool:
        return (self.root / relative).is_file()

    def read(self, relative: str) -> bytes | None:
        path = self.root / relative
        return path.read_bytes() if path.is_file() else None

    def glob(self, pattern: str) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.glob(pattern))

    def remove_tree(self, relative: str) -> None:
        shutil.rmtree(self.root / relative, ignore_errors=True)


class RemoteFiles:
    """A directory of remote storage, through a pyarrow filesystem."""

    def __init__(self, uri: str, field: str = "run_dir") -> None:
        self.uri, self.field = uri, field
        self.root = without_query(uri)  # what messages name
        self._fs, self._base = filesystem(uri, field)

    def path(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def _key(self, relative: str) -> str:
        return f"{self._base.rstrip('/')}/{relative}"

    def write(self, relative: str, data: bytes) -> None:
        key = self._key(relative)
        parent, _, name = key.rpartition("/")
        if self._fs.type_name in _ATOMIC_PUT:  # no directories to make either
            with self._fs.open_output_stream(key) as f:
                f.write(data)
            return
        self._fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            with self._fs.open_output_stream(tmp) as f:
                f.write(data)
            self._fs.move(tmp, key)
        except BaseException:
            try:
                self._fs.delete_file(tmp)
            except OSError:
                pass
            raise

    def exists(self, relative: str) -> bool:
        import pyarrow.fs as pafs

        return self._fs.get_file_info(self._key(relative)).type == pafs.FileType.File

    def read(self, relative: str) -> bytes | None:
        if not self.exists(relative):
            return None
        with self._fs.open_input_stream(self._key(relative)) as f:
            return f.read()

    def glob(self, pattern: str) -> list[str]:
        """Paths matching ``pattern`` (``*`` within one name), from one recursive listing."""
        from fnmatch import fnmatchcase

        import pyarrow.fs as pafs

        base = self._base.rstrip("/")
        depth = pattern.count("/")
        found = []
        for info in self._fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
            relative = info.path[len(base) + 1:]
            if relative.count("/") == depth and fnmatchcase(relative, pattern):
                found.append(relative)
        return sorted(found)

    def files_under(self, relative: str = "") -> list[str]:
        """Every file below ``relative``, relative to the root."""
        import pyarrow.fs as pafs

        base = self._base.rstrip("/")
        where = self._key(relative).rstrip("/") if relative else base
        infos = self._fs.get_file_info(pafs.FileSelector(where, recursive=True, allow_not_found=True))
        return sorted(i.path[len(base) + 1:] for i in infos if i.type == pafs.FileType.File)

    def remove_tree(self, relative: str) -> None:
        try:
            self._fs.delete_dir(self._key(relative))
        except (FileNotFoundError, OSError):
            pass


def files(location: str | os.PathLike, field: str = "run_dir") -> LocalFiles | RemoteFiles:
    return RemoteFiles(location, field) if is_uri(location) else LocalFiles(location)


def _split(location: str | os.PathLike) -> tuple[str, str]:
    """(the directory's location, the file's name) of a file's location."""
    if not is_uri(location):
        return str(Path(location).parent), Path(location).name
    base, sep, query = str(location).partition("?")
    parent, _, name = base.rpartition("/")
    return parent + sep + query, name


def write_to(location: str | os.PathLike, data: bytes) -> None:
    """One file, by its full location (a path or a URI), written atomically."""
    parent, name = _split(location)
    files(parent).write(name, data)


def read_from(location: str | os.PathLike) -> bytes | None:
    parent, name = _split(location)
    if not is_uri(parent) and not Path(parent).is_dir():  # LocalFiles would create it
        return None
    return files(parent).read(name)


PROBE = ".storage-probe"


def check_writable(uri: str, field: str = "run_dir") -> RemoteFiles:
    """``uri``'s storage, once a probe written there has been read back and deleted: an
    unreachable endpoint, missing credentials or a read-only bucket fail here, before Ray
    starts, naming the URI, rather than in the first rollout actor."""
    remote = RemoteFiles(uri, field)
    token = uuid.uuid4().hex.encode()
    relative = f"{PROBE}/{token.decode()}"
    written = False
    try:
        remote.write(relative, token)
        written = True
        back = remote.read(relative)
    except OSError as exc:
        raise ConfigError(f"{field}={uri}: cannot write there ({exc}); check the endpoint and that this machine's "
                          "credentials may write it") from exc
    finally:
        # A probe never written leaves nothing to delete (a failed write removes its own temp
        # file), and on an unreachable endpoint the delete would wait out the retries again: 6 s.
        if written:
            remote.remove_tree(PROBE)
    if back != token:
        raise ConfigError(f"{field}={uri}: a probe written there reads back {'nothing' if back is None else 'other bytes'}")
    return remote


STORE = "store"  # the rollout store's directory under a run: stays remote, never mirrored


class Mirror:
    """A remote run's driver files: written in ``staging`` (a local directory), copied to the URI.

    ``upload`` sends the files that changed since the last upload or download (by size and
    modification time: hashing every checkpoint each cycle would read them all), the checkpoint pointer and ``cycles.jsonl`` last; a temp file of an atomic write
    (a name starting with ".") is never sent. ``download`` makes ``staging`` the remote run's
    copy (everything but the store and what ``skip`` names), so a resume on any machine starts
    from the same bytes.
    """

    LAST = ("checkpoints/latest", "cycles.jsonl")

    def __init__(self, remote: RemoteFiles, staging: str | os.PathLike) -> None:
        self.remote, self.staging = remote, Path(staging)
        self.sent: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) of the copy storage holds

    def clear(self) -> None:
        """An empty staging directory: a copy left from before is not this run's (storage counts)."""
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self.sent.clear()

    def download(self, skip: Callable[[str], bool] = lambda relative: False) -> None:
        self.clear()
        for relative in self.remote.files_under():
            if relative.split("/")[0] in (STORE, PROBE) or skip(relative):
                continue
            data = self.remote.read(relative)
            if data is not None:
                self.sent[relative] = _stamp(write_bytes_atomic(self.staging / relative, data))

    def upload(self) -> list[str]:
        """Send what changed; returns the paths sent."""
        changed = []
        for path in sorted(self.staging.rglob("*")):
            relative = path.relative_to(self.staging).as_posix()
            if not path.is_file() or any(part.startswith(".") for part in relative.split("/")):
                continue
            if self.sent.get(relative) != _stamp(path):
                changed.append(relative)
        changed.sort(key=lambda relative: relative in self.LAST)  # stable: the rest first, in path order
        for relative in changed:
            path = self.staging / relative
            stamp = _stamp(path)  # before reading: a file rewritten meanwhile is sent again next time
            self.remote.write(relative, path.read_bytes())
            self.sent[relative] = stamp
        return changed


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def staging_dir(uri: str, root: str | os.PathLike) -> Path:
    """The local copy of a remote run's driver files: ``root``/remote/<scheme>/<bucket and path>."""
    scheme, rest = without_query(uri).split("://", 1)
    return (Path(root) / "remote" / scheme / rest.strip("/")).resolve()
