"""What a run listens on: an embedded run on loopback only; the learners' store on the node's address.

Sockets are read from Linux's /proc (the project does not depend on psutil): every listening
TCP socket of this process and its descendants, which in an embedded run are all of Ray's
(GCS, raylet, runtime-env agent, the worker and actor processes, the learners' TCP store).
"""

import ipaddress
import os
import socket
from pathlib import Path
from typing import NamedTuple

import pytest

from configs.run_schema import RayConfig, Resources, RunConfig
from flywheel.controller import start_ray
from flywheel.learners import Learner, LearnerPool

pytestmark = [pytest.mark.xdist_group("ray-network"),
              pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from Linux's /proc")]

# Listening sockets allowed off loopback in an embedded run, by process name, each with why.
# None today (Ray 2.60, torch 2.13): Ray's servers follow the node address that
# sims.local_ray.single_machine_ray makes 127.0.0.1, and the learners' store follows the
# node address too. A socket that must be added here is also named in docs/architecture.md.
KNOWN_EXCEPTIONS: dict[str, str] = {}

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


class Listening(NamedTuple):
    pid: int
    process: str
    address: str
    port: int


def _address(hex_address: str) -> tuple[str, int]:
    """/proc/net/tcp{,6}'s "0100007F:1F90": 32-bit words in host (little-endian) order."""
    ip, port = hex_address.split(":")
    raw = bytes.fromhex(ip)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words), int(port, 16)


def _listening_by_inode() -> dict[int, tuple[str, int]]:
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if Path(table).exists():
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == LISTEN:
                    found[int(fields[9])] = _address(fields[1])
    return found


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def listening_sockets(pids) -> list[Listening]:
    by_inode, found = _listening_by_inode(), []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            inode = int(target[len("socket:["):-1]) if target.startswith("socket:[") else None
            if inode in by_inode:
                found.append(Listening(pid, name, *by_inode[inode]))
    return sorted(set(found))


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


@pytest.fixture
def no_ray():
    """Each test starts its own Ray, the way it is measured; none may be running already."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    yield ray
    ray.shutdown()


def test_an_embedded_run_listens_on_loopback_only(no_ray):
    config = RunConfig(num_rollout_workers=1, episodes_per_cycle=1, num_learners=2,
                       learner_resources=Resources(num_cpus=0.5), ray=RayConfig(num_cpus=2))
    start_ray(config).release()  # the learners below start outside the run's placement group
    pool = LearnerPool("tiny", config.num_learners, config.learner_resources)
    try:
        pool.start()  # the learner actors, their TCP store and process group
        sockets = listening_sockets(_process_tree(os.getpid()))
        names = {s.process for s in sockets}
        assert {"gcs_server", "raylet"} <= names, sockets  # the scan sees Ray's own servers
        learners = [s for s in sockets if "Learner" in s.process]
        assert len(learners) > config.num_learners, sockets  # each actor's gRPC server, plus rank 0's store
        exposed = [s for s in sockets if not is_loopback(s.address) and s.process not in KNOWN_EXCEPTIONS]
        assert not exposed, f"listening beyond loopback: {exposed}"
    finally:
        pool.shutdown()


def test_the_learners_store_listens_on_the_nodes_address_only(no_ray):
    # A Ray started as a cluster node is (its node address is the machine's routable one): the
    # store must listen there, where the other nodes' learners reach it, and nowhere else.
    no_ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    learner = Learner(0, LearnerPool("tiny", 1).spec)
    try:
        address, port = learner.rendezvous()
        assert address == no_ray.util.get_node_ip_address()
        learner.connect(address, port)
        store = [s for s in listening_sockets([os.getpid()]) if s.port == port]
        assert [ipaddress.ip_address(s.address) for s in store] == [ipaddress.ip_address(address)], store
    finally:
        learner.close()


def test_an_embedded_run_starts_its_own_ray_beside_a_running_cluster(no_ray, tmp_path):
    """A cluster that `ray start` left on the machine must not be joined by a run without ray.address."""
    import subprocess
    import sys
    import time

    port = _free_port()
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _accepts(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _accepts(port), "the other cluster did not start"
        start_ray(RunConfig(num_rollout_workers=1, episodes_per_cycle=1, ray=RayConfig(num_cpus=2)))
        ours = {s.process for s in listening_sockets(_process_tree(os.getpid()))}
        assert "gcs_server" in ours  # started by this process, not the other cluster's
        assert no_ray.cluster_resources()["CPU"] == 2  # the other has 1
    finally:
        head.terminate()
        head.wait(timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
