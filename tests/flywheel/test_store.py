import numpy as np
import pyarrow.parquet as pq
import pytest

import sims
from configs.learning import ObjectiveConfig
from flywheel.learners import global_batches
from flywheel.objective import unread_columns
from flywheel.rollout import RolloutSpec, collect
from flywheel.rows import TASK
from flywheel.store import CorruptManifest, RolloutStore, ShardInfo, shuffled_passes
from sims.files import sha256_file


@pytest.fixture
def chunks(make_rows):
    return lambda **kw: {k: v.copy() for k, v in make_rows(**kw).items()}  # writable: tests break them


def test_a_committed_cycle_reads_back_exactly(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    a, b = chunks(seed=1), chunks(seed=2, first_episode=3)
    shards = [store.write_shard(5, w, c)[0] for w, c in enumerate((a, b))]
    manifest = store.commit_cycle(5, shards)
    assert (manifest.rows, manifest.episodes) == (24, 6)
    got, report = store.read([5])
    assert report.shards_read == 2 and not report.corrupt_shards
    assert list(got) == list(a)
    for key in a:
        expected = np.concatenate([a[key], b[key]])
        assert got[key].dtype == expected.dtype and got[key].shape == expected.shape
        if expected.dtype == object:
            assert list(got[key]) == list(expected)
        else:
            assert got[key].tobytes() == expected.tobytes(), key


def test_shards_of_an_uncommitted_cycle_are_invisible(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    store.write_shard(1, 0, chunks())  # crashed before commit_cycle
    got, report = store.read([1])
    assert got == {} and got.n == 0 and report.missing_cycles == [1]
    assert store.committed_cycles() == []


def test_a_corrupt_shard_is_skipped_and_counted(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    shards = [store.write_shard(0, w, chunks(seed=w, first_episode=3 * w))[0] for w in range(2)]
    store.commit_cycle(0, shards)
    path = tmp_path / shards[1].path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    got, report = store.read([0])
    assert report.corrupt_shards == [shards[1].path]
    assert report.rows == 12 and set(got["episode"]) == {0, 1, 2}


@pytest.mark.parametrize("damage", [lambda text: text[: len(text) // 2], lambda text: "{}"])
def test_an_unreadable_manifest_is_an_error_naming_the_file(tmp_path, chunks, damage):
    store = RolloutStore(tmp_path)
    store.commit_cycle(2, [store.write_shard(2, 0, chunks())[0]])
    path = store.manifest_path(2)
    path.write_text(damage(path.read_text()))  # truncated by a full disk; or valid JSON with no manifest in it
    for read in (lambda: store.manifest(2), lambda: store.read([2])):
        with pytest.raises(CorruptManifest, match=f"{path}: not a readable manifest.*Move it aside"):
            read()


def test_episodes_with_nan_are_quarantined_whole(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    data = chunks(episodes=3)
    data["realized"][5, 2, 1] = np.nan  # row 5 belongs to episode 1
    shard, bad = store.write_shard(2, 0, data)
    manifest = store.commit_cycle(2, [shard], [bad])
    assert manifest.quarantined_episodes == 1 and manifest.episodes == 2
    got, _ = store.read([2])
    assert 1 not in set(got["episode"]) and np.isfinite(got["realized"]).all()


def test_the_replay_window_is_every_cycle_so_far_or_the_last_k(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    for cycle in range(5):
        store.commit_cycle(cycle, [store.write_shard(cycle, 0, chunks(first_episode=10 * cycle))[0]])
    assert store.window(last_cycle=3, k=None) == [0, 1, 2, 3]
    assert store.window(last_cycle=3, k=2) == [2, 3]
    with pytest.raises(ValueError, match="replay window"):
        store.window(3, 0)


def _store_of(tmp_path, chunks, cycles=3, workers=2):
    """``cycles`` committed cycles of ``workers`` 12-row shards, every episode id distinct."""
    store = RolloutStore(tmp_path)
    for c in range(cycles):
        shards = [store.write_shard(c, w, chunks(seed=10 * c + w, first_episode=100 * c + 10 * w))[0]
                  for w in range(workers)]
        store.commit_cycle(c, shards)
    return store


def _same_rows(got, expected):
    assert list(got) == list(expected)
    for key in expected:
        if expected[key].dtype == object:
            assert list(got[key]) == list(expected[key]), key
        else:
            assert got[key].dtype == expected[key].dtype and got[key].tobytes() == expected[key].tobytes(), key


def test_a_sample_is_exactly_the_drawn_rows_of_the_whole_replay(tmp_path, chunks):
    store = _store_of(tmp_path, chunks)
    whole, _ = store.read([0, 1, 2])
    for n in (5, 72, 100):  # fewer draws than rows, one pass, more than one pass
        sample, report = store.sample([0, 1, 2], n, seed=(4, 2))
        ids = global_batches(whole.n, n, 1, seed=4, version=2).reshape(-1)  # the learners' draw over read()
        _same_rows(sample.drawn(), whole.take(ids))
        assert sample.population == report.rows == whole.n == 72 and len(sample.order) == n
        assert sample.rows.n == len(np.unique(ids))  # each drawn row held once
    again, _ = store.sample([0, 1, 2], 100, seed=(4, 2))
    _same_rows(again.drawn(), sample.drawn())
    other, _ = store.sample([0, 1, 2], 100, seed=(4, 3))
    assert not np.array_equal(other.drawn()["episode"], sample.drawn()["episode"])


def test_a_sample_reads_only_the_shards_holding_drawn_rows(tmp_path, chunks, monkeypatch):
    store = _store_of(tmp_path, chunks, cycles=4)
    read = []
    verified = RolloutStore._verified
    monkeypatch.setattr(RolloutStore, "_verified", lambda self, shard, *args: read.append(shard.path)
                        or verified(self, shard, *args))
    sample, report = store.sample([0, 1, 2, 3], 3, seed=0)
    holding = sorted({f"cycle-{e // 100:06d}/worker-{e % 100 // 10:02d}.parquet" for e in sample.rows["episode"]})
    assert read == holding and report.shards_read == len(holding) <= 3 < 8


def test_a_corrupt_shard_is_left_out_of_a_sample_and_counted(tmp_path, chunks):
    store = _store_of(tmp_path, chunks, cycles=2)
    bad = store.manifest(1).shards[0]
    path = tmp_path / bad.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    sample, report = store.sample([0, 1], 60, seed=1)
    assert report.corrupt_shards == [bad.path] and report.rows == sample.population == 36
    assert not set(sample.rows["episode"]) & set(range(100, 110))  # nothing of the corrupt shard
    survivors, _ = store.read([0, 1])  # read skips it too: the sample is the draw over what read returns
    _same_rows(sample.drawn(), survivors.take(shuffled_passes(36, 60, np.random.default_rng(1))))


def test_shards_are_plain_parquet(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    store.commit_cycle(0, [store.write_shard(0, 0, chunks())[0]])
    table = pq.read_table(store.shard_paths([0])[0])
    assert table.num_rows == 12 and "actions" in table.column_names


def test_bad_columns_are_named(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    with pytest.raises(ValueError, match=r"missing columns \[.*'episode'"):
        store.write_shard(0, 0, {"reward": np.zeros(3)})
    data = chunks()
    data["reward"] = data["reward"][:-1]
    with pytest.raises(ValueError, match="column 'reward' has 11 rows, expected 12"):
        store.write_shard(0, 0, data)
    data = chunks()
    data["steps"] = data["steps"].astype(np.float64)
    with pytest.raises(ValueError, match="column 'steps' is float64, expected int64"):
        store.write_shard(0, 0, data)
    assert store.committed_cycles() == [] and not list(tmp_path.glob("cycle-*/*.parquet"))


def test_a_shard_that_breaks_the_row_schema_is_refused_on_read(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    shard, _ = store.write_shard(0, 0, chunks())
    path = tmp_path / shard.path
    table = pq.read_table(path)  # a shard from another schema, checksummed as it is
    pq.write_table(table.drop_columns([TASK]).replace_schema_metadata(table.schema.metadata), path)
    store.commit_cycle(0, [ShardInfo(shard.path, shard.rows, shard.episodes, sha256_file(path))])
    with pytest.raises(ValueError, match=r"missing columns \['task'\]"):
        store.read([0])


def test_a_cycle_directory_reads_as_a_dataset_with_pandas_and_arrow(tmp_path, chunks):
    """The manifest does not trip a reader of the directory (issue 19): its name starts with _."""
    import pandas as pd
    import pyarrow.dataset as ds

    store = RolloutStore(tmp_path)
    shards = [store.write_shard(1, w, chunks(episodes=2))[0] for w in range(2)]
    store.commit_cycle(1, shards)
    directory = tmp_path / "cycle-000001"
    assert store.manifest_path(1).parent == directory
    frame = pd.read_parquet(directory)
    assert len(frame) == sum(s.rows for s in shards)
    assert ds.dataset(directory, format="parquet").to_table().num_rows == sum(s.rows for s in shards)
    # Arrays keep their shapes in the Parquet type: no metadata needed to unflatten them.
    rows, _ = store.read([1])
    for name in ("realized", "proprio", "rewards"):
        cells = [np.stack(cell) if cell.dtype == object else cell for cell in frame[name]]
        assert np.array_equal(np.stack(cells), rows[name]), name
    table = pq.read_table(directory / "worker-00.parquet")
    assert table.schema.metadata is None or b"flywheel.shapes" not in table.schema.metadata
    assert table.column("realized").type.list_size == rows["realized"].shape[1]


def test_a_shard_written_with_flat_lists_and_shapes_in_metadata_still_reads(tmp_path, chunks):
    """Shards from before nested lists: each array column flat, its shape under b"flywheel.shapes"."""
    import json

    import pyarrow as pa

    store = RolloutStore(tmp_path)
    shard = store.write_shard(0, 0, chunks())[0]
    path = tmp_path / shard.path
    nested = pq.read_table(path)
    columns, shapes = {}, {}
    for name in nested.column_names:
        column, shape = nested.column(name).combine_chunks(), []
        while pa.types.is_fixed_size_list(column.type):
            shape.append(column.type.list_size)
            column = column.flatten()
        if shape:
            shapes[name] = shape
            column = pa.FixedSizeListArray.from_arrays(column, int(np.prod(shape)))
        columns[name] = column
    pq.write_table(pa.table(columns).replace_schema_metadata({b"flywheel.shapes": json.dumps(shapes).encode()}), path)
    store.commit_cycle(0, [ShardInfo(shard.path, shard.rows, shard.episodes, sha256_file(path))])
    got, report = store.read([0])
    expected = chunks()
    assert report.rows == 12 and not report.corrupt_shards
    for name in ("realized", "proprio", "actions", "rewards", "reward"):
        assert got[name].shape == expected[name].shape and np.array_equal(got[name], expected[name]), name


def test_a_store_written_with_the_old_manifest_name_still_reads(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    shard = store.write_shard(0, 0, chunks())[0]
    store.commit_cycle(0, [shard])
    old = store.manifest_path(0).rename(tmp_path / "cycle-000000" / "manifest.json")  # as stores were written before
    assert store.manifest_path(0) == old and store.committed_cycles() == [0]
    got, report = store.read([0])
    assert report.rows == shard.rows and not report.corrupt_shards


def test_a_multitask_shard_groups_its_rows_by_sim_and_the_manifest_counts_them(tmp_path, chunks):
    from flywheel.rows import SIM

    rows = chunks(episodes=4)
    rows[SIM] = np.repeat(np.array(["b/two", "a/one", "b/two", "a/one"], dtype=object), 4)
    store = RolloutStore(tmp_path)
    shard, _ = store.write_shard(0, 0, rows, by_sim=True)
    store.commit_cycle(0, [shard])
    assert shard.sims == {"a/one": 8, "b/two": 8}
    back, _ = store.read([0])
    assert list(back[SIM]) == ["a/one"] * 8 + ["b/two"] * 8
    assert store.manifest(0).shards[0].sims == {"a/one": 8, "b/two": 8}
    # a one-task shard's manifest entry stays as it was: no sims key
    plain, _ = store.write_shard(1, 0, chunks())
    assert "sims" not in plain.to_json()


def test_a_sample_draws_each_task_by_its_weight(tmp_path, chunks):
    from flywheel.rows import SIM

    store = RolloutStore(tmp_path)
    for c in range(2):
        shards = []
        for w in range(2):  # task a/one has 3 times task b/two's rows
            rows = chunks(episodes=4, seed=10 * c + w, first_episode=100 * c + 10 * w)
            rows[SIM] = np.repeat(np.array(["a/one", "a/one", "a/one", "b/two"], dtype=object), 4)
            shards.append(store.write_shard(c, w, rows, by_sim=True)[0])
        store.commit_cycle(c, shards)
    whole, _ = store.read([0, 1])
    for weights, n, expected in (({"a/one": 1.0, "b/two": 1.0}, 40, 20), ({"a/one": 1.0, "b/two": 3.0}, 40, 30),
                                 ({"a/one": 1.0, "b/two": 0.0}, 40, 0)):
        sample, report = store.sample([0, 1], n, seed=(0, 1), weights=weights)
        drawn = sample.drawn()
        assert len(drawn[SIM]) == n and list(drawn[SIM]).count("b/two") == expected, weights
        assert report.rows == whole.n
    # Within a task, shuffled passes: b/two's 16 rows drawn 30 times, each once or twice.
    sample, _ = store.sample([0, 1], 40, seed=(0, 1), weights={"a/one": 1.0, "b/two": 3.0})
    drawn = sample.drawn()
    b = drawn[SIM] == "b/two"
    _, times = np.unique(drawn["reward"][b], return_counts=True)  # random per row: an id
    assert len(times) == 16 and set(times) == {1, 2}
    again, _ = store.sample([0, 1], 40, seed=(0, 1), weights={"a/one": 1.0, "b/two": 3.0})
    _same_rows(again.drawn(), drawn)
    # The tasks' draws are shuffled together, so every batch mixes them.
    assert np.count_nonzero(b[1:] != b[:-1]) > 4


def test_a_sample_can_leave_unread_the_columns_the_loss_never_reads(tmp_path, agent):
    envs = [sims.make("mujoco/reacher-twin", max_episode_steps=16) for _ in range(2)]
    store = RolloutStore(tmp_path)
    for cycle in range(2):  # choose=sim rows, as the default run writes them
        rows = collect(agent, envs, RolloutSpec(episodes=2, seed=cycle, n_candidates=3, choose="sim"))
        store.commit_cycle(cycle, [store.write_shard(cycle, 0, rows)[0]])
    skip = unread_columns(ObjectiveConfig())
    whole, _ = store.sample([0, 1], 30, seed=(1, 2))
    lean, report = store.sample([0, 1], 30, seed=(1, 2), skip=skip)
    assert whole.rows.candidates and not lean.rows.candidates and report.shards_read == 2
    assert np.array_equal(lean.order, whole.order)  # the same draws, fewer columns
    _same_rows(lean.rows, {k: v for k, v in whole.rows.items() if k not in skip})
