"""Settings of the flywheel side by side, over seeds, and beside SAC.

    python benchmarks/compare_capability.py --name NAME \\
        --variant "utd 0.25=probe_utd025,probe_utd025_seed1" \\
        --variant "utd 0.25 + prior=probe_utd025_prior,probe_utd025_prior_seed1" \\
        [--sac benchmarks/results/sac_every_cycle/sac_mujoco_reacher-twin.json]

Each ``--variant LABEL=STEM,STEM,...`` names ``bench_capability.py`` results (one run, one
seed each: ``benchmarks/results/<STEM>.json``); ``--sac`` a ``benchmarks/baselines/sac.py``
result evaluated on the same fixed episodes. Prints, per checkpoint of env steps, each
variant's success and eval return as mean ± standard error over its seeds, and the sim steps
and training wall time they took; writes ``<NAME>.json`` and a PNG of success and return
against env steps, sim steps and wall time (``baselines.sac.plot``). Runs whose evaluation
differs (sim, episodes, seed) from the first one's are refused, naming the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.baselines import sac  # noqa: E402
from benchmarks.bench_capability import RESULTS, flywheel_checkpoints  # noqa: E402
from sims.files import write_json_atomic  # noqa: E402


def variant(text: str) -> tuple[str, list[str]]:
    label, sep, stems = text.partition("=")
    if not sep or not label.strip() or not stems.strip():
        raise argparse.ArgumentTypeError(f"LABEL=STEM[,STEM...], got {text!r}")
    return label.strip(), [s.strip() for s in stems.split(",") if s.strip()]


def evaluation_of(result: dict) -> tuple:
    """What must match for two curves to be compared: the sim, its episodes and their seeds."""
    config = result["config"]
    return config["reference"]["name"], config["eval"]["episodes"], config["eval"]["seed"]


def load_variant(stems: list[str], results: Path) -> list[tuple[Path, dict]]:
    runs = []
    for stem in stems:
        path = results / f"{stem}.json"
        if not path.is_file():
            raise SystemExit(f"--variant: no result {path} (run benchmarks/bench_capability.py --name {stem} first)")
        runs.append((path, json.loads(path.read_text())))
    return runs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="results file stem")
    ap.add_argument("--variant", type=variant, action="append", required=True, help="LABEL=STEM,STEM,...")
    ap.add_argument("--sac", default=None, help="a baselines/sac.py result JSON on the same fixed episodes")
    ap.add_argument("--results", default=str(RESULTS), help="where the bench_capability results are")
    ap.add_argument("--up-to", type=int, default=None, help="only checkpoints at or below these env steps")
    args = ap.parse_args(argv)

    results = Path(args.results)
    curves, reference, table = {}, None, {}
    for label, stems in args.variant:
        runs = load_variant(stems, results)
        for path, result in runs:
            ev = evaluation_of(result)
            if reference is None:
                reference = (path, ev)
            elif ev != reference[1]:
                raise SystemExit(f"{path}: evaluated on {ev}, not on {reference[1]} like {reference[0]}")
        per_seed = [flywheel_checkpoints(result["curve"]) for _, result in runs]
        length = min(len(p) for p in per_seed)  # runs of different lengths: their common checkpoints
        summary = sac.summarize([{"checkpoints": p[:length]} for p in per_seed])
        name = f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        curves[name], table[name] = summary, {"stems": stems, "summary": summary}
    if args.sac:
        baseline = json.loads(Path(args.sac).read_text())
        if (baseline["sim"], baseline["eval_episodes"], baseline["eval_seed"]) != reference[1]:
            raise SystemExit(f"--sac {args.sac}: evaluated on {(baseline['sim'], baseline['eval_episodes'], baseline['eval_seed'])}"
                             f", not on {reference[1]} like {reference[0]}")
        name = f"SAC from scratch ({len(baseline['seeds'])} seeds)"
        curves[name], table[name] = baseline["summary"], {"source": args.sac, "summary": baseline["summary"]}

    if args.up_to is not None:
        curves = {k: [r for r in v if r["env_steps"] <= args.up_to] for k, v in curves.items()}
        table = {k: {**v, "summary": curves[k]} for k, v in table.items()}
    sim, episodes, _ = reference[1]
    print(f"{sim}: {episodes} fixed eval episodes; mean ± s.e. over seeds")
    width = max(len(name) for name in curves)
    print(f"{'variant':<{width}} {'env steps':>9} {'sim steps':>10} {'success':>15} {'return':>17} {'train wall s':>13}")
    for name, summary in curves.items():
        for r in summary:
            print(f"{name:<{width}} {r['env_steps']:>9} {r['sim_steps']:>10.0f} {pm(r, 'success_rate', 3):>15} "
                  f"{pm(r, 'mean_return', 2):>17} {pm(r, 'wall_s', 0):>13}")
    out = results / args.name
    write_json_atomic(out.with_suffix(".json"), {"sim": sim, "eval_episodes": episodes, "variants": table})
    sac.plot(curves, f"{sim}: {episodes} fixed eval episodes, mean ± s.e. over seeds", out.with_suffix(".png"))
    print(f"wrote {out}.json and .png")


def pm(row: dict, key: str, digits: int) -> str:
    se = row.get(f"{key}_se")
    return f"{row[key]:.{digits}f} ± {'n/a' if se is None else f'{se:.{digits}f}'}"


if __name__ == "__main__":
    main()
