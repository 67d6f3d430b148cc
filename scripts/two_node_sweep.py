"""The fidelity sweep's runs in parallel on a local two-node Ray cluster, then its report.

    python scripts/two_node_sweep.py SWEEP_DIR [OVERRIDE ...]

Starts ``ray.cluster_utils.Cluster`` (two 2-CPU nodes, bound to loopback as
``tests/flywheel/test_cluster.py`` builds them), then runs the smoke sweep's ``knob-1.0`` on
seeds 0 and 1 with the sweep's own launcher, both at once (``hydra.launcher.jobs=2``), each run
a driver joining the cluster through ``ray.address``, as on a real cluster with
``ray.address=auto``; the sweep writes its report when both have returned. Each run's log is
``SWEEP_DIR/logs/<run>.log``. Extra overrides go to the sweep.
"""

import subprocess
import sys
import time

from ray.cluster_utils import Cluster

from sims.local_ray import single_machine_ray

FLYWHEEL = [sys.executable, "-m", "flywheel.cli"]


def main(sweep: str, overrides: list[str]) -> int:
    with single_machine_ray():  # loopback only, also while the address is read
        local = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        local.add_node(num_cpus=2)
        local.wait_for_nodes()
        address = local.address
    try:
        began = time.perf_counter()
        # ray.num_cpus sizes an embedded Ray only; the smoke sweep sets it, a joining run refuses it.
        code = subprocess.call([*FLYWHEEL, "run", "experiment=fidelity_sweep_smoke", "training_sim=knob-1.0", "seed=0,1",
                                "hydra.launcher.jobs=2", f"hydra.sweep.dir={sweep}", f"ray.address={address}",
                                "ray.num_cpus=null", *overrides])
        print(f"the sweep exited {code} after {time.perf_counter() - began:.0f} s (logs: {sweep}/logs/)")
        return code
    finally:
        local.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
