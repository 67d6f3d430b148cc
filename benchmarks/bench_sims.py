"""Simulator throughput per registered sim, and how far the cross-engine twins drift apart.

    python benchmarks/bench_sims.py [--steps 1000] [--image-size 64] [--tag mujoco] [--out FILE]

Prints two tables and writes JSON (default ``benchmarks/results/bench_sims.json``):

- raw steps/s and steps/s with the camera on; the machine is shared and noisy, so the
  number to quote is the camera-on / raw ratio measured in one run, not an absolute rate
  (each rate is the best of ``--repeats`` runs);
- for each MuJoCo/PyBullet twin pair, the normalized error against horizon from the same
  state under the same actions, and the PyBullet / MuJoCo speed ratio of the pair.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sims  # noqa: E402
from sims.files import write_json_atomic  # noqa: E402
from sims.rendering import mujoco_rendering_problem  # noqa: E402
from sims.timing import steps_per_second  # noqa: E402
from sims.twins import TWIN_PAIRS, format_drift, twin_drift  # noqa: E402


def bench(name: str, steps: int, image_size: int, repeats: int) -> dict:
    raw_env = sims.make(name)
    raw = max(steps_per_second(raw_env, steps, seed=r) for r in range(repeats))
    row = {"sim": name, "tags": list(sims.tags_of(name)), "raw_steps_per_s": round(raw, 1),
           "camera_steps_per_s": None, "camera_over_raw": None, "image_size": image_size}
    try:
        cam_env = sims.make(name, camera=True, image_size=image_size)
    except sims.RenderingUnavailable as exc:
        row["camera_skipped"] = str(exc)
        return row
    camera = max(steps_per_second(cam_env, max(steps // 4, 50), seed=r) for r in range(repeats))
    row["camera_steps_per_s"] = round(camera, 1)
    row["camera_over_raw"] = round(camera / raw, 4)
    cam_env.close()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", help="only sims with this tag")
    ap.add_argument("--drift-horizon", type=int, default=200, help="twin drift horizon in control steps")
    ap.add_argument("--drift-probes", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_sims.json"))
    args = ap.parse_args()
    if args.steps < 10 or args.repeats < 1:
        ap.error("--steps must be >= 10 and --repeats >= 1")

    from rich.console import Console
    from rich.table import Table

    console = Console()
    if mujoco_rendering_problem():
        console.print(f"[yellow]camera columns skipped for MuJoCo sims: {mujoco_rendering_problem()}[/yellow]")
    names = sims.names(tag=args.tag)
    start = time.perf_counter()
    rows = [bench(n, args.steps, args.image_size, args.repeats) for n in names]

    table = Table(title=f"Simulator steps/s (random actions, best of {args.repeats}; camera {args.image_size}x{args.image_size})")
    for column in ("sim", "raw steps/s", "camera steps/s", "camera / raw"):
        table.add_column(column, justify="left" if column == "sim" else "right")
    for r in rows:
        cam = "skipped" if r["camera_steps_per_s"] is None else f"{r['camera_steps_per_s']:,.0f}"
        ratio = "" if r["camera_over_raw"] is None else f"{r['camera_over_raw']:.3f}"
        table.add_row(r["sim"], f"{r['raw_steps_per_s']:,.0f}", cam, ratio)
    console.print(table)

    drift = [twin_drift(pair, probes=args.drift_probes, horizon=args.drift_horizon) for pair in TWIN_PAIRS]
    print(format_drift(drift))
    drift_rows = []
    for d in drift:
        row = d.as_dict()
        row["twin_over_reference_speed"] = round(d.steps_per_second[d.twin] / d.steps_per_second[d.reference], 4)
        row["apart_at_step"] = d.first_step_beyond(1e-6)
        drift_rows.append(row)

    payload = {
        "benchmark": "bench_sims",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor()},
        "settings": {"steps": args.steps, "image_size": args.image_size, "repeats": args.repeats},
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
        "twin_drift": drift_rows,
    }
    write_json_atomic(args.out, payload)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
