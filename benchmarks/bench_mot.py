"""The MoT backbone against a dense transformer with the same per-token FLOPs.

    python benchmarks/bench_mot.py [--size small] [--batch 32] [--tokens 128] [--repeats 7] [--out FILE]

Both models have the same width, depth, heads and FFN, so every token costs the same
FLOPs; the MoT holds four experts (understand, image, video, action) and routes each
token to one of them, the dense model runs every token through one set of weights. Both
see the same tokens and the same attention mask (the agent's training layout: a clean
prefix, a clean frame, a noisy imagined chunk, a noisy action chunk).

Measured, in one run and interleaved so machine load hits both alike:

- training step: forward + backward + AdamW at ``batch`` x ``tokens``;
- inference latency: one no-grad forward at batch 1 and at ``batch``;
- the same for an interleaved layout whose experts' tokens are not contiguous (the
  general gather/scatter path instead of slices).

The machine is shared and noisy, so the numbers to quote are the MoT / dense ratios
(medians of ``repeats``), not absolute times. Prints a table and writes JSON
(default ``benchmarks/results/bench_mot.json``). Target: training step <= 1.25x dense.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from policies.config import SIZES  # noqa: E402
from policies.dense import DenseTransformer  # noqa: E402
from policies.layout import Layout, Segment  # noqa: E402
from policies.mot import MoT, routing_for  # noqa: E402
from sims.files import write_json_atomic  # noqa: E402

TARGET_TRAIN_RATIO = 1.25


def layouts(tokens: int) -> dict[str, Layout]:
    q = tokens // 8
    grouped = Layout((
        Segment("text", "understand", 3 * q, causal=True),
        Segment("image", "image", q),
        Segment("future", "video", 3 * q, noisy=True),
        Segment("action", "action", tokens - 7 * q, noisy=True),
    ))
    # Same expert shares, but understand and video come in two runs each: the index path.
    interleaved = Layout((
        Segment("text", "understand", 2 * q), Segment("future", "video", 2 * q),
        Segment("proprio", "understand", q), Segment("image", "image", q),
        Segment("future", "video", q, noisy=True), Segment("action", "action", tokens - 7 * q, noisy=True),
    ))
    return {"grouped": grouped, "interleaved": interleaved}


def dense_layout(layout: Layout) -> Layout:
    """The same segments and mask, every token routed to one expert."""
    return Layout(tuple(replace(s, expert="understand") for s in layout.segments))


def time_it(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def train_step(model, x, run):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        run(model, x).pow(2).mean().backward()
        opt.step()

    return step


def infer(model, x, run):
    @torch.no_grad()
    def fwd():
        run(model, x)

    return fwd


def bench(size: str, batch: int, tokens: int, repeats: int, warmup: int) -> dict:
    cfg = SIZES[size]
    torch.manual_seed(0)
    mot = MoT(cfg)
    dense = DenseTransformer.like(cfg)
    params = {"mot": sum(p.numel() for p in mot.parameters()), "dense": sum(p.numel() for p in dense.parameters())}
    results: dict = {"layouts": {}}
    for name, layout in layouts(tokens).items():
        mask = layout.mask()
        dlay = dense_layout(layout)
        share = {e: layout.experts().count(e) for e in cfg.experts}
        run_mot = lambda m, x, layout=layout: m(x, layout)[0]  # noqa: E731
        run_dense = lambda m, x, mask=mask: m(x, mask)  # noqa: E731
        run_mot_one = lambda m, x, dlay=dlay: m(x, dlay)[0]  # noqa: E731  (MoT code, one expert)
        mot_one = MoT(replace(cfg, experts=("understand",)))
        xb = torch.randn(batch, tokens, cfg.d_model)
        x1 = torch.randn(1, tokens, cfg.d_model)
        cases = {
            "train_step": [("mot", train_step(mot, xb, run_mot)), ("dense", train_step(dense, xb, run_dense)),
                           ("mot_1expert", train_step(mot_one, xb, run_mot_one))],
            "infer_batch1": [("mot", infer(mot, x1, run_mot)), ("dense", infer(dense, x1, run_dense))],
            f"infer_batch{batch}": [("mot", infer(mot, xb, run_mot)), ("dense", infer(dense, xb, run_dense))],
        }
        row = {"tokens_per_expert": share, "contiguous_routing": routing_for(layout.experts()).in_order}
        for case, fns in cases.items():
            for _, fn in fns:
                time_it(fn, warmup)
            times = {label: [] for label, _ in fns}
            for _ in range(repeats):  # interleave: load spikes hit every model alike
                for label, fn in fns:
                    times[label] += time_it(fn, 1)
            med = {label: statistics.median(t) for label, t in times.items()}
            row[case] = {
                "median_s": {k: round(v, 5) for k, v in med.items()},
                "min_s": {k: round(min(t), 5) for k, t in times.items()},
                "mot_over_dense": round(med["mot"] / med["dense"], 3),
                "mot_over_dense_min": round(min(times["mot"]) / min(times["dense"]), 3),
            }
        results["layouts"][name] = row
    results.update(size=size, batch=batch, tokens=tokens, repeats=repeats, params=params,
                   config={k: v for k, v in cfg.to_dict().items() if k in ("d_model", "n_layers", "n_heads", "ffn_mult")})
    train = results["layouts"]["grouped"]["train_step"]["mot_over_dense"]
    results["target"] = {"train_step_mot_over_dense_max": TARGET_TRAIN_RATIO, "measured": train,
                         "met": train <= TARGET_TRAIN_RATIO}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small", choices=sorted(SIZES))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_mot.json"))
    args = ap.parse_args()
    if args.tokens < 16 or args.batch < 1 or args.repeats < 1:
        ap.error("--tokens must be >= 16, --batch and --repeats >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from rich.console import Console
    from rich.table import Table

    results = bench(args.size, args.batch, args.tokens, args.repeats, args.warmup)
    results["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                          "torch": torch.__version__, "threads": torch.get_num_threads()}
    console = Console()
    table = Table(title=f"MoT (4 experts) vs dense, size={args.size}, {args.batch} x {args.tokens} tokens, "
                        f"{torch.get_num_threads()} threads (median of {args.repeats})")
    for column in ("layout", "measure", "MoT ms", "dense ms", "MoT / dense", "MoT-1-expert ms"):
        table.add_column(column, justify="left" if column in ("layout", "measure") else "right")
    for name, row in results["layouts"].items():
        for case in ("train_step", "infer_batch1", f"infer_batch{args.batch}"):
            med = row[case]["median_s"]
            table.add_row(name, case, f"{med['mot'] * 1e3:.1f}", f"{med['dense'] * 1e3:.1f}",
                          f"{row[case]['mot_over_dense']:.3f}",
                          f"{med['mot_1expert'] * 1e3:.1f}" if "mot_1expert" in med else "")
    console.print(table)
    target = results["target"]
    console.print(f"training step MoT/dense = {target['measured']:.3f} (target <= {TARGET_TRAIN_RATIO}): "
                  + ("[green]met[/green]" if target["met"] else "[red]not met[/red]"))
    write_json_atomic(args.out, results)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
