import numpy as np
import pyarrow.parquet as pq
import pytest

from flywheel.rows import TASK
from flywheel.store import RolloutStore, ShardInfo
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


def test_episodes_with_nan_are_quarantined_whole(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    data = chunks(episodes=3)
    data["realized"][5, 2, 1] = np.nan  # row 5 belongs to episode 1
    shard, bad = store.write_shard(2, 0, data)
    manifest = store.commit_cycle(2, [shard], [bad])
    assert manifest.quarantined_episodes == 1 and manifest.episodes == 2
    got, _ = store.read([2])
    assert 1 not in set(got["episode"]) and np.isfinite(got["realized"]).all()


def test_replay_window_keeps_the_last_k_committed_cycles(tmp_path, chunks):
    store = RolloutStore(tmp_path)
    for cycle in range(5):
        store.commit_cycle(cycle, [store.write_shard(cycle, 0, chunks(first_episode=10 * cycle))[0]])
    got, report = store.replay_window(last_cycle=3, k=2)
    assert sorted(set(got["episode"] // 10)) == [2, 3]
    with pytest.raises(ValueError, match="replay window"):
        store.replay_window(3, 0)


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
