"""``flywheel routes``: the routes (input modalities -> output modality) a model supports.

    flywheel routes [agent=tiny|small|base] [agent.experts=[understand,action]] [json_out=FILE]
    flywheel routes --checkpoint DIR [--json-out FILE]

With a checkpoint, the config stored beside its weights decides (the weights are not read).
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from rich.console import Console
from rich.table import Table

from sims.files import write_json_atomic

console = Console()
if not console.is_terminal:
    console.width = 160


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if any(a == "--checkpoint" or a.startswith("--checkpoint=") for a in argv):
        ap = argparse.ArgumentParser(prog="flywheel routes", description="Routes a checkpoint supports.")
        ap.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + model.safetensors)")
        ap.add_argument("--json-out", help="also write the table as JSON here")
        args = ap.parse_args(argv)
        from policies import checkpoint

        header = checkpoint.read_header(args.checkpoint)
        return show(checkpoint.read_config(args.checkpoint), args.json_out,
                     source=f"checkpoint {args.checkpoint}", frozen=header.get("frozen", []))
    from flywheel.hydra import run_hydra

    return run_hydra("flywheel routes", "routes", routes_task, argv)


def model_config_of(agent_cfg):
    """``configs.schema.AgentConfig`` -> ``policies.config.ModelConfig`` (the checkpoint's, if one is set)."""
    from policies import checkpoint
    from policies.config import model_config

    if agent_cfg.checkpoint:
        return checkpoint.read_config(agent_cfg.checkpoint)
    overrides = {f.name: getattr(agent_cfg, f.name) for f in fields(agent_cfg)
                 if f.name not in ("size", "device", "checkpoint")}
    if overrides.get("experts") is not None:
        overrides["experts"] = tuple(overrides["experts"])
    return model_config(agent_cfg.size, **overrides)


def routes_task(cfg) -> int:
    from configs.schema import RoutesConfig, to_dataclass

    config = to_dataclass(cfg, RoutesConfig)
    agent = config.agent
    source = f"checkpoint {agent.checkpoint}" if agent.checkpoint else f"agent={agent.size}"
    return show(model_config_of(agent), config.json_out, source=source)


def show(model_cfg, json_out: str | None, source: str, frozen: list[str] = ()) -> int:
    from policies.routes import route_table

    rows = route_table(model_cfg)
    console.print(f"model: {source}", soft_wrap=True)
    console.print(f"experts: {', '.join(model_cfg.experts)}" + (f"; frozen: {', '.join(frozen)}" if frozen else ""))
    table = Table(title="Routes through one model")
    for column in ("route", "inputs", "output", "experts", "supported", "what", "trained by stage",
                   "pretraining metric"):
        table.add_column(column)
    for r in rows:
        ok = "[green]yes[/green]" if r["supported"] else f"[red]no[/red] (needs {', '.join(r['missing'])})"
        table.add_row(r["route"], " + ".join(r["inputs"]), r["output"], ", ".join(r["experts"]), ok,
                      r["description"], r["trained"], r["metric"])
    console.print(table)
    if json_out:
        write_json_atomic(json_out, rows)
        console.print(f"wrote {json_out}")
    return 0
