"""The ``flywheel`` command.

    flywheel sims list [--tag TAG] [--json]     registered simulators, their dims and whether they load
    flywheel sims check NAME... [--all]         the conformance suite
    flywheel sims rollout [hydra overrides]     demonstrator rollouts and a timing table
    flywheel sims twins [--plot PNG]            how far MuJoCo/PyBullet twins drift apart
    flywheel routes [agent=tiny | --checkpoint DIR]   the routes (inputs -> output) a model supports
    flywheel run [hydra overrides]              the flywheel: rollouts, grading, learning, evaluation
    flywheel run experiment=fidelity_sweep      one agent in ten training sims, then flywheel report (docs/report.md)
    flywheel status RUN_DIR [--json]            a run's cycle table and any corrupt or missing store shards
    flywheel world-model fit [sim=... out=DIR ...]    fit the learned simulator of a sim (checkpoint + fidelity report)
    flywheel fidelity --reference SIM --candidate SIM[:k=v,...] ...   fidelity table and error-vs-horizon PNG
    flywheel pretrain [pretrain=cpu|tiny] [curriculum=staged|joint] ...   staged pretraining of the backbone
    flywheel report RUN_DIR... [--out DIR]      capability against fidelity over runs (or one sweep directory)
    flywheel export RUN_DIR --format minari [--out DIR] [--force]   the graded rollouts as Minari datasets

Commands that take a configuration are composed by Hydra (``key=value`` overrides,
``-m`` for multirun); the rest take plain flags.
"""

from __future__ import annotations

import sys

from flywheel.commands import export as export_commands
from flywheel.commands import fidelity as fidelity_commands
from flywheel.commands import pretrain as pretrain_commands
from flywheel.commands import report as report_commands
from flywheel.commands import routes as routes_commands
from flywheel.commands import run as run_commands
from flywheel.commands import sims as sims_commands
from flywheel.commands import world_model as world_model_commands
from flywheel.hydra import report_user_errors

USAGE = __doc__
COMMANDS = {
    "sims": sims_commands.main,
    "routes": routes_commands.main,
    "run": run_commands.run_main,
    "status": run_commands.status_main,
    "world-model": world_model_commands.main,
    "fidelity": fidelity_commands.main,
    "pretrain": pretrain_commands.main,
    "report": report_commands.main,
    "export": export_commands.main,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    group, rest = argv[0], argv[1:]
    command = COMMANDS.get(group)
    if command is not None:
        return report_user_errors(command, rest)
    print(f"flywheel: unknown command {group!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
