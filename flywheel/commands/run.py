"""``flywheel run`` (Hydra) and ``flywheel status RUN_DIR``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from flywheel.commands import output

console = Console()
if not console.is_terminal:
    console.width = 160


def run_main(argv: list[str]) -> int:
    import configs.run_schema  # noqa: F401  (registers the run schema)
    from flywheel.hydra import run_hydra

    return run_hydra("flywheel run", "run", run_task, [spelled_out_tasks(arg) for arg in argv])


def spelled_out_tasks(arg: str) -> str:
    """``tasks=[mujoco/reacher-twin,mujoco/cartpole-swingup-twin]``, the short spelling (each task a
    sim's name, weight 1, scored in that sim), as the schema's list of tasks
    (``tasks=[{sim:{name:mujoco/reacher-twin}},...]``); any other argument unchanged."""
    if not arg.startswith("tasks=["):
        return arg
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = OverridesParser.create().parse_override(arg).value()
    if not isinstance(value, list) or not value or not all(isinstance(name, str) for name in value):
        return arg
    return "tasks=[" + ",".join(f"{{sim:{{name:'{name}'}}}}" for name in value) + "]"


def run_task(cfg) -> int:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from configs.run_schema import RunConfig
    from configs.schema import to_dataclass
    from flywheel import storage
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
    location = cfg.resume or cfg.run_dir
    if storage.is_uri(location):  # a remote run: run_dir is its local copy
        console.print(f"run storage: {location} (resume={location})")
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

    from flywheel import storage

    if storage.is_uri(run_dir):  # a remote run (flywheel.storage)
        saved = storage.files(run_dir, field="resume").read("config.json")
    else:
        saved = (Path(run_dir) / "config.json").read_bytes() if (Path(run_dir) / "config.json").is_file() else None
    if saved is None:
        raise ValueError(f"resume={run_dir}: not a flywheel run directory (no config.json)")
    base = OmegaConf.merge(OmegaConf.structured(RunConfig), json.loads(saved))
    OmegaConf.set_struct(base, False)  # an unknown key on the command line is to_dataclass's to name
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
    merged = OmegaConf.merge(base, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]))
    merged.resume = run_dir
    return merged


def status_main(argv: list[str]) -> int:
    import tempfile

    from flywheel import checkpoint, storage

    ap = argparse.ArgumentParser(prog="flywheel status", description="Print a run's cycle table.")
    ap.add_argument("run_dir", help="a run directory, or the URI of a remote run (s3://...)")
    output.add_json_flag(ap)
    args = ap.parse_args(argv)
    if not storage.is_uri(args.run_dir):
        return status(Path(args.run_dir), args.json)
    remote = storage.files(args.run_dir)
    if not remote.exists("config.json"):
        raise ValueError(f"{args.run_dir}: not a flywheel run (no config.json there)")
    # A copy of its own: the run's staging directory may be in use by the run itself.
    with tempfile.TemporaryDirectory(prefix="flywheel-status-") as copy:
        storage.Mirror(remote, copy).download(skip=checkpoint.superseded(remote.read("checkpoints/latest")))
        return status(Path(copy), args.json, store=storage.join(args.run_dir, storage.STORE), name=args.run_dir)


def status(run_dir: Path, as_json: bool, store: str | None = None, name: str | None = None) -> int:
    """``flywheel status`` of a local run directory, or of a remote run ``name``'s downloaded copy
    (its store at ``store``)."""
    name = name or str(run_dir)
    from flywheel.logger import read_cycles, read_start

    if not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir}: not a flywheel run directory (no config.json)")
    records, start, audits = read_cycles(run_dir), read_start(run_dir), store_audit(run_dir, store)
    if as_json:
        output.print_json({"run_dir": name, "start": None if start is None else start_summary(start),
                           "cycles": [cycle_summary(r) for r in records],
                           "store": [asdict(a) for a in audits if not a.ok]})
        latest_checkpoint_sound(run_dir)
        return 0
    if output.plain():
        output.print_columns(cycle_columns(task_names(records, start)), cycle_cells(records, start))
    else:
        print_cycles(records, title=f"flywheel status {name}", start=start)
    # On stderr: what is wrong is for the person running it, and stdout stays the table.
    for audit in audits:
        if not audit.ok:
            print(audit_line(audit), file=sys.stderr)
    if not records:
        print("no complete cycle yet", file=sys.stderr)
    latest_checkpoint_sound(run_dir)
    return 0


def latest_checkpoint_sound(run_dir: Path) -> None:
    """The checkpoint a resume starts from has every file, checksums matching, or a
    ``RunCheckpointError`` (one line, exit code 2) says which file and what to do: shards
    a replay can skip, but this run cannot resume."""
    from flywheel import checkpoint

    latest = checkpoint.latest(run_dir)
    if latest is not None:
        checkpoint.verify(latest)


def store_audit(run_dir: Path, store: str | None = None) -> list:
    from flywheel.store import RolloutStore

    if store is not None:  # remote: nothing is created by reading it
        return RolloutStore(store).audit()
    if not (run_dir / "store").is_dir():  # RolloutStore() would create it; no rollout phase has ended yet
        return []
    return RolloutStore(run_dir / "store").audit()


def audit_line(audit) -> str:
    if audit.manifest_error:
        return f"store: cycle {audit.cycle}: {audit.manifest_error}"
    parts = [f"{len(paths)} {what} ({', '.join(paths)})"
             for what, paths in (("missing", audit.missing), ("corrupt (sha256 differs from the manifest)",
                                                              audit.corrupt)) if paths]
    return (f"store: cycle {audit.cycle}: shards {'; '.join(parts)}: their rows are left out of every replay "
            "that reads this cycle")


CYCLE_COLUMNS = ("cycle", "capability", "fidelity", "grade weight", "imagination err", "env steps",
                 "total env steps", "sim steps", "total sim steps", "weights", "wall s")


def task_names(records: list[dict], start: dict | None = None) -> list[str]:
    """A multi-task run's tasks (training sims), in the order its records name them; [] for one task."""
    from flywheel.logger import task_capabilities

    names: dict[str, None] = {}
    for record in ([start] if start else []) + records:
        names.update(dict.fromkeys(task_capabilities(record)))
    return list(names)


def cycle_columns(tasks: list[str]) -> tuple[str, ...]:
    """The table's columns: a multi-task run's capability is the tasks' mean, each task's beside it."""
    return CYCLE_COLUMNS[:2] + tuple(f"capability {name}" for name in tasks) + CYCLE_COLUMNS[2:]


def cycle_summary(record: dict) -> dict:
    """A cycle's fields as the table shows them, unformatted (``flywheel status --json``)."""
    return {"cycle": record["cycle"], "capability": record["capability"],
            "capability_stderr": record.get("capability_stderr"), "fidelity": record.get("fidelity"),
            "grade_weight": record["grades"]["weight"],
            "imagination_error": record["grades"].get("imagination_error"),
            "env_steps": record["env_steps"], "env_steps_total": record["env_steps_total"],
            "sim_steps": record["sim_steps"], "sim_steps_total": record["sim_steps_total"],
            "rollout_weight_versions": record["rollout"]["weight_versions"],
            "weight_version": record["weight_version"], "seconds": record["seconds"]["cycle"]} | _by_task(record)


def start_summary(start: dict) -> dict:
    return {"capability": start["capability"], "capability_stderr": start.get("capability_stderr"),
            "weight_version": start["weight_version"], "seconds": start["seconds"]["eval"]} | _by_task(start)


def _by_task(record: dict) -> dict:
    from flywheel.logger import task_capabilities

    by_task = task_capabilities(record)
    return {"capability_by_task": by_task} if by_task else {}


def cycle_cells(records: list[dict], start: dict | None = None) -> list[list[str]]:
    """The table's rows as text; ``start`` (the starting weights' evaluation) first."""
    from flywheel.logger import capability_text, task_capabilities

    tasks = task_names(records, start)

    def by_task(record: dict) -> list[str]:
        own = task_capabilities(record)
        return [capability_text(own[name]) if name in own else "" for name in tasks]

    rows = []
    if start is not None:
        rows.append(["start", capability_text(start), *by_task(start), *[""] * 7, f"{start['weight_version']}",
                     f"{start['seconds']['eval']:.1f}"])
    for r in records:
        fidelity = r.get("fidelity")
        rows.append([str(r["cycle"]), capability_text(r), *by_task(r), "" if fidelity is None else f"{fidelity:.3f}",
                     f"{r['grades']['weight']:.3f}", f"{r['grades'].get('imagination_error', float('nan')):.3f}",
                     f"{r['env_steps']:,}", f"{r['env_steps_total']:,}", f"{r['sim_steps']:,}",
                     f"{r['sim_steps_total']:,}",
                     f"{r['rollout']['weight_versions']} -> {r['weight_version']}", f"{r['seconds']['cycle']:.1f}"])
    return rows


def print_cycles(records: list[dict], title: str, start: dict | None = None) -> None:
    """The cycle table; ``start`` (the starting weights' evaluation) is its first row: capability, weights, seconds."""
    table = Table(title=title)
    for column in cycle_columns(task_names(records, start)):
        table.add_column(column, justify="right")
    for row in cycle_cells(records, start):
        table.add_row(*row)
    console.print(table)
