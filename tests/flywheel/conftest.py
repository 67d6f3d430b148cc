"""Fixtures of the flywheel tests."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from flywheel.rows import EPISODE, SIM, ChunkRows, columns_of

# Small stand-ins for the model's sizes, which name the shapes of the row schema's array columns.
FAKE_SIZES = {"history": 3, "chunk": 8, "proprio_pad": 6, "action_pad": 2}


def fake_rows(episodes=3, chunks_per_episode=4, seed=0, first_episode=0, **columns) -> ChunkRows:
    """Random chunk rows of the full schema (planned and graded), ``columns`` replaced: for code
    that must keep or show rows whatever they hold (the store, the report's figures)."""
    rng = np.random.default_rng(seed)
    n = episodes * chunks_per_episode
    rows = {}
    for column in columns_of(imagined=True, graded=True):
        shape = (n, *(FAKE_SIZES[s] for s in column.shape))
        if column.dtype == "object":
            rows[column.name] = np.array([f"{column.name} {i}" for i in range(n)], dtype=object)
        elif column.dtype == "bool":
            rows[column.name] = rng.random(shape) < 0.5
        else:
            rows[column.name] = rng.normal(size=shape).astype(column.dtype)
    rows[EPISODE] = np.repeat(np.arange(first_episode, first_episode + episodes), chunks_per_episode)
    rows[SIM] = np.array(["mujoco/reacher-twin"] * n, dtype=object)
    return ChunkRows.of({**rows, **columns})


@pytest.fixture(scope="module")
def agent():
    """The tiny model, seeded, in eval mode: for a module's rollouts (a test that trains makes its own)."""
    import torch

    from policies.agent import Agent

    torch.manual_seed(0)
    return Agent("tiny").eval()


@pytest.fixture
def make_rows():
    return fake_rows


class ActorsSpied(Exception):
    """Raised where the run would start its rollout actors (``actors_spied``)."""


@pytest.fixture
def actors_spied(monkeypatch):
    """A run stopped, with no Ray, where it starts its rollout actors: it raises ``.stopped``, and
    ``.spec``, ``.options`` hold what the actors were given."""
    import flywheel.controller as controller

    spied = SimpleNamespace(stopped=ActorsSpied, spec=None, options=None)

    def rollout_workers(n, spec, options, placement):
        spied.spec, spied.options = spec, options
        raise ActorsSpied

    monkeypatch.setattr(controller, "start_ray", lambda config, *_: None)
    monkeypatch.setattr("flywheel.cycle.RolloutWorkers", rollout_workers)
    return spied


@pytest.fixture(scope="module")
def s3_server():
    """A local S3-compatible server (moto) on 127.0.0.1, with one bucket, ``flywheel``; yields
    ``uri(path)``: an ``s3://`` URI under it that pyarrow's own S3 filesystem opens.

    Credentials come from the environment, as on a real cluster, and every process needs them
    (the server reads an unsigned upload's chunked body as its content): so an embedded Ray
    started before them is shut down, and the next one starts with them."""
    pytest.importorskip("moto", reason="the dev extra's moto[server] runs the local S3 server")
    import pyarrow.fs as pafs
    import ray
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "flywheel-test")
        env.setenv("AWS_SECRET_ACCESS_KEY", "flywheel-test")
        if ray.is_initialized():
            ray.shutdown()
        fs, _ = pafs.FileSystem.from_uri(f"s3://flywheel?{query}&allow_bucket_creation=true")
        fs.create_dir("flywheel")
        try:
            yield lambda path: f"s3://flywheel/{path.strip('/')}?{query}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def tiny_two_cycle_run(tmp_path_factory):
    """The run directory of the suite's tiny seeded run, two cycles of it: embedded Ray, 2 rollout
    workers, ``choose=sim`` with planning (the defaults), a short reacher. Run once and only read:
    the golden test fingerprints it, and the resume tests compare their resumed runs with it."""
    from configs.run_schema import RayConfig, RunConfig
    from configs.schema import SimConfig
    from flywheel.controller import run

    sim = SimConfig(name="mujoco/reacher-twin", max_episode_steps=16)
    config = RunConfig(run_dir=str(tmp_path_factory.mktemp("tiny") / "straight"), cycles=2, pretrained="scratch",
                       num_rollout_workers=2, envs_per_worker=2, episodes_per_cycle=4, n_candidates=2, sim=sim,
                       reference=sim, planning=True, choose="sim", ray=RayConfig(num_cpus=2))
    config.learner.steps, config.learner.batch_size, config.eval.episodes = 3, 8, 2
    return run(config, console=lambda *a: None)
