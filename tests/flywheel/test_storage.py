"""A run whose directory is remote storage named by a URI (``flywheel.storage``), against a
local S3-compatible server (moto, on 127.0.0.1) through pyarrow's own S3 filesystem: the store
written and verified there, bad storage refused before Ray starts, and a run that trains on the
shards its actors wrote to S3 and resumes on a machine without its local copy exactly as a
local run does."""

import json
import shutil
import uuid

import numpy as np
import pyarrow.fs as pafs
import pytest

import flywheel.controller as controller
from configs.errors import ConfigError
from configs.run_schema import RayConfig, RunConfig
from configs.schema import SimConfig
from flywheel import checkpoint, storage
from flywheel.cli import main
from flywheel.logger import read_cycles
from flywheel.store import RolloutStore

pytestmark = pytest.mark.xdist_group("ray-run")


@pytest.fixture
def s3(s3_server):
    """A fresh prefix of the test bucket for each test."""
    return lambda path="": s3_server(f"{uuid.uuid4().hex[:8]}/{path}")


def remote_bytes(uri: str, relative: str) -> bytes | None:
    return storage.files(uri).read(relative)


def test_a_uri_is_told_from_a_path_and_joined_below_its_query():
    assert storage.is_uri("s3://b/runs/a") and storage.is_uri("gs://b/a") and storage.is_uri("file:///tmp/a")
    assert not storage.is_uri("runs/flywheel/a") and not storage.is_uri("/abs/path") and not storage.is_uri(None)
    assert storage.join("s3://b/a?scheme=http", "store", "x") == "s3://b/a/store/x?scheme=http"
    assert storage.join("/runs/a", "store") == "/runs/a/store"


@pytest.mark.parametrize("where", ["file", "memory"])
def test_a_filesystem_without_atomic_puts_gets_a_temp_file_and_a_move(tmp_path, make_rows, where):
    """pyarrow's local filesystem behind file://, and fsspec's in-memory one (a scheme pyarrow
    lacks): a shard is written beside its name and moved over it, and no temp file stays."""
    uri = f"file://{tmp_path}/store" if where == "file" else f"memory://flywheel-{uuid.uuid4().hex[:8]}/store"
    store = RolloutStore(uri)
    rows = make_rows(seed=3)
    store.commit_cycle(0, [store.write_shard(0, 0, rows)[0]])
    got, report = store.read([0])
    assert report.shards_read == 1 and got.n == rows.n and store.committed_cycles() == [0]
    fs, base = storage.filesystem(uri)
    names = [i.path.rsplit("/", 1)[1] for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))
             if i.type == pafs.FileType.File]
    assert sorted(names) == ["_manifest.json", "worker-00.parquet"]


def test_the_store_on_s3_holds_what_a_local_store_holds_and_verifies_it(tmp_path, s3, make_rows):
    local, remote = RolloutStore(tmp_path / "store"), RolloutStore(storage.join(s3("run"), "store"))
    a, b = make_rows(seed=1), make_rows(seed=2, first_episode=3)
    for store in (local, remote):
        store.commit_cycle(0, [store.write_shard(0, w, rows)[0] for w, rows in enumerate((a, b))])
        store.write_shard(1, 0, a)  # a cycle whose manifest was never written
    # The same shards, byte for byte (same sha256), and the same manifest.
    assert remote.manifest(0).to_json() == local.manifest(0).to_json()
    assert remote.committed_cycles() == [0]  # the uncommitted cycle is invisible
    got, report = remote.read([0])
    want, _ = local.read([0])
    assert report.shards_read == 2 and got.n == want.n == 24
    assert all(np.array_equal(got[k], want[k]) for k in want if want[k].dtype != object)
    assert remote.shard_paths([0])[0].startswith("s3://flywheel/") and "?" not in remote.shard_paths([0])[0]
    # A shard changed on S3 is skipped, counted and audited, never trained on.
    shard = remote.manifest(0).shards[0].path
    remote.files.write(shard, remote.files.read(shard)[:-7] + b"garbage")
    got, report = remote.read([0])
    assert report.corrupt_shards == [shard] and got.n == 12
    (audit,) = remote.audit()
    assert audit.corrupt == [shard] and not audit.missing


def tiny_config(run_dir, cycles=1, **changes) -> RunConfig:
    """One cycle of ``tiny_two_cycle_run`` (conftest.py)."""
    sim = SimConfig(name="mujoco/reacher-twin", max_episode_steps=16)
    base = dict(run_dir=str(run_dir), cycles=cycles, pretrained="scratch", num_rollout_workers=2, envs_per_worker=2,
                episodes_per_cycle=4, n_candidates=2, sim=sim, reference=sim, ray=RayConfig(num_cpus=2))
    config = RunConfig(**{**base, **changes})
    config.learner.steps, config.learner.batch_size, config.eval.episodes = 3, 8, 2
    return config


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setattr(controller, "start_ray", lambda config, *_: pytest.fail("Ray started"))


UNREACHABLE = "s3://flywheel/run?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"


@pytest.mark.parametrize("uri,why", [
    ("nosuch://bucket/run", r"unknown storage scheme nosuch://"),
    ("sftp://host/run", r"sftp:// needs a package that is not installed: .*paramiko"),
    ("s3://flywheel/run?colour=blue", r"Unexpected query parameter in S3 URI: 'colour'"),
    (UNREACHABLE, r"cannot write there \(.*\); check the endpoint and that this machine's credentials may write it"),
])
def test_storage_that_cannot_work_fails_before_ray_starts_naming_the_uri(tmp_path, monkeypatch, no_ray, uri, why):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"^run_dir={__import__('re').escape(uri)}: {why}"):
        controller.run(tiny_config(uri), console=lambda *a: None)
    assert not (tmp_path / "runs").exists()  # nothing staged


def test_a_uri_holding_a_run_is_refused_and_an_empty_one_cannot_be_resumed(tmp_path, monkeypatch, no_ray, s3):
    monkeypatch.chdir(tmp_path)
    uri = s3("run")
    with pytest.raises(ConfigError, match=rf"^resume={__import__('re').escape(uri)}: not a run directory"):
        controller.run(tiny_config(None, resume=uri), console=lambda *a: None)
    storage.files(uri).write("config.json", json.dumps(controller.json_config(tiny_config(uri))).encode())
    with pytest.raises(ConfigError, match=r"already holds a run; pass resume="):
        controller.run(tiny_config(uri, seed=7), console=lambda *a: None)
    assert json.loads(remote_bytes(uri, "config.json"))["seed"] == 0  # not rewritten with seed=7


def manifests(store: RolloutStore) -> dict:
    return {c: store.manifest(c).to_json() for c in store.committed_cycles()}


def test_a_run_on_s3_trains_on_its_actors_shards_and_resumes_elsewhere_like_a_local_run(tmp_path, monkeypatch,
                                                                                        s3, capsys,
                                                                                        tiny_two_cycle_run):
    monkeypatch.chdir(tmp_path)
    straight = tiny_two_cycle_run  # tiny_config(cycles=2), run locally
    uri = s3("runs/a")
    staging = controller.run(tiny_config(uri, cycles=1), console=lambda *a: None)
    assert staging == storage.staging_dir(uri, tmp_path / controller.DEFAULT_ROOT)
    assert not (staging / "store").exists()  # the store lives on S3 only
    remote = RolloutStore(storage.join(uri, "store"))
    rows, _ = remote.read([0])
    (record,) = [json.loads(line) for line in remote_bytes(uri, "cycles.jsonl").decode().splitlines()]
    # The learners trained on the shards the actors wrote to S3, read back and verified.
    assert record["replay"]["shards_read"] == 2 and record["replay"]["chunks"] == rows.n > 0
    assert not record["replay"]["corrupt_shards"] and record["env_steps"] == int(rows["steps"].sum())
    assert remote_bytes(uri, "checkpoints/latest") == b"cycle-000000"
    assert json.loads(remote_bytes(uri, "config.json"))["run_dir"] == uri

    # Its local copy is not the run: resumed from there, it would collect its rollouts anew.
    with pytest.raises(ConfigError, match=r"this is the local copy of the run at s3://.*; resume it by its URI"):
        controller.run(tiny_config(None, resume=str(staging), cycles=2), console=lambda *a: None)
    # Another machine: no local copy. resume= by the URI on the command line (quoted: it has a query).
    shutil.rmtree(staging)
    assert main(["run", f'resume="{uri}"', "cycles=2"]) == 0
    assert f"run storage: {uri}" in capsys.readouterr().out
    assert [r["env_steps_total"] for r in read_cycles(staging)] == [r["env_steps_total"] for r in read_cycles(straight)]
    assert manifests(remote) == manifests(RolloutStore(straight / "store"))  # the same rollouts, byte for byte
    assert remote_bytes(uri, "cycles.jsonl") == (staging / "cycles.jsonl").read_bytes()
    assert remote_bytes(uri, "checkpoints/latest") == b"cycle-000001"
    weights = "checkpoints/cycle-000001/model/model.safetensors"
    assert remote_bytes(uri, weights) == (straight / weights).read_bytes()  # the same weights as the straight run
    assert list(storage.files(uri).glob("tb/events.out.tfevents.*"))
    # What a resume downloads: the latest checkpoint only (storage keeps the others), never the store.
    copy = storage.Mirror(storage.files(uri), tmp_path / "copy")
    copy.download(skip=checkpoint.superseded(remote_bytes(uri, "checkpoints/latest")))
    assert sorted(p.name for p in (copy.staging / "checkpoints").iterdir()) == ["cycle-000001", "latest"]
    assert (copy.staging / "cycles.jsonl").is_file() and not (copy.staging / "store").exists()
    assert remote_bytes(uri, "checkpoints/cycle-000000/trainer.json") is not None
    capsys.readouterr()
    assert main(["status", uri, "--json"]) == 0  # read from S3, store audited there
    status = json.loads(capsys.readouterr().out)
    assert status["run_dir"] == uri and [c["cycle"] for c in status["cycles"]] == [0, 1] and status["store"] == []


def test_every_node_must_reach_the_uri_before_any_rollout(tmp_path, monkeypatch, s3):
    """``flywheel.cluster.check_storage`` on a URI: a probe task per node writes there through
    pyarrow, the driver reads it back; a node that cannot is named before any actor starts."""
    from flywheel import cluster
    from sims.local_ray import init_local_ray

    import ray

    if not ray.is_initialized():
        init_local_ray(2)
    nodes = cluster.alive_nodes()
    uri = s3("run")
    cluster.check_storage(uri, nodes)
    assert storage.files(uri).glob(f"{cluster.PROBE_DIR}/*") == []  # cleaned up
    missing = uri.replace("s3://flywheel/", "s3://no-such-bucket/")
    with pytest.raises(ConfigError, match=r"^run_dir=s3://no-such-bucket/.*: node 127\.0\.0\.1 \(\w{8}\) cannot write "
                                          r"s3://no-such-bucket/\S+/\.storage-probe/\w+ \(OSError: .*\); the run "
                                          r"directory must be reachable and writable from every node"):
        cluster.check_storage(missing, nodes)
