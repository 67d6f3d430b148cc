"""The chunk row (``flywheel.rows``): the schema every producer and consumer shares."""

import numpy as np
import pytest
import torch

import sims
import world_model as wm
from flywheel.rollout import RolloutSpec, collect
from flywheel.rows import (CANDIDATE_ACTIONS, CANDIDATE_IMAGINED, CANDIDATE_LOOKAHEAD_REWARD, EPISODES_PER_WORKER,
                           GRADE_IMAGINATION, GRADE_IMAGINATION_APPLIES, GRADE_PHYSICS, GRADE_PHYSICS_APPLIES,
                           GRADE_PROGRESS, LATER_COLUMNS, STEPS, WEIGHT, WORKERS_PER_CYCLE, ChunkRows, columns_of,
                           episode_id, episode_index, grade_summary, guarded)
from flywheel.store import RolloutStore
from policies.agent import Agent


@pytest.fixture(scope="module")
def rows():
    """Planned, graded rows of the real rollout loop."""
    torch.manual_seed(0)
    envs = [sims.make("mujoco/reacher-twin", max_episode_steps=12) for _ in range(2)]
    return collect(Agent("tiny").eval(), envs, RolloutSpec(episodes=3, cycle=2, worker=1, seed=1, n_candidates=2),
                   wm.ChunkGrader(probes=2, horizon=10))


def test_collected_rows_are_valid_and_in_the_schemas_order(rows):
    assert isinstance(rows, ChunkRows) and rows.imagined and rows.graded
    assert list(rows) == [c.name for c in columns_of(imagined=True, graded=True)]
    for column in columns_of(imagined=True, graded=True):
        assert rows[column.name].dtype == np.dtype(column.dtype), column.name
        assert rows[column.name].ndim == 1 + len(column.shape), column.name
    assert list(ChunkRows.of(rows)) == list(rows)


def test_rows_round_trip_through_the_store_bit_for_bit(rows, tmp_path):
    store = RolloutStore(tmp_path)
    shard, quarantined = store.write_shard(2, 1, rows)
    assert quarantined.n == 0
    store.commit_cycle(2, [shard], [quarantined])
    back, report = store.read([2])
    assert report.rows == rows.n and list(back) == list(rows)
    for name, values in rows.items():
        assert back[name].dtype == values.dtype and back[name].shape == values.shape, name
        if values.dtype == object:
            assert list(back[name]) == list(values), name
        else:
            assert back[name].tobytes() == values.tobytes(), name


def test_missing_unknown_and_mistyped_columns_are_named(rows):
    with pytest.raises(ValueError, match=r"missing columns \['steps'\]"):
        ChunkRows.of({k: v for k, v in rows.items() if k != STEPS})
    with pytest.raises(ValueError, match=r"unknown columns \['progress'\]"):
        ChunkRows.of({**rows, "progress": rows[GRADE_PROGRESS]})
    with pytest.raises(ValueError, match="column 'steps' is float64, expected int64"):
        ChunkRows.of({**rows, STEPS: rows[STEPS].astype(np.float64)})
    with pytest.raises(ValueError, match="column 'weight' has shape"):
        ChunkRows.of({**rows, WEIGHT: rows[WEIGHT][:, None]})
    with pytest.raises(ValueError, match="column 'weight' has 2 rows"):
        ChunkRows.of({**rows, WEIGHT: rows[WEIGHT][:2]})


def test_take_and_concat_keep_the_columns(rows):
    first, rest = rows.take(slice(0, 2)), rows.take(np.arange(2, rows.n))
    joined = ChunkRows.concat([first, rest])
    assert first.n == 2 and joined.n == rows.n and list(joined) == list(rows)
    assert all(np.array_equal(joined[k], rows[k]) for k in rows)


def test_grade_summary_averages_a_guarded_answer_only_where_it_applies(rows):
    applies = np.arange(rows.n) % 2 == 0
    values = np.linspace(0.1, 0.9, rows.n)
    rows = ChunkRows.of({**rows, GRADE_PHYSICS_APPLIES: applies, GRADE_PHYSICS: np.where(applies, values, 0.0),
                         GRADE_IMAGINATION_APPLIES: np.zeros(rows.n, bool)})
    summary = grade_summary(rows)
    assert summary["physics"] == pytest.approx(values[applies].mean())
    assert np.array_equal(guarded(rows, GRADE_PHYSICS), values[applies])
    assert "imagination" not in summary and not len(guarded(rows, GRADE_IMAGINATION))
    assert summary["progress"] == pytest.approx(rows[GRADE_PROGRESS].mean())  # unguarded: every chunk
    assert summary[WEIGHT] == pytest.approx(rows[WEIGHT].mean())


def test_episode_ids_round_trip_and_reject_what_does_not_fit():
    for cycle, worker, index in ((0, 0, 0), (7, 3, 12), (2, WORKERS_PER_CYCLE - 1, EPISODES_PER_WORKER - 1)):
        assert episode_index(episode_id(cycle, worker, index)) == index
    ids = np.array([episode_id(1, w, i) for w, i in ((0, 5), (4, 9))])
    assert list(episode_index(ids)) == [5, 9]
    assert len({episode_id(c, w, 0) for c in range(3) for w in range(3)}) == 9
    for worker, index in ((WORKERS_PER_CYCLE, 0), (-1, 0), (0, EPISODES_PER_WORKER), (0, -1)):
        with pytest.raises(ValueError, match="episode id out of range"):
            episode_id(0, worker, index)


def test_the_arrow_schema_is_what_the_store_writes(rows, tmp_path):
    import pyarrow.parquet as pq

    from flywheel.rows import arrow_schema
    from flywheel.store import RolloutStore

    store = RolloutStore(tmp_path)
    shard, _ = store.write_shard(0, 0, rows)
    written = pq.read_schema(store.root / shard.path).remove_metadata()
    assert written.equals(arrow_schema(rows)), (written, arrow_schema(rows))
    proprio = written.field("proprio").type  # (history, proprio_pad), in the type itself
    assert (proprio.list_size, proprio.value_type.list_size) == rows["proprio"].shape[1:]
    assert proprio.value_type.value_type == "float"
    assert written.field("sim").type == "string" and written.field("success").type == "bool"


def test_frame_columns_round_trip_through_the_store_bit_for_bit(tmp_path):
    """A camera rollout's frames (uint8, their shapes) come back from a shard exactly."""
    from configs.schema import SimConfig
    from flywheel.rollout import env_kwargs
    from flywheel.rows import FRAME, IMAGINED_FRAMES, REALIZED_FRAMES

    torch.manual_seed(0)
    agent, sim = Agent("tiny").eval(), SimConfig(name="mujoco/reacher-twin", max_episode_steps=12)
    envs = [sims.make(sim.name, **env_kwargs(sim, True, agent.cfg.image_size)) for _ in range(2)]
    rows = collect(agent, envs, RolloutSpec(episodes=2, n_candidates=2, camera=True))
    for env in envs:
        env.close()
    assert rows.frames and list(rows)[-3:] == [FRAME, REALIZED_FRAMES, IMAGINED_FRAMES]
    assert list(rows) == [c.name for c in columns_of(imagined=True, graded=False, frames=True, imagined_frames=True)]
    store = RolloutStore(tmp_path)
    shard, _ = store.write_shard(0, 0, rows)
    store.commit_cycle(0, [shard])
    back, _ = store.read([0])
    for name in (FRAME, REALIZED_FRAMES, IMAGINED_FRAMES):
        assert back[name].dtype == np.uint8 and back[name].shape == rows[name].shape, name
        assert back[name].tobytes() == rows[name].tobytes(), name
    with pytest.raises(ValueError, match="'frame' is float32, expected uint8"):
        ChunkRows.of({**rows, FRAME: rows[FRAME].astype(np.float32)})


def test_to_pixels_inverts_the_models_frame_units():
    from flywheel.rows import to_pixels
    from policies.tokenizers import to_unit_frames

    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    assert np.array_equal(to_pixels(to_unit_frames(torch.as_tensor(pixels), 4).numpy()), pixels)
    assert to_pixels(np.array([-3.0, -1.0, 0.0, 1.0, 2.0])).tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize("later, asked", [(CANDIDATE_IMAGINED, {"candidate_futures": True}),
                                          (CANDIDATE_LOOKAHEAD_REWARD, {"lookahead_chunks": 1})])
def test_rows_with_and_without_a_later_candidate_column_read_and_mix(tmp_path, later, asked):
    assert later in LATER_COLUMNS
    torch.manual_seed(0)
    envs = [sims.make("mujoco/reacher-twin", max_episode_steps=12)]
    new = collect(Agent("tiny").eval(), envs, RolloutSpec(episodes=2, seed=1, n_candidates=2, choose="sim", **asked))
    assert list(new)[-1] == later
    # As a store of before the column writes, or a run before it turned the column's knob on.
    old = ChunkRows.of({k: v for k, v in new.items() if k != later})
    store = RolloutStore(tmp_path / "store")
    for cycle, rows in enumerate((old, new)):
        shard, quarantined = store.write_shard(cycle, 0, rows)
        store.commit_cycle(cycle, [shard], [quarantined])
    both, report = store.read([0, 1])  # a replay that holds both kinds
    assert not report.corrupt_shards and both.n == 2 * new.n
    assert CANDIDATE_ACTIONS in both and later not in both
    assert later in store.read([1])[0]
    with pytest.raises(ValueError, match="disagree on columns"):  # only a later column may be missing
        ChunkRows.concat([new, ChunkRows.of({k: v for k, v in new.items() if not k.startswith("candidate_")})])
