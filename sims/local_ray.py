"""An embedded Ray: a new instance of this process's own, listening on loopback only.

Every place that starts Ray on one machine (a run without ``ray.address``, pretraining's data
generation, the benchmarks) starts it here, for two reasons:

- ``address="local"``: without it ``ray.init`` joins whatever cluster ``ray start`` left on
  the machine (another user's, another run's), as a benchmark once did, and died with it.
- Ray's servers listen on its node address, and Ray rewrites a loopback ``_node_ip_address``
  to the machine's routable IP (``services.resolve_ip_for_localhost``) unless it believes
  clusters are off, as on macOS and Windows (``ENABLE_RAY_CLUSTER``). An embedded Ray is one
  machine: say so while it starts, and every server it starts (GCS, raylet, workers, agents)
  listens on 127.0.0.1 only. A Ray without the flag is caught by
  ``tests/flywheel/test_network.py``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

LOOPBACK = "127.0.0.1"


def init_local_ray(num_cpus: float | None = None, **kwargs: Any) -> None:
    """``ray.init`` of a new loopback-only instance (no dashboard, workers' logs kept out of
    the console); ``kwargs`` go to ``ray.init``."""
    import ray

    options = {"include_dashboard": False, "log_to_driver": False} | kwargs
    with single_machine_ray():
        ray.init(address="local", num_cpus=num_cpus, _node_ip_address=LOOPBACK, **options)


@contextmanager
def single_machine_ray():
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
