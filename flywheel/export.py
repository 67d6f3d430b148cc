"""A run's graded rollouts as Minari datasets, which a Minari user opens with ``minari.load_dataset``.

    flywheel export RUN_DIR --format minari [--out DIR] [--force]

``DIR`` (default ``RUN_DIR/export/minari``) becomes a Minari datasets root holding one dataset
per training sim, ``flywheel/<sim>-v0`` (e.g. ``flywheel/mujoco/reacher-twin-v0``): one sim per
dataset, since a Minari dataset has one observation and one action space.

What an episode holds (``T`` executed steps; only executed steps: a chunk that the episode ended
inside contributes its ``steps``, never its padding, and padded dimensions are cut to the
embodiment's ``proprio_dim`` / ``action_dim``):

- ``observations`` (T+1, proprio_dim) float32: the proprio the episode started from, then the
  proprio after each step, as the engine produced it (``realized``).
- ``actions`` (T, action_dim) float32: what ``env.step`` received, in env units (the model's
  action through ``Embodiment.to_env_action``, clipped to the bounds, which are the action space).
- ``rewards`` (T,); ``terminations`` (T,): true at the last step of an episode that terminated;
  ``truncations`` (T,): true at the last step of one that ran into its time limit.
- ``infos``, Gymnasium's and Minari's convention: entry 0 is the reset's, entry t+1 step t's.
  ``episode`` (the run's episode id), ``frame_index`` (0..T), ``chunk`` (the chunk that ran the
  step), ``success`` (the task succeeded at some step so far, as of the chunk's end), and every
  grade column (``flywheel.rows.GRADE_COLUMNS``) of the step's chunk, **repeated over the steps of
  that chunk**: grades are per chunk. At the reset entry ``chunk`` is -1, grades are 0 and the
  ``*_applies`` flags false.
- episode metadata (``dataset.storage.get_episode_metadata([i])``): ``sim``, ``task`` (the task
  text), ``run_episode``, ``cycle``, ``worker``, ``weight_version``, ``episode_success``,
  ``episode_return``.

A ``camera=true`` run's frames come with them: its datasets' observations are a dict (the
observation space a ``gymnasium.spaces.Dict``), ``proprio`` as above and ``frames`` (T+1, size,
size, 3) uint8, the camera frame the episode started from (the first chunk's ``frame``), then
the frame after each step (``realized_frames``), aligned with ``proprio``. The frames the model
imagined are not exported (they are a chunk's forecast, not an observation).

What is read: the store's committed cycles through ``RolloutStore.read`` (verified shards only);
quarantined episodes are never in a read, and the export counts them (``ExportReport``) together
with any shard a read skipped. The whole output is staged beside ``DIR`` and renamed into place
at the end (``sims.files.atomic_directory``): an interrupted export leaves no half dataset.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from flywheel.rows import (ACTION_DIM, ACTIONS, CHUNK, CYCLE, EPISODE, EPISODE_RETURN, EPISODE_SUCCESS, FRAME,
                           GRADE_COLUMNS, PROPRIO, PROPRIO_DIM, REALIZED, REALIZED_FRAMES, REWARDS, SIM, STEPS,
                           SUCCESS, TASK, TERMINATED, WEIGHT_VERSION, WORKER, ChunkRows)
from flywheel.store import RolloutStore
from sims.embodiment import Embodiment
from sims.files import atomic_directory

FORMATS = ("minari",)
NAMESPACE = "flywheel"
FRAME_INDEX = "frame_index"  # an info key: the step's observation index in its episode
RUN_EPISODE = "run_episode"  # an episode metadata key: the run's episode id (Minari numbers its own 0..N-1)
OBS_PROPRIO, OBS_FRAMES = "proprio", "frames"  # a camera run's observation keys
INSTALL_HINT = 'Minari is an optional dependency: pip install "physics-flywheel[export]"'


@dataclass
class Episode:
    """One episode of one sim, expanded from its chunk rows (module docstring)."""

    sim: str
    observations: np.ndarray | dict[str, np.ndarray]  # (T+1, proprio_dim) float32; a camera run's: by OBS_* key
    actions: np.ndarray  # (T, action_dim) float32, env units
    rewards: np.ndarray  # (T,) float64
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    infos: dict[str, np.ndarray]  # each (T+1,)
    metadata: dict[str, Any]


@dataclass
class ExportReport:
    """What an export wrote and what it left out."""

    out: Path
    datasets: dict[str, int] = field(default_factory=dict)  # dataset id -> episodes
    steps: int = 0
    quarantined_episodes: int = 0  # never exported: the store keeps them out of every read
    skipped_shards: list[str] = field(default_factory=list)  # missing or failing their checksum


def dataset_id(sim: str) -> str:
    return f"{NAMESPACE}/{sim}-v0"


def episodes(rows: ChunkRows, embodiments: Mapping[str, Embodiment]) -> Iterator[Episode]:
    """The episodes of ``rows`` (whole episodes: a read of a cycle holds every chunk of each),
    in episode id order, each chunk cut to the steps it ran."""
    order = np.lexsort((rows[CHUNK], rows[EPISODE]))
    ids = rows[EPISODE][order]
    for group in np.split(order, np.flatnonzero(np.diff(ids)) + 1):
        yield _episode(rows.take(group), embodiments[str(rows[SIM][group[0]])])


def _episode(chunks: ChunkRows, emb: Embodiment) -> Episode:
    if not np.array_equal(chunks[CHUNK], np.arange(chunks.n)):
        raise ValueError(f"episode {chunks[EPISODE][0]}: chunks {chunks[CHUNK].tolist()} are not 0..{chunks.n - 1}")
    p, a = int(chunks[PROPRIO_DIM][0]), int(chunks[ACTION_DIM][0])
    steps = chunks[STEPS]
    ran = np.arange(chunks[REWARDS].shape[1])[None, :] < steps[:, None]  # (chunks, chunk): executed steps
    start = chunks[PROPRIO][0, -1, :p]  # the latest step of the first chunk's history: the reset's observation
    observations = np.concatenate([start[None], chunks[REALIZED][ran][:, :p]]).astype(np.float32)
    if chunks.frames:
        frames = np.concatenate([chunks[FRAME][:1], chunks[REALIZED_FRAMES][ran]])
        observations = {OBS_PROPRIO: observations, OBS_FRAMES: frames}
    actions = emb.to_env_action(emb.unpad_action(chunks[ACTIONS][ran]))
    n = int(steps.sum())
    terminated = bool(chunks[TERMINATED][-1])
    end = np.zeros(n, dtype=bool)
    end[-1] = True
    per_step = np.repeat(np.arange(chunks.n), steps)  # the chunk of each step
    infos = {EPISODE: np.full(n + 1, chunks[EPISODE][0], dtype=np.int64),
             FRAME_INDEX: np.arange(n + 1, dtype=np.int64),
             CHUNK: np.concatenate([[-1], chunks[CHUNK][per_step]]).astype(np.int64),
             SUCCESS: np.concatenate([[False], chunks[SUCCESS][per_step]])}
    if chunks.graded:
        for column in GRADE_COLUMNS:
            values = chunks[column.name]
            infos[column.name] = np.concatenate([np.zeros(1, values.dtype), values[per_step]])
    first = {key: chunks[key][0] for key in (EPISODE, CYCLE, WORKER, WEIGHT_VERSION, EPISODE_SUCCESS, EPISODE_RETURN)}
    metadata = {SIM: str(chunks[SIM][0]), TASK: str(chunks[TASK][0]), RUN_EPISODE: int(first[EPISODE]),
                CYCLE: int(first[CYCLE]), WORKER: int(first[WORKER]), WEIGHT_VERSION: int(first[WEIGHT_VERSION]),
                EPISODE_SUCCESS: bool(first[EPISODE_SUCCESS]), EPISODE_RETURN: float(first[EPISODE_RETURN])}
    return Episode(str(chunks[SIM][0]), observations, actions,
                   chunks[REWARDS][ran].astype(np.float64), end & terminated, end & (not terminated), infos, metadata)


def export_minari(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, force: bool = False,
                  progress: bool | None = None) -> ExportReport:
    """Write the run's graded rollouts as Minari datasets under ``out`` (module docstring).
    ``progress``: a bar over cycles (None: when stderr is a terminal)."""
    try:
        import minari
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    out = Path(out) if out is not None else run_dir / "export" / "minari"
    if out.exists() and not force:
        raise ValueError(f"{out}: already exists (--force replaces it)")
    store = RolloutStore(run_dir / "store")
    report = ExportReport(out)
    datasets: dict[str, Any] = {}
    embodiments: dict[str, Embodiment] = {}
    with atomic_directory(out) as staging, _minari_root(staging), warnings.catch_warnings():
        # Minari warns of every metadata field left unset (author, code permalink, Gymnasium env): a run has none.
        warnings.filterwarnings("ignore", category=UserWarning, module="minari")
        os.chmod(staging, 0o755)  # a dataset to share, not mkdtemp's private directory
        for cycle in tqdm(store.committed_cycles(), desc="export", unit="cycle", disable=_quiet(progress)):
            rows, read = store.read([cycle])
            report.skipped_shards += read.corrupt_shards
            report.quarantined_episodes += store.manifest(cycle).quarantined_episodes
            if not rows.n:
                continue
            for sim in sorted(set(rows[SIM])):
                if sim not in embodiments:
                    embodiments[sim] = embodiment_of(config, sim, run_dir)
            by_sim: dict[str, list[Episode]] = {}
            for episode in episodes(rows, embodiments):
                by_sim.setdefault(episode.sim, []).append(episode)
            for sim, batch in by_sim.items():
                datasets[sim] = _append(minari, datasets.get(sim), sim, batch, embodiments[sim])
                report.datasets[dataset_id(sim)] = report.datasets.get(dataset_id(sim), 0) + len(batch)
                report.steps += sum(len(e.rewards) for e in batch)
        if not datasets:
            raise ValueError(f"{run_dir}: no rollouts to export (no committed cycle with readable shards in "
                             f"{store.root})")
    return report


def _append(minari, dataset, sim: str, batch: list[Episode], emb: Embodiment):
    """``batch`` added to ``sim``'s dataset (created on its first batch), with its episode metadata."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    first = 0 if dataset is None else dataset.total_episodes
    # Infos as lists: Minari reads a 1-D array info back only as a list (its shape tag is empty).
    buffers = [EpisodeBuffer(id=first + i, observations=e.observations, actions=e.actions, rewards=e.rewards,
                             terminations=e.terminations, truncations=e.truncations,
                             infos={k: v.tolist() for k, v in e.infos.items()})
               for i, e in enumerate(batch)]
    if dataset is None:
        import gymnasium as gym

        observation_space = gym.spaces.Box(-np.inf, np.inf, (emb.proprio_dim,), np.float32)
        observations = batch[0].observations
        if isinstance(observations, dict):
            frames = gym.spaces.Box(0, 255, observations[OBS_FRAMES].shape[1:], np.uint8)
            observation_space = gym.spaces.Dict({OBS_PROPRIO: observation_space, OBS_FRAMES: frames})
        action_space = gym.spaces.Box(np.asarray(emb.action_low, np.float32), np.asarray(emb.action_high, np.float32))
        dataset = minari.create_dataset_from_buffers(
            dataset_id(sim), buffers, observation_space=observation_space, action_space=action_space,
            algorithm_name="physics-flywheel", data_format="arrow",
            description=f"Graded rollouts of a physics-flywheel run in {sim}: {batch[0].metadata[TASK]}")
    else:
        dataset.update_dataset_from_buffer(buffers)
    dataset.storage.update_episode_metadata([e.metadata for e in batch], range(first, first + len(batch)))
    return dataset


def run_config(run_dir: Path) -> dict:
    """A run directory's saved config, or one line saying why ``run_dir`` is not a run."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{run_dir}: not a flywheel run directory (no config.json)")
    if not (run_dir / "store").is_dir():
        raise ValueError(f"{run_dir}: no rollouts to export (no store/ directory: no rollout phase has ended)")
    return json.loads(path.read_text())


def embodiment_of(config: Mapping, sim: str, run_dir: Path) -> Embodiment:
    """The embodiment of a training sim the run's config names, from the sim made as the run made it."""
    import sims
    from configs.schema import SimConfig

    for key in ("sim", "reference"):
        entry = config.get(key) or {}
        if entry.get("name") == sim:
            env = sims.make(sim, **SimConfig(**entry).make_kwargs())
            try:
                return env.embodiment
            finally:
                env.close()
    raise ValueError(f"{run_dir}/config.json: the store holds rollouts of sim {sim!r}, which the config does not name")


@contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Minari finds its datasets root in an environment variable only: point it at ``root`` for the block."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if before is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def _quiet(progress: bool | None) -> bool | None:
    return None if progress is None else not progress  # tqdm's disable=None: off unless stderr is a terminal
