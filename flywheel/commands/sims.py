"""``flywheel sims``: list, check and roll out the registered simulators."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import track
from rich.table import Table

from flywheel.commands import output
from sims.files import write_json_atomic

console = Console()
if not console.is_terminal:  # logs and CI: do not squeeze tables into 80 columns
    console.width = 160


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: flywheel sims {list,check,rollout,twins} ...")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "list":
        return list_command(rest)
    if command == "check":
        return check_command(rest)
    if command == "rollout":
        from flywheel.hydra import run_hydra

        return run_hydra("flywheel sims rollout", "rollout", rollout_task, rest)
    if command == "twins":
        from sims.twins.drift import main as twins_main

        return twins_main(rest, prog="flywheel sims twins")
    print(f"flywheel sims: unknown command {command!r} (expected list, check, rollout or twins)", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------- list


def list_command(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="flywheel sims list", description="List registered simulators.")
    ap.add_argument("--tag", help="only sims carrying this tag")
    output.add_json_flag(ap)
    args = ap.parse_args(argv)
    import sims

    described = [describe(name) for name in sims.names(tag=args.tag)]
    if args.json:
        output.print_json(described)
    elif output.plain():
        output.print_columns(LIST_COLUMNS, [list_cells(d) for d in described])
    else:
        table = Table(title="Registered simulators")
        for column in LIST_COLUMNS:
            table.add_column(column, overflow="fold")
        for d in described:
            table.add_row(*list_cells(d, markup=True))
        console.print(table)
    # Families are name spaces, not sims: kept off stdout when a program reads it.
    family_console = console if not (args.json or output.plain()) else Console(stderr=True)
    for family in sims.families():
        family_console.print(f"also resolvable: [bold]{family}[/bold]")
    return 0


LIST_COLUMNS = ("sim", "tags", "proprio", "action", "loads", "origin")


def describe(name: str) -> dict:
    """A sim as ``flywheel sims list`` shows it. The sim is built (cheap: no episode is run), since
    only building it shows that a plug-in's module imports and its factory returns a ``SimEnv``."""
    import sims

    entry = {"name": name, "tags": [], "proprio_dim": None, "action_dim": None, "loads": False, "error": None,
             "origin": sims.origin_of(name)}
    try:
        env = sims.make(name)
    except Exception as exc:  # a listing reports every broken sim, whatever broke it, and goes on
        entry.update(tags=list(sims.tags_of(name)), error=f"{type(exc).__name__}: {exc}")
        return entry
    try:
        entry.update(tags=list(sims.tags_of(name)), proprio_dim=env.embodiment.proprio_dim,
                     action_dim=env.embodiment.action_dim, loads=True)
    finally:
        env.close()
    return entry


def list_cells(d: dict, markup: bool = False) -> list[str]:
    loads = "yes" if d["loads"] else f"NO: {d['error']}"
    if markup and not d["loads"]:
        loads = f"[red]{escape(loads)}[/red]"
    dims = ["" if d[k] is None else str(d[k]) for k in ("proprio_dim", "action_dim")]
    return [d["name"], ", ".join(d["tags"]), *dims, loads, escape(d["origin"]) if markup else d["origin"]]


# ---------------------------------------------------------------------- check


def check_command(argv: list[str]) -> int:
    from sims.conformance import CHECKS, DEFAULT_EPISODES, MIN_DEMO_SUCCESS

    ap = argparse.ArgumentParser(prog="flywheel sims check", description="Run the conformance suite on sims.")
    ap.add_argument("names", nargs="*", help="registered sim names")
    ap.add_argument("--all", action="store_true", help="check every registered sim")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(CHECKS)}")
    ap.add_argument("--episodes", type=int, default=DEFAULT_EPISODES, help="demonstrator episodes")
    ap.add_argument("--min-success", type=float, default=MIN_DEMO_SUCCESS)
    args = ap.parse_args(argv)
    import sims
    from sims.conformance import run_one, CheckContext

    names = sims.names() if args.all else args.names
    if not names:
        ap.error("name at least one sim, or pass --all")
    for name in names:
        sims.tags_of(name)  # unknown names fail here, before any check runs
    only = args.only.split(",") if args.only else list(CHECKS)
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        ap.error(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")

    failed = 0
    for name in names:
        ctx = CheckContext(name, args.episodes, args.min_success)
        table = Table(title=f"flywheel sims check {name}")
        for column in ("check", "result", "seconds", "detail"):
            table.add_column(column)
        for check_name in only:
            result = run_one(ctx, check_name)
            failed += not result.ok
            colour = {"pass": "green", "fail": "red", "skip": "yellow"}[result.status]
            table.add_row(check_name, f"[{colour}]{result.status}[/{colour}]", f"{result.seconds:.1f}", result.detail)
        console.print(table)
    console.print(f"{failed} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0


# ---------------------------------------------------------------------- rollout


@dataclass
class RolloutRow:
    sim: str
    proprio_shape: list[int]
    action_shape: list[int]
    image_shape: list[int] | None
    steps_per_second: float
    demo_success: float | None
    demo_episodes: int
    seconds: float


def rollout_task(cfg) -> int:
    from configs.schema import SimsRolloutConfig, to_dataclass

    config = to_dataclass(cfg, SimsRolloutConfig)
    rows = rollout(config)
    print_rollout_table(rows, camera=config.camera)
    if config.json_out:
        write_json_atomic(config.json_out, [asdict(r) for r in rows])
        console.print(f"wrote {config.json_out}")
    return 0


def rollout(config) -> list[RolloutRow]:
    """Roll out the demonstrator of every selected sim; time raw stepping.

    A tour of every registered sim skips a plug-in that cannot be loaded or made, saying so:
    one broken third-party package must not hide the others' rows. A sim named with ``sim=``
    is not skipped: its error is the answer.
    """
    import sims
    from sims.rendering import mujoco_rendering_problem

    if config.episodes < 0:
        raise ValueError(f"episodes must be >= 0, got {config.episodes}")
    tour = config.sim is None
    if not tour:
        targets = [(config.sim.name, config.sim.make_kwargs())]
    else:
        targets = [(n, {}) for n in sims.names() if all(t in sims.tags_of(n) for t in config.tags)]
    for name, kwargs in targets:  # fail on bad names and configs before any rollout
        sims.check_config(name, dict(kwargs))
    camera = config.camera
    if camera and mujoco_rendering_problem():
        console.print(f"[yellow]camera off: {mujoco_rendering_problem()}[/yellow]")
        camera = False

    rows = []
    for name, kwargs in track(targets, description="rolling out", console=console, transient=True):
        try:
            rows.append(rollout_one(name, kwargs, config, camera))
        except sims.SimPluginError as exc:
            if not tour:
                raise
            console.print(f"[yellow]skipping {escape(name)}: {escape(str(exc))}[/yellow]")
    return rows


def rollout_one(name: str, kwargs: dict, config, camera: bool) -> RolloutRow:
    import sims
    from sims.conformance import demo_success_rate
    from sims.timing import steps_per_second

    start = time.perf_counter()
    env = sims.make(name, **kwargs)
    sps = steps_per_second(env, steps=300, seed=config.seed)
    obs, _ = env.reset(seed=config.seed)
    image_shape = None
    if camera:
        cam_kwargs = {**kwargs, "camera": True, "image_size": config.image_size}
        try:
            image_shape = list(sims.make(name, **cam_kwargs).reset(seed=config.seed)[0]["image"].shape)
        except sims.RenderingUnavailable as exc:
            console.print(f"[yellow]{name}: {exc}[/yellow]")
    success = None
    if env.defines_success and config.episodes:
        success = demo_success_rate(env, config.episodes, first_seed=config.seed)
    row = RolloutRow(
        sim=name,
        proprio_shape=list(obs["proprio"].shape),
        action_shape=list(env.action_space.shape),
        image_shape=image_shape,
        steps_per_second=round(sps, 1),
        demo_success=success,
        demo_episodes=config.episodes if success is not None else 0,
        seconds=round(time.perf_counter() - start, 2),
    )
    env.close()
    return row


def print_rollout_table(rows: list[RolloutRow], camera: bool) -> None:
    table = Table(title="Simulator rollouts (random actions for steps/s; scripted demonstrator for success)")
    for column in ("sim", "proprio", "action", "image", "steps/s", "demo success", "seconds"):
        table.add_column(column, justify="right" if column in ("steps/s", "seconds") else "left")
    for r in rows:
        success = "n/a (no success defined)" if r.demo_success is None else f"{r.demo_success:.0%} of {r.demo_episodes}"
        image = "x".join(map(str, r.image_shape)) if r.image_shape else ("camera off" if not camera else "unavailable")
        table.add_row(r.sim, str(tuple(r.proprio_shape)), str(tuple(r.action_shape)), image,
                      f"{r.steps_per_second:,.0f}", success, f"{r.seconds:.1f}")
    console.print(table)
