"""``flywheel pretrain``: staged pretraining of the backbone (``policies.pretrain``).

    flywheel pretrain [pretrain=cpu|tiny] [name=NAME] [curriculum=staged|joint] [key=value ...]

Writes ``<root>/<name>/`` (``runs/pretrain/default`` by default): ``checkpoint/``,
``stages/<stage>/``, ``schedule.png``, ``metrics.json``, ``metrics.md``, ``config.yaml``;
the generated data are cached under ``data.cache_dir``. Run it again with the same name
and configuration to resume after an interruption.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()
if not console.is_terminal:
    console.width = 200


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    from flywheel.hydra import run_hydra

    return run_hydra("flywheel pretrain", "pretrain", pretrain_task, argv)


def pretrain_task(cfg) -> int:
    from configs.schema import PretrainConfig, to_dataclass
    from policies.pretrain import pretrain
    from policies.pretrain.report import HEADER, metrics_rows

    config = to_dataclass(cfg, PretrainConfig)
    summary = pretrain(config, log=lambda line: console.print(line, soft_wrap=True, markup=False, highlight=False))
    table = Table(title=f"pretraining {config.name} ({config.curriculum}): held-out metrics per stage, "
                        "baselines in brackets")
    for column in HEADER:
        table.add_column(column)
    for row in metrics_rows(summary["metrics"], summary["baselines"]):
        table.add_row(*row)
    console.print(table)
    return 0
