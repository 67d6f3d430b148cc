"""``flywheel fidelity``: how closely candidate sims reproduce a reference, on its probe set.

    flywheel fidelity --reference SIM --candidate SPEC [--candidate SPEC ...] [hydra overrides]

A SPEC is ``NAME`` or ``NAME:key=value,key=value`` with ``sims.make`` keywords, e.g.
``dmc/cartpole-swingup:fidelity=0.5``, ``pybullet/cartpole-swingup`` (a twin of
``mujoco/cartpole-swingup-twin``), ``learned/dmc/cartpole-swingup:checkpoint=runs/wm,correct_every=4``,
``dmc/cartpole-swingup:params.mass_scale=1.2``. Overrides: ``probes=8 horizon=50 seed=0
out=DIR`` (``configs/fidelity.yaml``). Prints the table and writes ``DIR/fidelity.json`` and
``DIR/fidelity.png`` (error against horizon, one line per candidate).
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table

from sims.files import write_json_atomic

console = Console()
if not console.is_terminal:
    console.width = 160

REPORT_HORIZONS = (1, 10, 25, 50, 100)


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    ap = argparse.ArgumentParser(prog="flywheel fidelity", add_help=False)
    ap.add_argument("--reference")
    ap.add_argument("--candidate", action="append", default=[])
    args, overrides = ap.parse_known_args(argv)
    if args.reference is not None:
        overrides.append(f"reference={_quote(args.reference)}")
    if args.candidate:
        overrides.append("candidates=[" + ",".join(_quote(c) for c in args.candidate) + "]")
    from flywheel.hydra import run_hydra

    return run_hydra("flywheel fidelity", "fidelity", fidelity_task, overrides)


def fidelity_task(cfg) -> int:
    from configs.schema import FidelityConfig, to_dataclass

    config = to_dataclass(cfg, FidelityConfig)
    report = measure(config)
    print_table(report)
    console.print(f"wrote {config.out}/fidelity.json and {config.out}/fidelity.png")
    return 0


def measure(config) -> dict[str, Any]:
    import sims
    import world_model as wm
    from world_model.fidelity import plot_curves

    if not config.candidates:
        raise ValueError("name at least one candidate: --candidate SIM[:key=value,...]")
    sims.tags_of(config.reference)  # an unknown reference fails before any work
    candidates = [parse_spec(spec) for spec in config.candidates]
    for name, kwargs in candidates:
        sims.check_config(name, dict(kwargs))
    probes = wm.probe_set(config.reference, seed=config.seed, probes=config.probes, horizon=config.horizon)
    results = [wm.fidelity(name, probes, **kwargs)
               for name, kwargs in track(candidates, description="measuring", console=console, transient=True)]
    rows = [{**r.as_dict(), "candidate": spec, "sim": r.candidate} for spec, r in zip(config.candidates, results)]
    report = {"reference": config.reference, "probes": probes.size, "horizon": probes.horizon, "seed": probes.seed,
              "scale": probes.scale.tolist(), "candidates": rows}
    write_json_atomic(f"{config.out}/fidelity.json", report)
    plot_curves(results, f"{config.out}/fidelity.png", labels=list(config.candidates))
    return report


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME:key=value,...`` -> (NAME, kwargs); ``params.X=v`` goes into ``kwargs["params"]``."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"candidate {spec!r} names no sim")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"candidate {spec!r}: expected key=value, got {item!r}")
        key, parsed = key.strip(), _value(value.strip())
        if key.startswith("params."):
            kwargs.setdefault("params", {})[key.removeprefix("params.")] = parsed
        else:
            kwargs[key] = parsed
    return name, kwargs


def print_table(report: dict[str, Any]) -> None:
    horizons = [h for h in REPORT_HORIZONS if h <= report["horizon"]]
    table = Table(title=f"Fidelity against {report['reference']} ({report['probes']} probes x {report['horizon']} "
                        f"steps, seed {report['seed']}); error = mean |candidate - reference| / reference spread")
    table.add_column("candidate")
    for column in ["fidelity"] + [f"error h={h}" for h in horizons] + ["diverges at", "seconds"]:
        table.add_column(column, justify="right")
    for row in report["candidates"]:
        curve = row["curve"]
        table.add_row(row["candidate"], f"{row['fidelity']:.4f}", *(f"{curve[h - 1]:.2e}" for h in horizons),
                      "never" if row["diverges_at"] is None else str(row["diverges_at"]), f"{row['seconds']:.2f}")
    console.print(table)


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _quote(text: str) -> str:
    """A Hydra override value, quoted so ':', ',' and '=' inside it survive."""
    if "'" in text or "\\" in text:
        raise ValueError(f"quotes and backslashes are not supported in {text!r}")
    return f"'{text}'"
