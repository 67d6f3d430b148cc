"""The chunk row: one executed action chunk and everything known about it.

This module owns the row. The rollout loop (``flywheel.rollout.collect``) produces rows,
``grade_columns`` flattens the grader's answers into them, the store validates them on write
and read, and the objective, controller, learners and report consume them. Nobody else spells
a column name: they import the constants below.

A batch of rows is a ``ChunkRows``: one numpy array per column, one entry per chunk, padded
to the model's shared sizes so chunks of different embodiments stack:

| column | dtype | per row | meaning |
|---|---|---|---|
| episode | int64 | () | episode id, unique in a run (``episode_id``) |
| cycle, worker, weight_version | int64 | () | who collected it, with which weights |
| sim, task | str | () | the training sim's name (a multi-task run's task: ``RunConfig.tasks`` are told apart by it) and the task text |
| chunk | int64 | () | the chunk's index in its episode |
| proprio_dim, action_dim | int64 | () | the embodiment's real sizes (the rest is padding) |
| proprio | float32 | (history, proprio_pad) | the model's input: the last ``history`` proprio steps |
| actions | float32 | (chunk, action_pad) | the executed chunk, model units |
| imagined | float32 | (chunk, proprio_pad) | the future the plan imagined (planning rollouts only) |
| realized | float32 | (chunk, proprio_pad) | the future the engine produced (zeros after ``steps``) |
| steps | int64 | () | steps the chunk really ran (the episode may end inside it) |
| sim_steps | int64 | () | every sim step spent on the chunk: its ``steps``, ``best_in_sim``'s look-ahead, grading (``sims.env``) |
| reward | float64 | () | reward summed over the chunk |
| rewards | float64 | (chunk,) | each step's reward (zeros after ``steps``): the critic discounts them |
| terminated | bool | () | the episode terminated inside the chunk (a time limit is not a termination) |
| success | bool | () | the task succeeded at some step of the episode so far |
| planned | bool | () | the chunk came from a plan |
| return | float64 | () | reward from the chunk's start to the episode's end |
| episode_success, episode_return | bool, float64 | () | how the chunk's episode ended |
| frame | uint8 | (image_size, image_size, 3) | the camera frame the chunk was perceived from (camera runs only) |
| realized_frames | uint8 | (chunk, image_size, image_size, 3) | the frame after each step the chunk ran (zeros after ``steps``; camera runs only) |
| imagined_frames | uint8 | (chunk, image_size, image_size, 3) | the frames the plan imagined (camera runs of a model that imagines frames) |
| candidate_* | see ``CANDIDATE_COLUMNS`` | (candidates, ...) | every candidate the training sim ran
  (``choose=sim`` only): its actions, step rewards, steps, termination and end proprio history, and
  (``candidate_imagined``, last in stored order) the future it was acted from |
| candidate_lookahead_reward | float64 | (candidates,) | each candidate's reward summed over its chunk and
  the policy's chunks after it, the reward the sim ranked it by (``lookahead_chunks`` runs only) |
| weight, grade_* | see ``GRADE_COLUMNS`` | () | the grader's answers (graded rollouts only) |
| engine_* | see ``ENGINE_COLUMNS`` | | a learned training sim's correcting engine over the chunk (refit runs only):
  its proprio at the chunk's start and after each step, and its step rewards, whatever the learned sim
  showed; the transitions a world-model refit trains on (``flywheel.refit``) |

Frames are uint8 at the model's ``image_size`` (the size it was pretrained on): 768 bytes a
16 x 16 frame, compressed in the shard by Parquet (``flywheel.store``). Imagined frames, generated
in [-1, 1], are stored as ``to_pixels`` rounds them.

An optional grade answer that does not apply reads 0 and its ``grade_*_applies`` flag is
false (Parquet holds no "not applicable" but NaN, which the store quarantines): read it only
through ``guarded``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

# ---------------------------------------------------------------------- column names

EPISODE = "episode"
CYCLE = "cycle"
WORKER = "worker"
WEIGHT_VERSION = "weight_version"
SIM = "sim"
CHUNK = "chunk"
PROPRIO_DIM = "proprio_dim"
ACTION_DIM = "action_dim"
TASK = "task"
PROPRIO = "proprio"
ACTIONS = "actions"
REALIZED = "realized"
STEPS = "steps"
SIM_STEPS = "sim_steps"
REWARD = "reward"
REWARDS = "rewards"
TERMINATED = "terminated"
SUCCESS = "success"
PLANNED = "planned"
IMAGINED = "imagined"
RETURN = "return"
EPISODE_SUCCESS = "episode_success"
EPISODE_RETURN = "episode_return"
CANDIDATE_ACTIONS = "candidate_actions"
CANDIDATE_REWARDS = "candidate_rewards"
CANDIDATE_STEPS = "candidate_steps"
CANDIDATE_TERMINATED = "candidate_terminated"
CANDIDATE_NEXT_PROPRIO = "candidate_next_proprio"
CANDIDATE_IMAGINED = "candidate_imagined"
CANDIDATE_LOOKAHEAD_REWARD = "candidate_lookahead_reward"
FRAME = "frame"
REALIZED_FRAMES = "realized_frames"
IMAGINED_FRAMES = "imagined_frames"
ENGINE_START = "engine_start"
ENGINE_REALIZED = "engine_realized"
ENGINE_REWARDS = "engine_rewards"

WEIGHT = "weight"
GRADE_REWARD = "grade_reward"
GRADE_PROGRESS = "grade_progress"
GRADE_SUCCESS_APPLIES = "grade_success_applies"
GRADE_SUCCESS = "grade_success"
GRADE_IMAGINATION_APPLIES = "grade_imagination_applies"
GRADE_IMAGINATION = "grade_imagination"
GRADE_IMAGINATION_ERROR = "grade_imagination_error"
GRADE_PHYSICS_APPLIES = "grade_physics_applies"
GRADE_PHYSICS = "grade_physics"
GRADE_PHYSICS_GAP = "grade_physics_gap"
GRADE_PHYSICS_WORST = "grade_physics_worst"
GRADE_OBEYS_PHYSICS = "grade_obeys_physics"


@dataclass(frozen=True)
class Column:
    """One column: its name, numpy dtype (``object`` for text) and per-row shape, named by
    the model's sizes (``history``, ``chunk``, ``proprio_pad``, ``action_pad``, ``image_size``)."""

    name: str
    dtype: str
    shape: tuple[str | int, ...] = ()  # a size by name, or a fixed one (a frame's 3 channels)


# In the order ``collect`` has always written them (the stored Parquet column order).
CORE_COLUMNS = (
    Column(EPISODE, "int64"), Column(CYCLE, "int64"), Column(WORKER, "int64"), Column(WEIGHT_VERSION, "int64"),
    Column(SIM, "object"), Column(CHUNK, "int64"), Column(PROPRIO_DIM, "int64"), Column(ACTION_DIM, "int64"),
    Column(TASK, "object"), Column(PROPRIO, "float32", ("history", "proprio_pad")),
    Column(ACTIONS, "float32", ("chunk", "action_pad")), Column(REALIZED, "float32", ("chunk", "proprio_pad")),
    Column(STEPS, "int64"), Column(REWARD, "float64"), Column(SUCCESS, "bool"), Column(PLANNED, "bool"),
    Column(SIM_STEPS, "int64"),
)
# What the critic's TD targets need of the executed chunk (``policies.critic.td_target``).
TRANSITION_COLUMNS = (Column(REWARDS, "float64", ("chunk",)), Column(TERMINATED, "bool"))
IMAGINED_COLUMN = Column(IMAGINED, "float32", ("chunk", "proprio_pad"))
# Every candidate the training sim ran from the chunk's start (``choose=sim``): labelled data
# for the critic, the executed one among them. ``candidates`` is the rollout's n_candidates.
CANDIDATE_COLUMNS = (
    Column(CANDIDATE_ACTIONS, "float32", ("candidates", "chunk", "action_pad")),
    Column(CANDIDATE_REWARDS, "float64", ("candidates", "chunk")), Column(CANDIDATE_STEPS, "int64", ("candidates",)),
    Column(CANDIDATE_TERMINATED, "bool", ("candidates",)),
    Column(CANDIDATE_NEXT_PROPRIO, "float32", ("candidates", "history", "proprio_pad")),
)
# The future each candidate was acted from (the plan's, as ``imagined`` is the executed one's):
# what the action expert reads when it learns the candidates (``flywheel.objective``). Written
# only where the run learns them (``RolloutSpec.candidate_futures``); rows of both kinds mix
# (``LATER_COLUMNS``): a store written before the column existed, a run resumed with it turned on.
CANDIDATE_IMAGINED_COLUMN = Column(CANDIDATE_IMAGINED, "float32", ("candidates", "chunk", "proprio_pad"))
# The reward the sim ranked each candidate by when it looked past the chunk (``RolloutSpec.lookahead_chunks``;
# with a critic, the value where the run ends came on top): the reward of the candidate's chunk and
# of the policy's chunks after it, undiscounted. The chunk ranker and the candidates the action
# expert draws learn this order where rows have it (``flywheel.objective.sibling_scores``).
CANDIDATE_LOOKAHEAD_COLUMN = Column(CANDIDATE_LOOKAHEAD_REWARD, "float64", ("candidates",))
# Every candidate column: rows without any of them are valid rows (a run that does not choose in
# the sim), which is what lets a sample leave them unread (``flywheel.objective.unread_columns``).
CANDIDATE_NAMES = tuple(c.name for c in CANDIDATE_COLUMNS + (CANDIDATE_IMAGINED_COLUMN, CANDIDATE_LOOKAHEAD_COLUMN))
# Columns some rows lack where others of the same kind have them (added later, or kept only when
# asked for): such rows still read, and rows of both kinds together keep only what all of them have.
LATER_COLUMNS = (CANDIDATE_IMAGINED, CANDIDATE_LOOKAHEAD_REWARD)
# What a camera run records: the frame each chunk was perceived from and the frames it realized
# (the video expert's targets where the model imagines frames), and the frames it imagined.
FRAME_COLUMNS = (Column(FRAME, "uint8", ("image_size", "image_size", 3)),
                 Column(REALIZED_FRAMES, "uint8", ("chunk", "image_size", "image_size", 3)))
IMAGINED_FRAMES_COLUMN = Column(IMAGINED_FRAMES, "uint8", ("chunk", "image_size", "image_size", 3))
# A learned training sim's engine (``world_model.learned_env``: it steps a shadow engine with the
# same actions): the realized physics behind the learned rows, zeros after ``steps``.
ENGINE_COLUMNS = (
    Column(ENGINE_START, "float32", ("proprio_pad",)), Column(ENGINE_REALIZED, "float32", ("chunk", "proprio_pad")),
    Column(ENGINE_REWARDS, "float64", ("chunk",)),
)
GRADE_COLUMNS = (
    Column(WEIGHT, "float64"), Column(GRADE_REWARD, "float64"), Column(GRADE_PROGRESS, "float64"),
    Column(GRADE_SUCCESS_APPLIES, "bool"), Column(GRADE_SUCCESS, "bool"),
    Column(GRADE_IMAGINATION_APPLIES, "bool"), Column(GRADE_IMAGINATION, "float64"),
    Column(GRADE_IMAGINATION_ERROR, "float64"), Column(GRADE_PHYSICS_APPLIES, "bool"),
    Column(GRADE_PHYSICS, "float64"), Column(GRADE_PHYSICS_GAP, "float64"), Column(GRADE_PHYSICS_WORST, "float64"),
    Column(GRADE_OBEYS_PHYSICS, "bool"),
)
OUTCOME_COLUMNS = (Column(RETURN, "float64"), Column(EPISODE_SUCCESS, "bool"), Column(EPISODE_RETURN, "float64"))

# Which ``*_applies`` flag guards each optional grade answer.
GUARDS = {
    GRADE_SUCCESS: GRADE_SUCCESS_APPLIES,
    GRADE_IMAGINATION: GRADE_IMAGINATION_APPLIES, GRADE_IMAGINATION_ERROR: GRADE_IMAGINATION_APPLIES,
    GRADE_PHYSICS: GRADE_PHYSICS_APPLIES, GRADE_PHYSICS_GAP: GRADE_PHYSICS_APPLIES,
    GRADE_PHYSICS_WORST: GRADE_PHYSICS_APPLIES, GRADE_OBEYS_PHYSICS: GRADE_PHYSICS_APPLIES,
}


def columns_of(imagined: bool, graded: bool, candidates: bool = False, frames: bool = False,
               imagined_frames: bool = False, engine: bool = False, candidate_futures: bool = False,
               lookahead: bool = False) -> tuple[Column, ...]:
    """Every column of a batch of rows, in stored order: the core, then what planning, the
    sim's candidates and grading add, then the episode's outcome (filled in when it ends),
    then what the camera adds, then a learned sim's engine, then the candidates' futures,
    then their look-ahead rewards."""
    return (CORE_COLUMNS + ((IMAGINED_COLUMN,) if imagined else ()) + (CANDIDATE_COLUMNS if candidates else ())
            + (GRADE_COLUMNS if graded else ()) + OUTCOME_COLUMNS + TRANSITION_COLUMNS
            + (FRAME_COLUMNS if frames else ()) + ((IMAGINED_FRAMES_COLUMN,) if imagined_frames else ())
            + (ENGINE_COLUMNS if engine else ()) + ((CANDIDATE_IMAGINED_COLUMN,) if candidate_futures else ())
            + ((CANDIDATE_LOOKAHEAD_COLUMN,) if lookahead else ()))


COLUMNS = {c.name: c for c in columns_of(imagined=True, graded=True, candidates=True, frames=True,
                                         imagined_frames=True, engine=True, candidate_futures=True, lookahead=True)}


def to_pixels(frames: np.ndarray) -> np.ndarray:
    """Frames in the model's [-1, 1] (its generated ones) as uint8 pixels, the observed frames' units."""
    return np.clip(np.rint((np.asarray(frames, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def next_proprio(proprio: np.ndarray, realized: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """The proprio history after a chunk, as the model reads it: the last ``history`` steps
    of the history before it (rows, history, P) followed by the ``steps`` it ran of
    ``realized`` (rows, chunk, P). The state the critic bootstraps from."""
    proprio, realized = np.asarray(proprio), np.asarray(realized)
    history = proprio.shape[1]
    joined = np.concatenate([proprio, realized], axis=1)
    index = np.asarray(steps, dtype=np.int64)[:, None] + np.arange(history)[None, :]
    return np.take_along_axis(joined, index[:, :, None], axis=1)


_ARROW_TYPES = {"int64": pa.int64(), "float32": pa.float32(), "float64": pa.float64(), "bool": pa.bool_(),
                "uint8": pa.uint8(), "object": pa.string()}


def arrow_schema(rows: Mapping[str, np.ndarray]) -> pa.Schema:
    """The Parquet schema of ``rows``, in their column order: an array column of per-row shape
    (a, b) is a fixed-size list of a fixed-size lists of b, so the type itself holds the shape
    and a plain Parquet reader (pandas, pyarrow, ``ray.data``) reads the nesting back."""
    fields = []
    for name, values in rows.items():
        column = COLUMNS[name]
        kind = _ARROW_TYPES[column.dtype]
        for size in reversed(np.shape(values)[1:]):
            kind = pa.list_(kind, int(size))
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


# ---------------------------------------------------------------------- episode ids

EPISODES_PER_WORKER = 100_000  # per worker per cycle
WORKERS_PER_CYCLE = 1_000


def episode_id(cycle: int, worker: int, index: int) -> int:
    """Unique across a run: cycles and workers never collide."""
    if not (0 <= worker < WORKERS_PER_CYCLE and 0 <= index < EPISODES_PER_WORKER):
        raise ValueError(f"episode id out of range: worker {worker} (< {WORKERS_PER_CYCLE}), "
                         f"index {index} (< {EPISODES_PER_WORKER})")
    return (cycle * WORKERS_PER_CYCLE + worker) * EPISODES_PER_WORKER + index


def episode_index(episode: int | np.ndarray) -> int | np.ndarray:
    """The episode's index within its worker's share of its cycle (the ``index`` of ``episode_id``)."""
    return episode % EPISODES_PER_WORKER


# ---------------------------------------------------------------------- a batch of rows


class ChunkRows(Mapping[str, np.ndarray]):
    """A batch of chunk rows: named columns of equal length, checked against the schema.

    Read a column as ``rows[REWARD]``; ``rows.imagined`` / ``rows.graded`` say whether the
    optional groups are there. Built by ``ChunkRows.of`` (validates), sliced by ``take``,
    joined by ``concat``; ``arrow_schema`` is its Parquet schema. ``len(rows)`` counts
    columns, as for any mapping: ``rows.n`` counts rows.
    """

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        self._columns = dict(columns)

    @classmethod
    def of(cls, columns: Mapping[str, Any]) -> "ChunkRows":
        """Validated rows: exactly one of the schema's column sets, each column of its dtype
        and of one length; the error names the column at fault."""
        names = list(columns)
        expected = [c.name for c in columns_of(IMAGINED in columns, WEIGHT in columns, CANDIDATE_ACTIONS in columns,
                                               FRAME in columns, IMAGINED_FRAMES in columns, ENGINE_START in columns,
                                               CANDIDATE_IMAGINED in columns, CANDIDATE_LOOKAHEAD_REWARD in columns)]
        if set(names) != set(expected):
            missing, extra = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
            raise ValueError(f"chunk rows: missing columns {missing}, unknown columns {extra}")
        out, n = {}, None
        for name in expected:
            column, values = COLUMNS[name], np.asarray(columns[name])
            if column.dtype == "object":
                values = values.astype(object)
            elif values.dtype != np.dtype(column.dtype):
                if not np.can_cast(values.dtype, column.dtype, casting="same_kind") or values.dtype.kind == "O":
                    raise ValueError(f"chunk rows: column {name!r} is {values.dtype}, expected {column.dtype}")
                values = values.astype(column.dtype)
            if values.ndim != 1 + len(column.shape):
                want = f"(rows, {', '.join(map(str, column.shape))})" if column.shape else "(rows,)"
                raise ValueError(f"chunk rows: column {name!r} has shape {values.shape}, expected {want}")
            n = len(values) if n is None else n
            if len(values) != n:
                raise ValueError(f"chunk rows: column {name!r} has {len(values)} rows, expected {n}")
            out[name] = values
        return cls(out)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._columns[name]

    def __iter__(self):
        return iter(self._columns)

    def __len__(self) -> int:
        """Number of columns (``Mapping``); ``rows.n`` is the number of rows."""
        return len(self._columns)

    @property
    def n(self) -> int:
        return len(self._columns[EPISODE]) if self._columns else 0

    @property
    def imagined(self) -> bool:
        return IMAGINED in self._columns

    @property
    def graded(self) -> bool:
        return WEIGHT in self._columns

    @property
    def candidates(self) -> bool:
        return CANDIDATE_ACTIONS in self._columns

    @property
    def frames(self) -> bool:
        return FRAME in self._columns

    @property
    def engine(self) -> bool:
        return ENGINE_START in self._columns

    def take(self, index: np.ndarray | slice) -> "ChunkRows":
        """The rows at ``index`` (an index array, a boolean mask or a slice)."""
        return ChunkRows({k: v[index] for k, v in self._columns.items()})

    @staticmethod
    def concat(parts: Sequence["ChunkRows"]) -> "ChunkRows":
        if not parts:
            raise ValueError("no chunk rows to concatenate")
        later = {k for part in parts for k in LATER_COLUMNS if k in part and not all(k in p for p in parts)}
        keys = [k for k in parts[0] if k not in later]
        for part in parts[1:]:
            if [k for k in part if k not in later] != keys:
                raise ValueError(f"chunk rows disagree on columns: {keys} vs {list(part)}")
        return ChunkRows({k: np.concatenate([p[k] for p in parts]) for k in keys})


def guarded(rows: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """A grade column's values where its answer applies (all of them for unguarded ones)."""
    guard = GUARDS.get(name)
    values = np.asarray(rows[name])
    return values if guard is None else values[np.asarray(rows[guard], dtype=bool)]


def grade_columns(grade: Any) -> dict[str, Any]:
    """A ``world_model.grader.Grade`` as flat, NaN-free row values (see the module docstring)."""
    return {
        WEIGHT: grade.weight,
        GRADE_REWARD: grade.reward,
        GRADE_PROGRESS: grade.progress,
        GRADE_SUCCESS_APPLIES: grade.success is not None,
        GRADE_SUCCESS: bool(grade.success),
        GRADE_IMAGINATION_APPLIES: grade.imagination is not None,
        GRADE_IMAGINATION: grade.imagination or 0.0,
        GRADE_IMAGINATION_ERROR: grade.imagination_error or 0.0,
        GRADE_PHYSICS_APPLIES: grade.physics is not None,
        GRADE_PHYSICS: grade.physics or 0.0,
        GRADE_PHYSICS_GAP: grade.physics_gap or 0.0,
        GRADE_PHYSICS_WORST: grade.physics_worst or 0.0,
        GRADE_OBEYS_PHYSICS: bool(grade.obeys_physics),
    }


def grade_summary(rows: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Means of the grade columns, each over the chunks where its answer applies, keyed
    without the ``grade_`` prefix (``weight`` as it is)."""
    summary = {WEIGHT: float(np.mean(rows[WEIGHT]))}
    for column in GRADE_COLUMNS[1:]:
        if column.name in GUARDS.values():
            continue
        selected = guarded(rows, column.name)
        if len(selected):
            summary[column.name.removeprefix("grade_")] = float(np.mean(selected))
    return summary
