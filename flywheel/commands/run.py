"""``flywheel run`` (Hydra) and ``flywheel status RUN_DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()
if not console.is_terminal:
    console.width = 160


def run_main(argv: list[str]) -> int:
    import configs.run_schema  # noqa: F401  (registers the run schema)
    from flywheel.hydra import run_hydra

    return run_hydra("flywheel run", "run", run_task, argv)


def run_task(cfg) -> int:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from configs.run_schema import RunConfig
    from configs.schema import to_dataclass
    from flywheel.controller import RunStopped, run
    from flywheel.hydra import SweepStopped
    from flywheel.logger import CAPABILITY_FIGURE, read_cycles, read_start

    hydra = HydraConfig.get()
    sweep = hydra.mode == RunMode.MULTIRUN
    if sweep:
        console.print(f"\n[bold]sweep job {hydra.job.num}[/bold]: {' '.join(hydra.overrides.task)}")
    if cfg.resume:
        cfg = resumed_config(cfg.resume)
    config = to_dataclass(cfg, RunConfig)
    try:
        # Log lines such as pretraining's "[understand] step ..." are text, not rich markup.
        run_dir, stopped = run(config, console=lambda line: console.print(line, markup=False, highlight=False)), None
    except RunStopped as exc:
        run_dir, stopped = exc.run_dir, exc
    print_cycles(read_cycles(run_dir), title=f"flywheel run {run_dir}", start=read_start(run_dir))
    console.print(f"run directory: {run_dir}\ncycle records: {run_dir / 'cycles.jsonl'} (flywheel status {run_dir})\n"
                  f"capability plot: {run_dir / CAPABILITY_FIGURE}\nTensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    if stopped is None:
        return 0
    if sweep:  # stop the sweep too, rather than start its next run
        raise SweepStopped(f"sweep stopped in {run_dir} ({stopped}); the same command resumes it", stopped.exit_code)
    console.print(f"flywheel: {stopped}")
    return stopped.exit_code


def resumed_config(run_dir: str):
    """The run's own saved config, with this command line's overrides on top (e.g. ``cycles=8``)."""
    import json

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from configs.run_schema import RunConfig

    saved = Path(run_dir) / "config.json"
    if not saved.is_file():
        raise ValueError(f"resume={run_dir}: not a flywheel run directory (no config.json)")
    base = OmegaConf.merge(OmegaConf.structured(RunConfig), json.loads(saved.read_text()))
    OmegaConf.set_struct(base, False)  # an unknown key on the command line is to_dataclass's to name
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
    merged = OmegaConf.merge(base, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    merged.resume = run_dir
    return merged


def status_main(argv: list[str]) -> int:
    from flywheel.logger import read_cycles, read_start

    ap = argparse.ArgumentParser(prog="flywheel status", description="Print a run's cycle table.")
    ap.add_argument("run_dir")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir}: not a flywheel run directory (no config.json)")
    records = read_cycles(run_dir)
    print_cycles(records, title=f"flywheel status {run_dir}", start=read_start(run_dir))
    if not records:
        console.print("no complete cycle yet")
    return 0


def print_cycles(records: list[dict], title: str, start: dict | None = None) -> None:
    """The cycle table; ``start`` (the starting weights' evaluation) is its first row: capability, weights, seconds."""
    from flywheel.logger import capability_text

    table = Table(title=title)
    for column in ("cycle", "capability", "fidelity", "grade weight", "imagination err", "env steps",
                   "total env steps", "sim steps", "total sim steps", "weights", "wall s"):
        table.add_column(column, justify="right")
    if start is not None:
        table.add_row("start", capability_text(start), *[""] * 7, f"{start['weight_version']}",
                      f"{start['seconds']['eval']:.1f}")
    for r in records:
        fidelity = r.get("fidelity")
        table.add_row(str(r["cycle"]), capability_text(r), "" if fidelity is None else f"{fidelity:.3f}",
                      f"{r['grades']['weight']:.3f}", f"{r['grades'].get('imagination_error', float('nan')):.3f}",
                      f"{r['env_steps']:,}", f"{r['env_steps_total']:,}", f"{r['sim_steps']:,}",
                      f"{r['sim_steps_total']:,}",
                      f"{r['rollout']['weight_versions']} -> {r['weight_version']}", f"{r['seconds']['cycle']:.1f}")
    console.print(table)
