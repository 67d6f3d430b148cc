"""The graded-rollout store: Parquet shards per worker per cycle, a manifest per cycle.

Layout under the store root::

    cycle-000003/worker-01.parquet        one shard per rollout worker
    cycle-000003/quarantine.parquet       episodes with NaN/inf in their rows (never trained on)
    cycle-000003/_manifest.json           rows, episodes and sha256 of every shard

The manifest's leading underscore is what Arrow and pandas skip when they read a directory
as a dataset, so ``pd.read_parquet("store/cycle-000003")`` reads the shards (quarantine
included: filter on the manifest for training rows). Stores written before are read
through their ``manifest.json``.

Guarantees:

- A shard is written to a temp file and renamed, so no reader ever sees half a shard.
- Readers only read shards listed in a committed manifest, and the manifest is written
  last (also atomically): a cycle that crashed before its manifest is invisible, and its
  stray shards are rewritten when the cycle is collected again.
- Every shard is checksummed in the manifest and verified on read; a mismatch is skipped,
  logged and counted in ``ReadReport``, never silently trained on.
- An episode with a non-finite value in any float column is moved, whole, to the cycle's
  quarantine shard and counted in the manifest.
- An episode that a sim refused mid-way for a NaN or inf (``sims.NonFiniteError``: in an
  observation, a reward or the model's action) has no rows at all: the rollout dropped it
  (``flywheel.rollout.collect``); the manifest lists it (``QuarantinedEpisode``) and counts it
  among the quarantined episodes.

Replay without the replay in memory: ``sample(cycles, n, seed)`` draws ``n`` row ids over
every row of ``cycles`` from an index of the manifests (rows per shard, no data read), then
reads only the shards that hold drawn rows, one at a time, each verified, and keeps only
the drawn rows (pyarrow ``take``). Its memory is one shard plus the sample, however long
the run. The draw is ``shuffled_passes`` seeded by ``seed``: over the same rows it is the
draw ``flywheel.learners.global_batches`` makes over ``read``'s concatenation, so sampling
the store trains on exactly the rows the learners used to index in a replay read whole.

What goes in and comes out is a ``flywheel.rows.ChunkRows``, validated against the row
schema on write and on read (the error names the column). A column of shape (N, a, b) is
stored as nested fixed-size lists (``flywheel.rows.arrow_schema``): the Parquet type holds the
shape, so a plain reader gets it back without our metadata (pandas: each cell an array of a
arrays of b; pyarrow: the list sizes in the type; ``ray.data.read_parquet``: the same nesting).
Shards written before kept a flat list and the shape in the schema metadata; they still read.

The root is a local directory or a URI (``s3://bucket/runs/a/store``): every file goes through
``flywheel.storage.files`` (written whole and atomically either way), so the guarantees above
hold on remote storage too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel import storage
from flywheel.rows import EPISODE, SIM, ChunkRows, arrow_schema
from sims.files import json_bytes, sha256_bytes

log = logging.getLogger(__name__)

_LEGACY_SHAPE_KEY = b"flywheel.shapes"  # where shards written before nested lists kept array shapes
# Zstandard, not pyarrow's default snappy: in one cycle of the small starter (benchmarks/bench_camera.py)
# shards were 13% smaller with the camera off and 20% with it on, where zstd kept the frames (864 raw bytes
# per env step) in 35 bytes per env step against snappy's 105 (README, "Frames in the loop").
COMPRESSION = "zstd"
MANIFEST = "_manifest.json"  # a reader of the cycle directory as a dataset skips it
LEGACY_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardInfo:
    path: str  # relative to the store root
    rows: int
    episodes: int
    sha256: str
    # A multi-task run's: rows per training sim, the shard's rows grouped by sim in this order,
    # so that the replay draws each task's share from the manifests alone (``sample``).
    sims: dict[str, int] | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "sims" or v is not None}


@dataclass(frozen=True)
class QuarantinedEpisode:
    """An episode dropped by the rollout for a non-finite value (``sims.NonFiniteError``)."""

    episode: int
    sim: str
    field: str  # what held it: "proprio", "reward", "action" (the model's), ...
    step: int
    error: str  # the error's message


@dataclass
class Manifest:
    cycle: int
    shards: list[ShardInfo]
    quarantine: ShardInfo | None = None
    meta: dict = field(default_factory=dict)
    dropped: list[QuarantinedEpisode] = field(default_factory=list)  # no rows: not in ``quarantine``

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def episodes(self) -> int:
        return sum(s.episodes for s in self.shards)

    @property
    def quarantined_episodes(self) -> int:
        return (self.quarantine.episodes if self.quarantine else 0) + len(self.dropped)

    def to_json(self) -> dict:
        return {"cycle": self.cycle, "rows": self.rows, "episodes": self.episodes,
                "quarantined_episodes": self.quarantined_episodes,
                "shards": [s.to_json() for s in self.shards],
                "quarantine": self.quarantine.to_json() if self.quarantine else None, "meta": self.meta,
                "dropped": [asdict(d) for d in self.dropped]}

    @classmethod
    def from_json(cls, data: Mapping) -> Manifest:
        q = data.get("quarantine")
        return cls(int(data["cycle"]), [ShardInfo(**s) for s in data["shards"]],
                   ShardInfo(**q) if q else None, dict(data.get("meta", {})),
                   [QuarantinedEpisode(**d) for d in data.get("dropped", [])])


class CorruptManifest(ValueError):
    """A cycle's manifest that cannot be read; the message names the file and what to do."""


@dataclass
class ReadReport:
    """What a read skipped, so callers can log and count it (``rows``: the rows read, or for a
    ``sample`` the rows the draw was over)."""

    shards_read: int = 0
    rows: int = 0
    corrupt_shards: list[str] = field(default_factory=list)
    missing_cycles: list[int] = field(default_factory=list)


@dataclass
class CycleAudit:
    """A committed cycle's shards that a read would skip: ``missing`` (no file) and ``corrupt``
    (sha256 differs from the manifest), paths relative to the store root; ``manifest_error``:
    why its manifest cannot be read (then no shard of it is read, and none is listed)."""

    cycle: int
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    manifest_error: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.manifest_error)


@dataclass
class Sample:
    """Rows drawn from a replay: ``rows`` holds each drawn row once (in store order), ``order``
    the draw as positions in ``rows``; ``population`` is how many rows the draw was over."""

    rows: ChunkRows
    order: np.ndarray  # (n,) int64
    population: int

    def drawn(self) -> ChunkRows:
        """The drawn rows in draw order (a row drawn twice is there twice)."""
        return self.rows.take(self.order)


def shuffled_passes(population: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` row ids in [0, population) as shuffled passes: every row once per pass, so no row
    is drawn twice before every row is drawn once."""
    if population < 1:
        raise ValueError("no rows to draw from")
    return np.concatenate([rng.permutation(population) for _ in range(-(-n // population))])[:n]


def shares(weights: Iterable[float], n: int) -> list[int]:
    """``n`` split in proportion to ``weights`` (largest remainder, ties to the earlier entry):
    the counts sum to ``n`` exactly."""
    w = np.asarray(list(weights), np.float64)
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - int(counts.sum())]:
        counts[i] += 1
    return counts.tolist()


def _draw(shards: list[ShardInfo], n: int, rng: np.random.Generator,
          weights: Mapping[str, float] | None) -> np.ndarray:
    """``sample``'s ``n`` row ids over ``shards`` (numbered in order): uniform, or by sim weight."""
    if weights is None:
        return shuffled_passes(sum(s.rows for s in shards), n, rng)
    ids_of: dict[str, list[np.ndarray]] = {}
    offset = 0
    for shard in shards:
        if shard.sims is None:
            raise ValueError(f"{shard.path}: its manifest entry does not say which rows are which sim's, so the "
                             "replay cannot draw them by task weight")
        for sim, rows in shard.sims.items():
            ids_of.setdefault(sim, []).append(np.arange(offset, offset + rows))
            offset += rows
    drawn = [sim for sim, weight in weights.items() if weight > 0 and sim in ids_of]
    if not drawn:
        raise ValueError(f"no rows to draw from: none of {', '.join(weights)} has rows with a positive weight")
    parts = []
    for sim, count in zip(drawn, shares([weights[sim] for sim in drawn], n)):
        pool = np.concatenate(ids_of[sim])
        parts.append(pool[shuffled_passes(len(pool), count, rng)] if count else pool[:0])
    ids = np.concatenate(parts)
    return ids[rng.permutation(len(ids))]


class RolloutStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.files = storage.files(root)
        self.root: Path | str = self.files.root  # a Path, or the URI of remote storage

    # ------------------------------------------------------------------ writing

    def write_shard(self, cycle: int, worker: int, rows: Mapping[str, np.ndarray],
                    by_sim: bool = False) -> tuple[ShardInfo | None, ChunkRows]:
        """Write one worker's chunks of a cycle (validated: ``ChunkRows.of``); returns the clean
        shard (None if every episode was quarantined) and the quarantined rows (possibly none).
        ``by_sim`` (a multi-task run): the rows grouped by sim, their counts in ``ShardInfo.sims``."""
        clean, bad = split_quarantine(ChunkRows.of(rows))
        if not clean.n:
            return None, bad
        sims = None
        if by_sim:
            clean = clean.take(np.argsort(clean[SIM].astype(str), kind="stable"))
            names, counts = np.unique(clean[SIM].astype(str), return_counts=True)
            sims = {str(name): int(count) for name, count in zip(names, counts)}
        info = self._write(f"{_cycle_dir(cycle)}/worker-{worker:02d}.parquet", clean)
        return replace(info, sims=sims), bad

    def commit_cycle(self, cycle: int, shards: Iterable[ShardInfo | None],
                     quarantined: Iterable[Mapping[str, np.ndarray]] = (), meta: dict | None = None,
                     dropped: Iterable[QuarantinedEpisode] = ()) -> Manifest:
        """Make a cycle's shards visible: write its quarantine shard, then its manifest."""
        bad = [ChunkRows.of(q) for q in quarantined if q and ChunkRows(q).n]
        quarantine = self._write(f"{_cycle_dir(cycle)}/quarantine.parquet", ChunkRows.concat(bad)) if bad else None
        manifest = Manifest(cycle, sorted((s for s in shards if s), key=lambda s: s.path), quarantine, meta or {},
                            sorted(dropped, key=lambda d: d.episode))
        if manifest.quarantined_episodes:
            log.warning("cycle %d: %d episode(s) quarantined for non-finite values", cycle,
                        manifest.quarantined_episodes)
        self.files.write(f"{_cycle_dir(cycle)}/{MANIFEST}", json_bytes(manifest.to_json()))
        return manifest

    def _write(self, relative: str, rows: ChunkRows) -> ShardInfo:
        buffer = pa.BufferOutputStream()
        pq.write_table(to_table(rows), buffer, compression=COMPRESSION)
        data = buffer.getvalue().to_pybytes()
        self.files.write(relative, data)
        return ShardInfo(relative, rows.n, len(np.unique(rows[EPISODE])), sha256_bytes(data))

    # ------------------------------------------------------------------ reading

    def manifest(self, cycle: int) -> Manifest | None:
        relative = self._manifest_file(cycle)
        data = None if relative is None else self.files.read(relative)
        if data is None:
            return None
        path = self.files.path(relative)
        try:
            return Manifest.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError) as exc:  # a JSONDecodeError is a ValueError
            # Without the path, a truncated manifest stopped every resume with a bare JSON error.
            raise CorruptManifest(
                f"{path}: not a readable manifest ({type(exc).__name__}: {exc}). Move it aside and resume: the "
                f"cycle then counts as not collected (collected again if it is the cycle in progress, left out "
                f"of the replay if it is an earlier one)") from exc

    def manifest_path(self, cycle: int) -> Path | str | None:
        """The committed manifest's file (a URI on remote storage), or None."""
        relative = self._manifest_file(cycle)
        return None if relative is None else self.files.path(relative)

    def _manifest_file(self, cycle: int) -> str | None:
        """The committed manifest, relative to the root: the current name, else a store's from before it."""
        return next((relative for name in (MANIFEST, LEGACY_MANIFEST)
                     if self.files.exists(relative := f"{_cycle_dir(cycle)}/{name}")), None)

    def committed_cycles(self) -> list[int]:
        return sorted({int(p.split("/")[0].split("-")[1]) for name in (MANIFEST, LEGACY_MANIFEST)
                       for p in self.files.glob(f"cycle-*/{name}")})

    def audit(self) -> list[CycleAudit]:
        """Every committed cycle, its shards checked as a read checks them (whole files hashed,
        one at a time), without reading any: for ``flywheel status``, since a read only logs
        what it skips and the run goes on without those rows."""
        audits = []
        for cycle in self.committed_cycles():
            audit = CycleAudit(cycle)
            try:
                manifest = self.manifest(cycle)
            except CorruptManifest as exc:
                audit.manifest_error = str(exc)
                manifest = Manifest(cycle, [])
            for shard in manifest.shards:
                data = self.files.read(shard.path)
                if data is None:
                    audit.missing.append(shard.path)
                elif sha256_bytes(data) != shard.sha256:
                    audit.corrupt.append(shard.path)
            audits.append(audit)
        return audits

    def shard_paths(self, cycles: Iterable[int]) -> list[str]:
        """Absolute paths (URIs on remote storage) of the committed shards of ``cycles`` (e.g. for
        ray.data.read_parquet)."""
        return [str(self.files.path(s.path)) for c in cycles if (m := self.manifest(c)) for s in m.shards]

    def read(self, cycles: Iterable[int]) -> tuple[ChunkRows, ReadReport]:
        """Concatenate the verified shards of ``cycles`` (no columns when there is none); corrupt
        or missing ones are reported."""
        report = ReadReport()
        parts = []
        for shard in self._shards(cycles, report):
            table = self._verified(shard, report)
            if table is not None:
                parts.append(from_table(table))
        rows = ChunkRows.concat(parts) if parts else ChunkRows({})
        report.rows = rows.n
        return rows, report

    def sample(self, cycles: Iterable[int], n: int, seed, weights: Mapping[str, float] | None = None,
               skip: Collection[str] = ()) -> tuple[Sample, ReadReport]:
        """``n`` rows drawn uniformly (``shuffled_passes`` seeded by ``seed``) over every row of
        ``cycles``, reading only the shards that hold drawn rows (module docstring). With
        ``weights`` (a multi-task run's, by training sim) each sim's share of the ``n`` draws
        is its weight's (``shares``, over the sims the rows hold), drawn as shuffled passes over
        its rows; the draws are then shuffled together. Columns named in ``skip`` are not read
        (``flywheel.objective.unread_columns``: what the learners' loss never reads); the
        draw is the same.

        A drawn shard that is missing or fails its checksum is reported and left out, and the
        draw starts again from ``seed`` over the rest: the result is the draw over the rows a
        ``read`` would return, never a row of a bad shard.
        """
        report = ReadReport()
        shards = self._shards(cycles, report)
        while True:
            population = sum(s.rows for s in shards)
            ids = _draw(shards, n, np.random.default_rng(seed), weights)
            unique, order = np.unique(ids, return_inverse=True)
            parts, bad = self._take(shards, unique, report, skip)
            if bad is None:
                break
            shards.remove(bad)
            report.shards_read = 0  # the next draw reads its own shards
        report.rows = population
        return Sample(ChunkRows.concat(parts), order.astype(np.int64), population), report

    def window(self, last_cycle: int, k: int | None) -> list[int]:
        """The committed cycles up to ``last_cycle``, all of them (``k`` None) or the last ``k``:
        the replay the learners sample."""
        if k is not None and k < 1:
            raise ValueError(f"replay window must be >= 1 cycle, got {k}")
        cycles = [c for c in self.committed_cycles() if c <= last_cycle]
        return cycles if k is None else cycles[-k:]

    def _shards(self, cycles: Iterable[int], report: ReadReport) -> list[ShardInfo]:
        """The committed shards of ``cycles`` in read order (missing cycles reported)."""
        shards = []
        for cycle in cycles:
            manifest = self.manifest(cycle)
            if manifest is None:
                report.missing_cycles.append(cycle)
            else:
                shards.extend(manifest.shards)
        return shards

    def _take(self, shards: list[ShardInfo], ids: np.ndarray, report: ReadReport,
              skip: Collection[str] = ()) -> tuple[list[ChunkRows], ShardInfo | None]:
        """The rows at sorted global ``ids`` (numbered over ``shards`` in order), one shard read at
        a time; stops at the first bad shard and returns it."""
        offsets = np.cumsum([0] + [s.rows for s in shards])
        which = np.searchsorted(offsets, ids, side="right") - 1
        parts = []
        for i in np.unique(which):
            table = self._verified(shards[i], report, skip)
            if table is None:
                return parts, shards[i]
            parts.append(from_table(table.take(pa.array(ids[which == i] - offsets[i]))))
        return parts, None

    def _verified(self, shard: ShardInfo, report: ReadReport, skip: Collection[str] = ()) -> pa.Table | None:
        """A shard's table, without the columns in ``skip``, if its bytes match the manifest's
        sha256 (read once: hashed, then parsed); None, reported, if it is missing or corrupt."""
        data = self.files.read(shard.path) or b""
        if sha256_bytes(data) != shard.sha256:
            log.warning("skipping shard %s: missing or checksum mismatch", shard.path)
            report.corrupt_shards.append(shard.path)
            return None
        report.shards_read += 1
        columns = [c for c in pq.read_schema(pa.BufferReader(data)).names if c not in skip] if skip else None
        return pq.read_table(pa.BufferReader(data), columns=columns)


# ---------------------------------------------------------------------- encoding


def to_table(rows: ChunkRows) -> pa.Table:
    arrays = {}
    for name, values in rows.items():
        if values.dtype == object or values.dtype.kind in "US":
            arrays[name] = pa.array(values.astype(str).tolist())
        else:
            array = pa.array(values.reshape(-1))
            for size in reversed(values.shape[1:]):  # innermost first: (N, a, b) is N lists of a lists of b
                array = pa.FixedSizeListArray.from_arrays(array, int(size))
            arrays[name] = array
    return pa.table(arrays, schema=arrow_schema(rows))


def from_table(table: pa.Table) -> ChunkRows:
    """Rows of a shard: array columns nested fixed-size lists, or, in a shard written before
    they were, flat lists with their shapes in the schema metadata."""
    legacy_shapes = json.loads((table.schema.metadata or {}).get(_LEGACY_SHAPE_KEY, b"{}"))
    out = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_string(column.type):
            out[name] = np.asarray(column.to_pylist(), dtype=object)
            continue
        shape = []
        while pa.types.is_fixed_size_list(column.type):
            shape.append(column.type.list_size)
            column = column.flatten()  # unlike .values, honours a sliced array's offset
        values = column.to_numpy(zero_copy_only=False)
        out[name] = values.reshape(table.num_rows, *legacy_shapes.get(name, shape))
    return ChunkRows.of(out)


def split_quarantine(rows: ChunkRows) -> tuple[ChunkRows, ChunkRows]:
    """Split rows into (clean, quarantined): a whole episode goes if any of its rows has a
    non-finite float anywhere."""
    bad_row = np.zeros(rows.n, dtype=bool)
    for values in rows.values():
        if values.dtype.kind == "f":
            bad_row |= ~np.isfinite(values.reshape(rows.n, -1)).all(axis=1)
    episodes = rows[EPISODE]
    bad = np.isin(episodes, np.unique(episodes[bad_row]))
    return rows.take(~bad), rows.take(bad)


def _cycle_dir(cycle: int) -> str:
    return f"cycle-{cycle:06d}"
