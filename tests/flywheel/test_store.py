import numpy as np
import pyarrow.parquet as pq
import pytest

from flywheel.store import RolloutStore


def chunks(episodes=3, chunks_per_episode=4, seed=0, first_episode=0):
    rng = np.random.default_rng(seed)
    n = episodes * chunks_per_episode
    return {
        "episode": np.repeat(np.arange(first_episode, first_episode + episodes), chunks_per_episode),
        "weight_version": np.full(n, 7),
        "sim": np.array(["mujoco/reacher-twin"] * n, dtype=object),
        "actions": rng.normal(size=(n, 8, 2)).astype(np.float32),
        "realized": rng.normal(size=(n, 9, 8)),
        "reward": rng.normal(size=n),
    }


def test_a_committed_cycle_reads_back_exactly(tmp_path):
    store = RolloutStore(tmp_path)
    a, b = chunks(seed=1), chunks(seed=2, first_episode=3)
    shards = [store.write_shard(5, w, c)[0] for w, c in enumerate((a, b))]
    manifest = store.commit_cycle(5, shards)
    assert (manifest.rows, manifest.episodes) == (24, 6)
    got, report = store.read([5])
    assert report.shards_read == 2 and not report.corrupt_shards
    for key in a:
        expected = np.concatenate([a[key], b[key]])
        assert got[key].dtype == expected.dtype or key == "sim"
        np.testing.assert_array_equal(got[key], expected)


def test_shards_of_an_uncommitted_cycle_are_invisible(tmp_path):
    store = RolloutStore(tmp_path)
    store.write_shard(1, 0, chunks())  # crashed before commit_cycle
    got, report = store.read([1])
    assert got == {} and report.missing_cycles == [1]
    assert store.committed_cycles() == []


def test_a_corrupt_shard_is_skipped_and_counted(tmp_path):
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


def test_episodes_with_nan_are_quarantined_whole(tmp_path):
    store = RolloutStore(tmp_path)
    data = chunks(episodes=3)
    data["realized"][5, 2, 1] = np.nan  # row 5 belongs to episode 1
    shard, bad = store.write_shard(2, 0, data)
    manifest = store.commit_cycle(2, [shard], [bad])
    assert manifest.quarantined_episodes == 1 and manifest.episodes == 2
    got, _ = store.read([2])
    assert 1 not in set(got["episode"]) and np.isfinite(got["realized"]).all()


def test_replay_window_keeps_the_last_k_committed_cycles(tmp_path):
    store = RolloutStore(tmp_path)
    for cycle in range(5):
        store.commit_cycle(cycle, [store.write_shard(cycle, 0, chunks(first_episode=10 * cycle))[0]])
    got, report = store.replay_window(last_cycle=3, k=2)
    assert sorted(set(got["episode"] // 10)) == [2, 3]
    with pytest.raises(ValueError, match="replay window"):
        store.replay_window(3, 0)


def test_shards_are_plain_parquet(tmp_path):
    store = RolloutStore(tmp_path)
    store.commit_cycle(0, [store.write_shard(0, 0, chunks())[0]])
    table = pq.read_table(store.shard_paths([0])[0])
    assert table.num_rows == 12 and "actions" in table.column_names


def test_bad_columns_are_named(tmp_path):
    store = RolloutStore(tmp_path)
    with pytest.raises(ValueError, match="'episode' column"):
        store.write_shard(0, 0, {"reward": np.zeros(3)})
    data = chunks()
    data["reward"] = data["reward"][:-1]
    with pytest.raises(ValueError, match="column 'reward' has 11 rows, expected 12"):
        store.write_shard(0, 0, data)
