"""What a run asks of its Ray cluster, and whether the cluster has it, checked before any rollout.

    address(config)          the cluster to join: ``ray.address``, else RAY_ADDRESS, else None (embedded)
    demands(config)          what each kind of actor reserves, in Ray's resource names, by config field
    ray_options(resources)   a ``configs.run_schema.Resources`` as Ray's ``.options()``
    check_totals(...)        every actor fits the cluster's total
    check_nodes(...)         each actor fits on one node: Ray places an actor on a single node
    reserve(...)             every actor at once, as a placement group they start into: ready in time, or fail
    check_storage(...)       every node writes the run directory (a path or a URI) and the driver reads it

Why all of this up front: Ray keeps an actor it cannot place pending, silently and forever. A
learner asking for 2.5 CPUs where no node has that many passed the cluster-total check and hung
its learn phase (three tries of 300 s); a run directory that is not shared lost every shard
only after a full rollout phase. Each check fails with one line naming the field to change.
"""

from __future__ import annotations

import ipaddress
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from configs.errors import ConfigError
from flywheel import storage

if TYPE_CHECKING:
    from configs.run_schema import Resources, RunConfig

# What Ray's ``.options(accelerator_type=...)`` adds to an actor's demand (ray._common.utils).
ACCELERATOR_PREFIX, ACCELERATOR_AMOUNT = "accelerator_type:", 0.001


def address(config: RunConfig) -> str | None:
    """The cluster the run joins, or None for an embedded Ray (``ray.address=local`` forces one). A driver started by ``ray job
    submit`` gets the cluster's address in RAY_ADDRESS (Ray's job supervisor sets it): such a
    run joins that cluster even without ``ray.address``, rather than start a Ray of its own on
    the head machine and count that machine's cores."""
    if config.ray.address == "local":  # Ray's word for "start a new one", whatever RAY_ADDRESS says
        return None
    return config.ray.address or os.environ.get("RAY_ADDRESS") or None


def on_loopback(address: str) -> bool:
    """Whether ``address`` (host:port) is on this machine's loopback: a cluster bound there is this
    machine's alone, and its driver joins it as an embedded one starts (``single_machine_ray``),
    or Ray would rewrite 127.0.0.1 to the routable IP, where nothing of the cluster listens."""
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "auto"
        return False


@dataclass(frozen=True)
class Demand:
    """``count`` actors (``count_field``), each reserving ``resources`` on one node; ``fields``
    names the config field that asks for each resource."""

    count_field: str
    count: int
    resources: dict[str, float]
    fields: dict[str, str]


def demands(config: RunConfig) -> list[Demand]:
    return [demand_of("num_rollout_workers", config.num_rollout_workers, "rollout_resources", config.rollout_resources),
            demand_of("num_learners", config.num_learners, "learner_resources", config.learner_resources)]


def demand_of(count_field: str, count: int, section: str, resources: Resources) -> Demand:
    """One actor's reservation in Ray's resource names (what ``ray.nodes()`` reports); zero amounts
    reserve nothing and are left out."""
    wanted: dict[str, tuple[float, str]] = {
        "CPU": (resources.num_cpus, f"{section}.num_cpus"), "GPU": (resources.num_gpus, f"{section}.num_gpus"),
        "memory": (resources.memory or 0, f"{section}.memory")}
    if resources.accelerator_type:
        wanted[ACCELERATOR_PREFIX + resources.accelerator_type] = (ACCELERATOR_AMOUNT, f"{section}.accelerator_type")
    wanted |= {name: (amount, f"{section}.resources.{name}") for name, amount in resources.resources.items()}
    wanted = {name: (float(amount), field) for name, (amount, field) in wanted.items() if amount > 0}
    return Demand(count_field, count, {k: a for k, (a, _) in wanted.items()}, {k: f for k, (_, f) in wanted.items()})


def ray_options(resources: Any) -> dict[str, Any]:
    """``resources`` (a ``Resources``, or a mapping or object with some of its fields; CPUs
    default to 1) as keyword arguments of Ray's ``.options()``; unset fields are left to Ray."""
    def get(name: str, default: Any = None) -> Any:
        return resources.get(name, default) if isinstance(resources, Mapping) else getattr(resources, name, default)

    options: dict[str, Any] = {"num_cpus": float(get("num_cpus", 1.0)), "num_gpus": float(get("num_gpus", 0.0))}
    if get("memory") is not None:
        options["memory"] = get("memory")
    if get("accelerator_type"):
        options["accelerator_type"] = get("accelerator_type")
    if get("resources"):
        options["resources"] = dict(get("resources"))
    return options


def _label(resource: str) -> str:
    if resource in ("CPU", "GPU"):
        return f"{resource}s"
    if resource == "memory":
        return "bytes of memory"
    if resource.startswith(ACCELERATOR_PREFIX):
        return f"{resource.removeprefix(ACCELERATOR_PREFIX)} accelerators"
    return f"of the resource {resource}"


def check_totals(demands: list[Demand], totals: Mapping[str, float]) -> None:
    """Every actor must fit at once, or Ray would wait forever for the last one."""
    for resource in dict.fromkeys(r for d in demands for r in d.resources):
        asking = [d for d in demands if resource in d.resources]
        needed = sum(d.count * d.resources[resource] for d in asking)
        if needed > totals.get(resource, 0.0) + 1e-9:
            parts = " plus ".join(f"{d.count_field}={d.count} x {d.fields[resource]}={d.resources[resource]:g}"
                                  for d in asking)
            raise ConfigError(f"{parts} need {needed:g} {_label(resource)}, but Ray has "
                              f"{totals.get(resource, 0.0):g}")


def check_nodes(demands: list[Demand], nodes: list[Mapping[str, float]]) -> None:
    """Each actor must fit on one node (``nodes``: each alive node's total resources): Ray never
    splits an actor across nodes, so a learner asking for more CPUs than any node has waits forever."""
    for demand in demands:
        if not demand.resources or any(_fits(demand.resources, node) for node in nodes):
            continue
        for resource, amount in demand.resources.items():
            most = max((node.get(resource, 0.0) for node in nodes), default=0.0)
            if amount > most + 1e-9:
                has = f"the most any of the {len(nodes)} nodes has is {most:g}" if most else "no node has it"
                raise ConfigError(f"{demand.fields[resource]}={amount:g}: each of the {demand.count_field}="
                                  f"{demand.count} actors runs on one node and needs {amount:g} {_label(resource)}, "
                                  f"but {has}")
        asked = ", ".join(f"{demand.fields[r]}={a:g}" for r, a in demand.resources.items())
        raise ConfigError(f"{asked}: no node has all of it at once (each of the {demand.count_field}={demand.count} "
                          f"actors runs on one node); the nodes have {_describe(nodes)}")


def _fits(wanted: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(resource, 0.0) + 1e-9 >= amount for resource, amount in wanted.items())


def _describe(nodes: list[Mapping[str, float]]) -> str:
    """Each node's resources as the config names them, Ray's bookkeeping ones left out."""
    def amount(name: str, value: float) -> str:
        return f"{value / 2**30:.1f}GiB" if name == "memory" else f"{value:g}"

    return "; ".join("{" + ", ".join(f"{k}: {amount(k, v)}" for k, v in sorted(node.items())
                                     if not k.startswith(("node:", "object_store_memory"))) + "}"
                     for node in nodes)


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [node for node in ray.nodes() if node["Alive"]]


@dataclass
class Placement:
    """The run's placement group (None: nothing reserves anything) and where each kind of actor's
    bundles start in it: every actor is started into its own bundle, so that what was reserved
    is where it runs (left to Ray's default placement, two half-CPU rollout workers on two
    1-CPU nodes took half of each, and the 1-CPU learner then fit on neither)."""

    group: Any = None
    first: dict[str, int] = field(default_factory=dict)  # count_field -> its first bundle's index

    def options(self, count_field: str, index: int) -> dict[str, Any]:
        """The ``.options()`` that put actor ``index`` of ``count_field`` into its bundle."""
        if self.group is None or count_field not in self.first:
            return {}
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            self.group, placement_group_bundle_index=self.first[count_field] + index)}

    def release(self) -> None:
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.group)
            self.group = None


def reserve(demands: list[Demand], timeout_s: float, stopped: Callable[[], bool] = lambda: False) -> Placement | None:
    """Reserve every actor at once, as one placement group (a bundle per actor), which the actors
    are then started into (``Placement.options``): packing can fail where the per-node and total
    checks pass, and other jobs may hold the cluster. Waits up to ``timeout_s``, then fails
    naming every demand; returns None as soon as ``stopped()`` (a SIGTERM while the cluster is
    busy stops the run rather than wait)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    bundles, first = [], {}
    for d in demands:
        if d.resources:
            first[d.count_field] = len(bundles)
            bundles += [dict(d.resources) for _ in range(d.count)]
    if not bundles:  # nothing reserves anything
        return Placement()
    group = placement_group(bundles, strategy="PACK")
    deadline = time.monotonic() + timeout_s
    while not group.wait(1):
        if stopped() or time.monotonic() > deadline:
            remove_placement_group(group)
            if stopped():
                return None
            asked = " plus ".join(
                f"{d.count_field}={d.count} x ({', '.join(f'{d.fields[r]}={a:g}' for r, a in d.resources.items())})"
                for d in demands if d.resources)
            raise ConfigError(
                f"the cluster did not make room for every actor at once within ray.reserve_timeout_s="
                f"{timeout_s:g}: {asked}; its nodes have {_describe([n['Resources'] for n in alive_nodes()])} "
                f"in all, and now free {_describe([ray.available_resources()])}: other jobs may hold "
                "them, or the actors do not pack onto the nodes; ask for less or wait for room")
    return Placement(group, first)


PROBE_DIR = storage.PROBE


def _write_probe(path: str, token: str) -> None:
    storage.write_to(path, token.encode())


def check_storage(run_dir: Path | str, nodes: list[dict[str, Any]], timeout_s: float = 120.0,
                  probe: Callable[..., Any] | None = None) -> None:
    """One probe task on each node (``nodes``: ``ray.nodes()`` entries) writes a file under the
    run directory, and the driver reads it back: rollout actors write their shards there from
    whatever node they run on. A local path must be the same storage on every node (a shared
    filesystem mounted at the same path); a URI (``flywheel.storage``) must be reachable and
    writable from every node, with that node's credentials. Either way a run directory that is
    not would lose the shards after a full rollout phase. ``probe`` (a Ray remote function of
    (path, token)) replaces the writer in tests."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = probe or ray.remote(num_cpus=0, max_retries=0)(_write_probe)
    remote, token = storage.is_uri(run_dir), uuid.uuid4().hex
    must = ("reachable and writable from every node, with that node's credentials (for S3, AWS_ACCESS_KEY_ID... "
            "or an instance role; for GCS, GOOGLE_APPLICATION_CREDENTIALS)") if remote else \
        "storage every node can write, at the same path"
    pending = {}
    for node in nodes:
        where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        path = storage.join(run_dir, PROBE_DIR, node["NodeID"])
        pending[probe.options(scheduling_strategy=where).remote(path, token)] = (node, path)
    try:
        ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
        for ref in ready:
            node, path = pending[ref]
            named = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
            shown = storage.without_query(path)
            try:
                ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else exc
                raise ConfigError(f"run_dir={run_dir}: {named} cannot write {shown} ({type(cause).__name__}: {cause}); "
                                  f"the run directory must be {must}") from exc
            if storage.read_from(path) != token.encode():
                raise ConfigError(f"run_dir={run_dir}: {named} wrote {shown}, but the driver cannot read it there: the "
                                  "run directory must be the same shared storage on every node (a shared filesystem "
                                  "mounted at the same path, or a URI: s3://, gs://...)")
        if late:
            node, path = pending[late[0]]
            raise ConfigError(f"run_dir={run_dir}: node {node['NodeManagerAddress']} ({node['NodeID'][:8]}) did not "
                              f"write {storage.without_query(path)} within {timeout_s:g} s")
    finally:
        storage.files(run_dir).remove_tree(PROBE_DIR)
