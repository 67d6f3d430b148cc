"""What a run asks of its Ray cluster, checked before any rollout (``flywheel.cluster``).

The checks run on plain node descriptions first; the rest on a local two-node Ray cluster
(``ray.cluster_utils.Cluster``, both nodes on this machine and bound to loopback), the way a
driver joins one: through ``ray.address`` or, under ``ray job submit``, RAY_ADDRESS.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from configs.errors import ConfigError
from configs.run_schema import RayConfig, Resources, RunConfig
from configs.schema import SimConfig
from flywheel import cluster
from flywheel.cli import main
from flywheel.controller import Stop, run, start_ray, stop_on_signals, validate
from flywheel.logger import read_cycles

pytestmark = pytest.mark.xdist_group("ray-cluster")

TINY = ["pretrained=scratch", "num_rollout_workers=2", "envs_per_worker=2", "episodes_per_cycle=4",
        "learner.steps=3", "learner.batch_size=8", "eval.episodes=2", "sim.max_episode_steps=16",
        "reference.max_episode_steps=16", "n_candidates=2"]


def tiny_config(run_dir=None, **changes) -> RunConfig:
    sim = SimConfig(name="mujoco/reacher-twin", max_episode_steps=16)
    base = dict(run_dir=None if run_dir is None else str(run_dir), cycles=1, pretrained="scratch",
                num_rollout_workers=2, envs_per_worker=2, episodes_per_cycle=4, n_candidates=2, sim=sim, reference=sim)
    config = RunConfig(**{**base, **changes})
    config.learner.steps, config.learner.batch_size, config.eval.episodes = 3, 8, 2
    return config


# ---------------------------------------------------------------------- the checks, on node descriptions


def test_an_actor_larger_than_every_node_is_refused_naming_its_field():
    # 2 x 0.5 + 2.5 CPUs fit two 2-CPU nodes in total, and Ray would keep the learner pending forever.
    config = tiny_config(learner_resources=Resources(num_cpus=2.5))
    demands, nodes = cluster.demands(config), [{"CPU": 2.0}, {"CPU": 2.0}]
    cluster.check_totals(demands, {"CPU": 4.0})
    with pytest.raises(ConfigError, match=r"^learner_resources\.num_cpus=2\.5: .* needs 2\.5 CPUs, but the most "
                                          r"any of the 2 nodes has is 2"):
        cluster.check_nodes(demands, nodes)
    cluster.check_nodes(demands, [{"CPU": 2.0}, {"CPU": 3.0}])


def test_a_custom_resource_no_node_has_is_refused_naming_it():
    config = tiny_config(rollout_resources=Resources(num_cpus=0.5, resources={"fast_disk": 1}))
    with pytest.raises(ConfigError, match=r"^rollout_resources\.resources\.fast_disk=1: .* but no node has it"):
        cluster.check_nodes(cluster.demands(config), [{"CPU": 2.0}, {"CPU": 2.0, "ssd": 1.0}])
    # One node with the CPUs, another with the disk: neither has both.
    config.rollout_resources.num_cpus = 2
    with pytest.raises(ConfigError, match=r"rollout_resources\.num_cpus=2, rollout_resources\.resources\.fast_disk=1: "
                                          r"no node has all of it at once"):
        cluster.check_nodes(cluster.demands(config), [{"CPU": 2.0}, {"CPU": 1.0, "fast_disk": 4.0}])


def test_memory_and_accelerator_type_are_demands_too():
    config = tiny_config(learner_resources=Resources(num_gpus=1, memory=2**30, accelerator_type="A100"))
    (_, learner) = cluster.demands(config)
    assert learner.resources == {"CPU": 1.0, "GPU": 1.0, "memory": 2.0**30, "accelerator_type:A100": 0.001}
    h100 = {"CPU": 8.0, "GPU": 1.0, "memory": 2.0**34, "accelerator_type:H100": 1.0}
    with pytest.raises(ConfigError, match=r"^learner_resources\.accelerator_type=0\.001: .* A100 accelerators"):
        cluster.check_nodes([learner], [h100])
    with pytest.raises(ConfigError, match=r"learner_resources\.memory=.* bytes of memory"):
        cluster.check_nodes([learner], [{**h100, "accelerator_type:A100": 1.0, "memory": 2.0**29}])


def test_resources_reach_rays_options_and_a_bad_one_names_its_field(tmp_path, capsys):
    resources = Resources(num_cpus=0.5, memory=1e9, accelerator_type="A100", resources={"fast_disk": 1.0})
    assert cluster.ray_options(resources) == {"num_cpus": 0.5, "num_gpus": 0.0, "memory": 1e9,
                                              "accelerator_type": "A100", "resources": {"fast_disk": 1.0}}
    assert cluster.ray_options(Resources()) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert cluster.ray_options({"num_cpus": 2}) == {"num_cpus": 2.0, "num_gpus": 0.0}
    # A dict field takes new keys with Hydra's +, as sim.params does.
    for override, said in [("+rollout_resources.resources={CPU:1}", "rollout_resources.resources.CPU: set it with num_cpus"),
                           ("+learner_resources.resources.fast_disk=-1", "learner_resources.resources.fast_disk must be >= 0"),
                           ("learner_resources.memory=-5", "learner_resources.memory must be >= 0"),
                           ("ray.reserve_timeout_s=0", "ray.reserve_timeout_s must be > 0")]:
        assert main(["run", f"run_dir={tmp_path}", override, *TINY, "ray.num_cpus=2"]) == 2
        assert said in capsys.readouterr().err


def test_the_actors_get_every_resource_they_ask_for(tmp_path, monkeypatch, actors_spied):
    from flywheel.learners import LearnerPool

    asked = Resources(num_cpus=0.5, memory=1e9, resources={"fast_disk": 1.0})
    config = tiny_config(tmp_path / "run", rollout_resources=asked, learner_resources=asked)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a cluster, which the run does not join here
    with pytest.raises(actors_spied.stopped):
        run(config, console=lambda *a: None)
    assert actors_spied.options == cluster.ray_options(asked)
    assert LearnerPool.from_config("tiny", config).actor_options == cluster.ray_options(asked)


def test_an_embedded_ray_has_no_custom_resources_checked_before_it_starts(tmp_path, capsys, monkeypatch):
    import flywheel.controller as controller

    monkeypatch.setattr(controller, "start_ray", lambda config, *_: pytest.fail("Ray started"))
    assert main(["run", f"run_dir={tmp_path / 'run'}", *TINY, "ray.num_cpus=2",
                 "+rollout_resources.resources={fast_disk:1}"]) == 2
    err = capsys.readouterr().err
    assert "rollout_resources.resources.fast_disk=1 need 2 of the resource fast_disk, but Ray has 0" in err


def test_a_driver_under_ray_job_submit_joins_the_cluster_in_ray_address(monkeypatch):
    # 3 CPUs: more than this machine's cores (the test machine has 2), which the cluster has.
    config = tiny_config(rollout_resources=Resources(num_cpus=1.0), num_rollout_workers=2 * max(1, os.cpu_count()))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match="CPUs, but Ray has"):
        validate(config)  # no cluster named: an embedded Ray on this machine's cores
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # what Ray's job supervisor hands the driver
    assert cluster.address(config) == "127.0.0.1:6379"
    validate(config)  # the cluster's resources are checked once joined, by start_ray
    with pytest.raises(ConfigError, match=r"ray\.num_cpus=2 sizes an embedded Ray, but this run joins the cluster at "
                                          r"127\.0\.0\.1:6379"):
        validate(tiny_config(ray=RayConfig(num_cpus=2)))
    assert cluster.address(tiny_config(ray=RayConfig(address="local"))) is None  # embedded, whatever RAY_ADDRESS says
    assert cluster.address(tiny_config(ray=RayConfig(address="10.0.0.1:6379"))) == "10.0.0.1:6379"


# ---------------------------------------------------------------------- on a local two-node cluster


@pytest.fixture(scope="module")
def two_nodes():
    """A head with 1 CPU and a worker with 2 CPUs and 2 of a custom resource ``fast_disk``, both on
    loopback (as ``sims.local_ray.single_machine_ray`` binds an embedded Ray)."""
    import ray
    from ray.cluster_utils import Cluster

    from sims.local_ray import single_machine_ray

    if ray.is_initialized():
        ray.shutdown()
    with single_machine_ray():  # also while reading the address: outside, Ray names the routable IP
        local = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        local.add_node(num_cpus=2, resources={"fast_disk": 2})
        local.wait_for_nodes()
        address = local.address
    assert address.startswith("127.0.0.1:"), address
    yield address
    ray.shutdown()
    local.shutdown()


@pytest.fixture
def joined(two_nodes, monkeypatch):
    """The driver joins the two nodes through RAY_ADDRESS, as under ``ray job submit``."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", two_nodes)
    yield two_nodes
    ray.shutdown()


def test_a_learner_larger_than_any_node_fails_before_ray_schedules_anything(joined, tmp_path):
    import ray

    # 2 x 0.25 + 2.5 CPUs: the cluster's 3 in all, but no node has 2.5.
    config = tiny_config(tmp_path / "run", rollout_resources=Resources(num_cpus=0.25),
                         learner_resources=Resources(num_cpus=2.5))
    with pytest.raises(ConfigError, match=r"^learner_resources\.num_cpus=2\.5: .* the most any of the 2 nodes has is 2"):
        run(config, console=lambda *a: None)
    assert ray.cluster_resources()["CPU"] == 3  # it had joined the cluster: 3 CPUs in all
    assert not (tmp_path / "run" / "store").exists()  # no rollout


def test_a_custom_resource_the_cluster_lacks_fails_before_any_rollout(joined, tmp_path):
    config = tiny_config(tmp_path / "run", rollout_resources=Resources(num_cpus=0.5, resources={"gpu_sim": 1}))
    with pytest.raises(ConfigError, match=r"rollout_resources\.resources\.gpu_sim=1 need 2 of the resource gpu_sim, "
                                          r"but Ray has 0"):
        run(config, console=lambda *a: None)
    assert not (tmp_path / "run" / "store").exists()


def test_a_run_joins_the_cluster_with_a_custom_resource_it_has(joined, tmp_path):
    """The run joins through RAY_ADDRESS with more CPUs than this machine has (2 rollout workers
    x 1 CPU + 1 learner), its rollout workers ask for ``fast_disk``, which only the worker node has,
    and the storage probe runs on both nodes."""
    config = tiny_config(tmp_path / "run", rollout_resources=Resources(num_cpus=1.0, resources={"fast_disk": 1}))
    lines = []
    run(config, console=lines.append)
    assert any(line.startswith("Ray: joined the cluster at 127.0.0.1:") and "2 node(s), 3 CPUs" in line
               for line in lines), lines
    (record,) = read_cycles(tmp_path / "run")
    assert record["rollout"]["episodes"] == 4 and record["eval"]["episodes"] == 2
    assert not (tmp_path / "run" / cluster.PROBE_DIR).exists()


def test_every_node_writes_the_run_directory_and_the_driver_reads_it(joined, tmp_path):
    import ray

    config = tiny_config(tmp_path)
    start_ray(config).release()  # joined; the actors' reservation is not needed here
    nodes = cluster.alive_nodes()
    assert len(nodes) == 2
    cluster.check_storage(tmp_path, nodes)
    assert not (tmp_path / cluster.PROBE_DIR).exists()

    @ray.remote(num_cpus=0)
    def cannot_write(path, token):
        raise PermissionError(13, "Permission denied", path)

    with pytest.raises(ConfigError, match=rf"^run_dir={tmp_path}: node 127\.0\.0\.1 \(\w{{8}}\) cannot write "
                                          rf"{tmp_path}/{cluster.PROBE_DIR}/\w+ \(PermissionError"):
        cluster.check_storage(tmp_path, nodes, probe=cannot_write)

    elsewhere = tmp_path / "node-local-disk"

    @ray.remote(num_cpus=0)
    def node_local(path, token):  # as on a node whose run directory is its own disk
        target = Path(str(path).replace(str(tmp_path), str(elsewhere)))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(token)

    with pytest.raises(ConfigError, match=r"wrote .*, but the driver cannot read it there: the run directory must be "
                                          r"the same shared storage on every node"):
        cluster.check_storage(tmp_path, nodes, probe=node_local)


def test_every_actor_starts_in_the_bundle_reserved_for_it(joined):
    """Two half-CPU rollout workers and a 2-CPU learner on a 1-CPU head and a 2-CPU node: they fit
    only with both workers on the head. Left to Ray's default placement a worker may take half of
    the 2-CPU node, and the learner then waits forever; the placement group keeps them apart."""
    import ray

    config = tiny_config(learner_resources=Resources(num_cpus=2.0))
    placement = start_ray(config)

    @ray.remote
    class Actor:
        def node(self):
            return ray.get_runtime_context().get_node_id()

    try:
        workers = [Actor.options(**cluster.ray_options(config.rollout_resources),
                                 **placement.options("num_rollout_workers", i)).remote() for i in range(2)]
        learner = Actor.options(**cluster.ray_options(config.learner_resources),
                                **placement.options("num_learners", 0)).remote()
        nodes = ray.get([a.node.remote() for a in (*workers, learner)], timeout=60)
        assert nodes[0] == nodes[1] != nodes[2]
    finally:
        placement.release()


def test_the_cluster_too_busy_for_every_actor_fails_in_time_naming_them(joined):
    import ray

    config = tiny_config(learner_resources=Resources(num_cpus=1.0), ray=RayConfig(reserve_timeout_s=2))
    start_ray(config).release()  # joined; the actors' reservation is not needed here

    @ray.remote(num_cpus=2)
    class Squatter:
        def ready(self):
            return True

    squatter = Squatter.remote()  # takes the worker node: the learner and the rollouts no longer fit at once
    ray.get(squatter.ready.remote())
    try:
        began = time.monotonic()
        with pytest.raises(ConfigError, match=r"did not make room for every actor at once within "
                                              r"ray\.reserve_timeout_s=2: num_rollout_workers=2 x "
                                              r"\(rollout_resources\.num_cpus=0\.5\) plus num_learners=1 x "
                                              r"\(learner_resources\.num_cpus=1\)"):
            cluster.reserve(cluster.demands(config), config.ray.reserve_timeout_s)
        assert time.monotonic() - began < 10
        # A signal while it waits ends the wait at once, however long the timeout.
        stop = Stop()
        with stop_on_signals(stop):
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
            began = time.monotonic()
            assert cluster.reserve(cluster.demands(config), 600, stopped=lambda: stop.requested) is None
        assert stop.signum == signal.SIGTERM and time.monotonic() - began < 10
    finally:
        ray.kill(squatter)


def test_sigterm_while_the_cluster_has_no_room_stops_the_run_with_143(joined, tmp_path):
    """The command line, joined to a cluster that something else fills: SIGTERM ends the wait
    for room, and the run exits as stopped (143), not after a timeout."""
    import ray

    @ray.remote(num_cpus=2)
    class Squatter:
        def ready(self):
            return True

    start_ray(tiny_config()).release()  # joins the cluster, as the run will
    squatter = Squatter.remote()
    ray.get(squatter.ready.remote())
    try:
        proc, lines = _flywheel(["run", f"run_dir={tmp_path / 'run'}", *TINY, "ray.reserve_timeout_s=600"])
        _wait_for(proc, lines, "Ray: joined the cluster")
        time.sleep(2)  # into the wait for room
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 143, "".join(lines) + out
        assert f"stopped by SIGTERM before the last cycle; resume={tmp_path / 'run'}" in out
    finally:
        ray.kill(squatter)


def test_sigterm_right_after_ray_starts_is_a_clean_stop(tmp_path):
    """Ray installs its own SIGTERM handlers as it starts (the driver's aborts, rc 134); the run
    takes them back, so a SIGTERM from then on stops it like any other (143)."""
    proc, lines = _flywheel(["run", f"run_dir={tmp_path / 'run'}", *TINY, "ray.num_cpus=2", "cycles=2"],
                            env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    _wait_for(proc, lines, "Ray: embedded")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 143, "".join(lines) + out
    assert "SIGTERM received" in out and f"resume={tmp_path / 'run'}" in out


def _flywheel(args, env=None):
    flywheel = Path(sys.executable).parent / "flywheel"
    proc = subprocess.Popen([str(flywheel), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    return proc, []


def _wait_for(proc, lines, text, timeout=240):
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(text):
            return
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError(f"{text!r} never printed:\n{''.join(lines)}")
