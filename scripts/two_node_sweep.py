"""The fidelity sweep's trials in parallel on a local two-node Ray cluster, then its report.

    python scripts/two_node_sweep.py SWEEP_DIR [OVERRIDE ...]

Starts ``ray.cluster_utils.Cluster`` (two 2-CPU nodes, bound to loopback as
``tests/flywheel/test_cluster.py`` builds them), runs the smoke sweep's ``knob-1.0`` on seeds 0
and 1 as two drivers at once, each joining the cluster through ``ray.address`` (one run per
trial, as on a real cluster with ``ray.address=auto``), then ``flywheel report SWEEP_DIR``.
Each trial's log is ``SWEEP_DIR-<seed>.log``. Extra overrides go to both trials.
"""

import subprocess
import sys
import time

from ray.cluster_utils import Cluster

from sims.local_ray import single_machine_ray

FLYWHEEL = [sys.executable, "-c", "import sys; from flywheel.cli import main; sys.exit(main(sys.argv[1:]))"]


def main(sweep: str, overrides: list[str]) -> int:
    with single_machine_ray():  # loopback only, also while the address is read
        local = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        local.add_node(num_cpus=2)
        local.wait_for_nodes()
        address = local.address
    try:
        began = time.perf_counter()
        # ray.num_cpus sizes an embedded Ray only; the smoke sweep sets it, a joining run refuses it.
        trials = [subprocess.Popen([*FLYWHEEL, "run", "experiment=fidelity_sweep_smoke", "training_sim=knob-1.0",
                                    f"seed={seed}", f"hydra.sweep.dir={sweep}", f"ray.address={address}",
                                    "ray.num_cpus=null", *overrides],
                                   stdout=open(f"{sweep}-{seed}.log", "w"), stderr=subprocess.STDOUT)
                  for seed in (0, 1)]
        codes = [t.wait() for t in trials]
        print(f"trials exited {codes} after {time.perf_counter() - began:.0f} s (logs: {sweep}-<seed>.log)")
        return max(codes) or subprocess.call([*FLYWHEEL, "report", sweep])
    finally:
        local.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
