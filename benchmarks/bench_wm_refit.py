"""Does the learned simulator get more faithful as the flywheel practises in it?

    python benchmarks/bench_wm_refit.py [--sim mujoco/reacher-twin] [--correct-every 8] [--cycles 4]
        [--transitions 1500] [--fit-steps 200] [--refit-steps 200] [--pretrained scratch]
        [--work runs/bench-wm-refit] [--name bench_wm_refit] [key=value ...]

Fits a world model of ``--sim`` on ``--transitions`` collected transitions with ``--fit-steps``
steps (``flywheel world-model fit``'s recipe at a small budget, so that there is room to
improve), then runs ``flywheel run`` in ``learned/<sim>`` (``correct_every``) with
``world_model.refit=true`` for ``--cycles`` cycles (``key=value``: any other run override).
Each cycle's refit fine-tunes the world model on the engine's steps behind its rollouts beside
the recipe's transitions (``flywheel.refit``); the run records the fidelity of each version on
the reference's probe set (``cycles.jsonl``).

The control separates the flywheel's data from the extra optimizer steps: the same chain of
refits (same steps, same seeds) on the recipe's transitions alone, each version measured the
same way. Prints a table, writes ``benchmarks/results/<name>.json`` and ``<name>.png``
(fidelity against cycle, both chains and the starting model).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omegaconf import OmegaConf  # noqa: E402

import world_model as wm  # noqa: E402
from configs.run_schema import RunConfig  # noqa: E402
from configs.schema import to_dataclass  # noqa: E402
from flywheel.controller import run, training_fidelity  # noqa: E402
from flywheel.learned_sim import fit  # noqa: E402
from flywheel.logger import read_cycles  # noqa: E402
from flywheel.refit import Refit, refit_seed, version_dir  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", default="mujoco/reacher-twin", help="the engine sim (the reference)")
    ap.add_argument("--correct-every", default="8")
    ap.add_argument("--cycles", type=int, default=4)
    ap.add_argument("--transitions", type=int, default=1500, help="the starting fit's collected transitions")
    ap.add_argument("--fit-steps", type=int, default=200, help="the starting fit's optimizer steps")
    ap.add_argument("--refit-steps", type=int, default=200)
    ap.add_argument("--pretrained", default="scratch")
    ap.add_argument("--work", default="runs/bench-wm-refit", help="holds world-model/, run/ and control/")
    ap.add_argument("--name", default="bench_wm_refit", help="results file stem")
    ap.add_argument("overrides", nargs="*", help="flywheel run overrides, e.g. episodes_per_cycle=8")
    args = ap.parse_args()
    work = Path(args.work)
    run_dir = work / "run"
    if run_dir.exists() and not read_cycles(run_dir):
        sys.exit(f"{run_dir} exists without a completed cycle: remove it or pick another --work")
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.from_dotlist([
        f"sim.name=learned/{args.sim}", f"sim.correct_every={args.correct_every}",
        f"sim.checkpoint={work / 'world-model'}", f"reference.name={args.sim}", f"pretrained={args.pretrained}",
        f"cycles={args.cycles}", f"run_dir={run_dir}", "if_exists=resume", "world_model.refit=true",
        f"world_model.refit_steps={args.refit_steps}", f"world_model.collect.steps={args.transitions}",
        f"world_model.train.steps={args.fit_steps}", *args.overrides]))
    config = to_dataclass(cfg, RunConfig)

    began = time.perf_counter()
    if not (work / "world-model" / "config.json").is_file():
        fit(args.sim, work / "world-model", config.world_model)
    fit_seconds = time.perf_counter() - began
    began = time.perf_counter()
    run(config, console=print)
    run_seconds = time.perf_counter() - began
    records = read_cycles(run_dir)
    start = records[0]["fidelity"]
    began = time.perf_counter()
    control = recipe_only_chain(config, work / "control", len(records))
    control_seconds = time.perf_counter() - began

    rows = [{"cycle": r["cycle"], "practised_in": r["fidelity"], "refitted": r["world_model"]["fidelity"],
             "recipe_only": c, "flywheel_transitions": r["world_model"]["flywheel_transitions"],
             "recipe_transitions": r["world_model"]["recipe_transitions"], "final_loss": r["world_model"]["final_loss"],
             "refit_seconds": r["seconds"].get("world_model"), "cycle_seconds": r["seconds"]["cycle"],
             "capability": r["capability"]} for r, c in zip(records, control)]
    print(f"\nfidelity of learned/{args.sim} (correct_every={args.correct_every}) on the probe set of {args.sim}; "
          f"the starting model: {start:.4f}")
    print(f"{'cycle':>5} {'practised in':>12} {'refitted':>9} {'recipe only':>11} {'flywheel tr.':>12} "
          f"{'refit s':>7} {'cycle s':>7}")
    for r in rows:
        print(f"{r['cycle']:>5} {r['practised_in']:>12.4f} {r['refitted']:>9.4f} {r['recipe_only']:>11.4f} "
              f"{r['flywheel_transitions']:>12} {r['refit_seconds'] or 0:>7.1f} {r['cycle_seconds']:>7.1f}")
    result = {"sim": args.sim, "correct_every": args.correct_every, "cycles": len(records),
              "start_fidelity": start, "rows": rows, "transitions": args.transitions, "fit_steps": args.fit_steps,
              "refit_steps": args.refit_steps, "pretrained": args.pretrained, "overrides": args.overrides,
              "episodes_per_cycle": config.episodes_per_cycle, "seconds": {"fit": round(fit_seconds, 1),
              "run": round(run_seconds, 1), "control": round(control_seconds, 1)},
              "machine": platform.platform(), "run_dir": str(run_dir)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", result)
    figure(result, RESULTS / f"{args.name}.png")
    print(f"results: {RESULTS / args.name}.json, .png")


def recipe_only_chain(config: RunConfig, out: Path, cycles: int) -> list[float]:
    """The run's chain of refits, same steps and seeds, on the recipe's transitions alone: each
    version's fidelity, measured as the run measures its own."""
    refit = Refit(config, out)
    simulator, fidelities = wm.load_checkpoint(config.sim.checkpoint), []
    for cycle in range(cycles):
        train = dataclasses.replace(config.world_model.train, steps=config.world_model.refit_steps,
                                    seed=refit_seed(config.seed, cycle))
        simulator = wm.fit(refit.recipe_data(), config=train, init=simulator)
        path = version_dir(out, cycle + 1)
        wm.save_checkpoint(simulator, path)
        sim = dataclasses.replace(config.sim, checkpoint=str(path))
        fidelities.append(training_fidelity(dataclasses.replace(config, sim=sim), console=lambda *_: None)["fidelity"])
    return fidelities


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = [0] + [r["cycle"] + 1 for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(versions, [result["start_fidelity"]] + [r["refitted"] for r in result["rows"]], marker="o",
            label="refitted on the flywheel's engine steps + recipe data")
    ax.plot(versions, [result["start_fidelity"]] + [r["recipe_only"] for r in result["rows"]], marker="s",
            linestyle="--", label="same refits on the recipe data alone")
    ax.set_xticks(versions)
    ax.axhline(result["start_fidelity"], color="grey", linewidth=0.8, linestyle=":", label="starting model")
    ax.set(xlabel="world-model version (after cycle v - 1's refit)", ylabel="fidelity on the probe set",
           title=f"learned/{result['sim']} (correct_every={result['correct_every']}): fidelity per cycle")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure_atomic(str(path), fig, dpi=110)


if __name__ == "__main__":
    main()
