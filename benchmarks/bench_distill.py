"""Where the flywheel's learning stalls: one learning phase on one cycle of choose=sim rollouts.

    python benchmarks/bench_distill.py [--pretrained DIR] [--episodes 32] [--eval-episodes 40]
        [--steps 200] [--variant NAME:key=value,...] [--name bench_distill]

From a pretrained checkpoint (default: the one ``flywheel run`` starts from), in one process
and without Ray:

1. the run's default rollouts, ``choose=sim`` over ``n_candidates`` (``flywheel.rollout.collect``):
   the training sim's look-ahead is the teacher, and its success is what distillation could reach;
2. each variant trains a copy of the starting weights for ``--steps`` optimizer steps on those
   rows with the learners' objective (``flywheel.objective.batch_loss``, the learners' optimizer
   ``make_optimizer`` and their gradient clipping at 1.0; batches of ``learner.batch_size`` drawn
   uniformly), its knobs the run's defaults changed by the variant's overrides;
3. before and after, on the rows of the held-out episodes (every fifth): the imagination's error
   against the realized future and against holding the latest observed step, both in units of
   the proprio tokenizer's standard deviation (mean squared), and the action expert's error
   against the executed actions on each route: acting on the observation alone, on its own
   freshly imagined future, on the future the rollout imagined for the chunk, on the realized
   future, and the zero action;
4. capability as ``flywheel.cycle.evaluate`` measures it (fixed seeds ``eval.seed``, planning
   with ``eval.n_candidates``), and acting without planning.

``--prior-data`` adds the variant "defaults + prior data": every step also takes the
pretraining objectives of the video and action stages (``policies.pretrain.objectives``) on a
batch of the same size drawn from the starter's own pretraining data (its run directory's
``config.yaml`` names it; the data cache is regenerated if missing), summed with the
flywheel's loss: the learners' ``learner.prior_coef=1`` (``flywheel.prior``), in one phase.

Prints a table, writes ``benchmarks/results/<name>.json`` and a PNG. ``--variant`` may repeat;
without it: the run's defaults, ``act_on=realized`` and a tenth of the learning rate. The
rollouts are not graded, so a variant may not use ``advantage=grade`` or ``task``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from configs.learning import ObjectiveConfig  # noqa: E402
from configs.run_schema import RunConfig  # noqa: E402
from configs.schema import to_dataclass  # noqa: E402
from flywheel.controller import validate  # noqa: E402
from flywheel.cycle import evaluate, one_torch_thread  # noqa: E402
from flywheel.learners import make_optimizer  # noqa: E402
from flywheel.objective import batch_loss, embodiment_of  # noqa: E402
from flywheel.pretrained import DEFAULT, small_checkpoint  # noqa: E402
from flywheel.rollout import RolloutSpec, collect, episode_stats  # noqa: E402
from flywheel.rows import ACTIONS, EPISODE, IMAGINED, PROPRIO, PROPRIO_DIM, REALIZED, SIM, STEPS, TASK  # noqa: E402
from policies.agent import Agent, Imagined  # noqa: E402
from policies.data import Data  # noqa: E402
from sims import make  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# advantage=task and grade need graded rows, which these ungraded in-process rollouts are not.
DEFAULT_VARIANTS = ("defaults:", "act_on=realized:learner.act_on=realized", "lr/10:learner.lr=3e-5")
ROUTES = ("observation alone", "own imagination", "rollout's imagined plan", "realized future", "zero action")


def run_config(pretrained: str, overrides: list[str]) -> RunConfig:
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig),
                          OmegaConf.from_dotlist([f"pretrained={pretrained}", *overrides]))
    config = to_dataclass(cfg, RunConfig)
    validate(config)
    return config


def rollouts(agent: Agent, config: RunConfig, episodes: int):
    """One cycle of the run's rollouts, in this process."""
    envs = [make(config.sim.name, **config.sim.make_kwargs()) for _ in range(config.envs_per_worker)]
    spec = RolloutSpec(episodes=episodes, seed=config.seed, planning=config.planning,
                       n_candidates=config.n_candidates, flow_steps=config.flow_steps, choose=config.choose,
                       discount=config.learner.discount)
    with one_torch_thread():
        rows = collect(agent, envs, spec)
    for env in envs:
        env.close()
    return rows


def prior_data(pretrained: str, config: RunConfig):
    """The starter's pretraining data as the learners read it (``flywheel.prior``)."""
    from flywheel.prior import PriorData, resolve

    return PriorData(resolve(pretrained, 1.0, config.learner.train_experts, config.camera, log=print))


def train(agent: Agent, rows, config: RunConfig, steps: int, seed: int = 0,
          prior=None) -> tuple[Agent, float]:
    """A copy of ``agent`` after ``steps`` learner steps on ``rows`` (module docstring, step 2),
    plus the pretraining objectives on batches of ``prior`` data where given (``flywheel.prior.PriorData``)."""
    agent = copy.deepcopy(agent)
    learner = config.learner
    objective = ObjectiveConfig(**{k: getattr(learner, k) for k in ObjectiveConfig.__dataclass_fields__})
    optimizer = make_optimizer(agent.model, learner.train_experts, learner.lr, learner.weight_decay)
    params = [p for p in agent.model.parameters() if p.requires_grad]
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    agent.model.train()
    losses = []
    for step in range(steps):
        loss = batch_loss(agent, rows.take(rng.integers(0, rows.n, learner.batch_size)), objective, generator)
        total = loss["total"]
        if prior is not None:
            total = total + prior.share(agent.model, (seed, step), learner.batch_size)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss["total"].detach()))
    agent.model.eval()
    return agent, float(np.mean(losses[-20:]))


@torch.no_grad()
def diagnose(agent: Agent, rows) -> dict[str, float]:
    """Imagination and action errors on ``rows`` (module docstring, step 3)."""
    embs = [embodiment_of(str(s)) for s in rows[SIM]]
    observed = agent.observe([{"proprio": p[..., :d], "task": str(t)}
                              for p, d, t in zip(rows[PROPRIO], rows[PROPRIO_DIM], rows[TASK])], embs)
    context = agent.perceive(observed)
    full = torch.as_tensor(rows[STEPS] == agent.cfg.chunk)  # chunks the episode did not cut
    scale = agent.model.tokenizers["proprio"].scale
    mask = observed.proprio_mask.expand(-1, agent.cfg.chunk, -1)[full].float()

    def proprio_error(x: torch.Tensor) -> float:
        real = torch.as_tensor(rows[REALIZED])
        return float(((((x - real) / scale) ** 2)[full] * mask).sum() / mask.sum())

    g = torch.Generator().manual_seed(0)
    own = agent.imagine(context, 1, generator=g)
    latest = observed.history()[:, -1:].expand(-1, agent.cfg.chunk, -1)
    out = {"imagination_error": proprio_error(own.future.values["proprio"]), "hold_error": proprio_error(latest)}
    truth = torch.as_tensor(rows[ACTIONS])
    amask = observed.action_mask.expand_as(truth).float()

    def action_error(imagined: Imagined | None) -> float:
        acts = agent.act(context, imagined, generator=torch.Generator().manual_seed(1)).actions.values["action"]
        return float(((acts - truth) ** 2 * amask).sum() / amask.sum())

    def given(column: str) -> Imagined:
        return Imagined(observed.future_data(torch.as_tensor(rows[column])), 1)

    errors = (action_error(None), action_error(own), action_error(given(IMAGINED)), action_error(given(REALIZED)),
              float((truth ** 2 * amask).sum() / amask.sum()))
    out.update({f"action_error[{route}]": e for route, e in zip(ROUTES, errors)})
    return out


def capability(agent: Agent, config: RunConfig) -> dict[str, float]:
    planned = evaluate(agent, config)
    plain = evaluate(agent, dataclasses.replace(config, eval=dataclasses.replace(config.eval, planning=False)))
    return {"success": planned["success_rate"], "success_se": planned["success_stderr"],
            "return": planned["mean_return"], "return_se": planned["return_stderr"],
            "success_no_planning": plain["success_rate"], "success_no_planning_se": plain["success_stderr"],
            "return_no_planning": plain["mean_return"], "return_no_planning_se": plain["return_stderr"]}


def split(rows):
    """Every fifth episode held out."""
    episodes = np.unique(rows[EPISODE])
    held = np.isin(rows[EPISODE], episodes[::5])
    return rows.take(np.flatnonzero(~held)), rows.take(np.flatnonzero(held))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--episodes", type=int, default=32, help="rollout episodes (one cycle's worth of data)")
    ap.add_argument("--eval-episodes", type=int, default=40)
    ap.add_argument("--steps", type=int, default=200, help="learner steps per variant (the default run's per cycle)")
    ap.add_argument("--variant", action="append", default=None, help="NAME:key=value,key=value (run overrides)")
    ap.add_argument("--prior-data", action="store_true", help="add the variant 'defaults + prior data'")
    ap.add_argument("--seed", type=int, default=0, help="the run's seed: rollouts and training draws")
    ap.add_argument("--name", default="bench_distill")
    args = ap.parse_args()
    pretrained = args.pretrained or str(DEFAULT if (DEFAULT / "config.json").is_file() else small_checkpoint())
    variants = [v.split(":", 1) for v in (args.variant or DEFAULT_VARIANTS)]
    if args.prior_data:
        variants.append(["defaults + prior data", ""])
    configs = {name: run_config(pretrained, [f"eval.episodes={args.eval_episodes}", f"seed={args.seed}",
                                             *[o for o in overrides.split(",") if o]]) for name, overrides in variants}
    start = Agent.from_checkpoint(pretrained)
    base = next(iter(configs.values()))
    began = time.perf_counter()
    rows = rollouts(start, base, args.episodes)
    teacher = episode_stats(rows)
    train_rows, held = split(rows)
    print(f"rollouts (choose={base.choose}, {base.n_candidates} candidates): success {teacher['success_rate']:.3f}, "
          f"return {teacher['mean_return']:.2f} over {teacher['episodes']} episodes; {train_rows.n} training rows, "
          f"{held.n} held out ({time.perf_counter() - began:.0f} s)", flush=True)
    table = [{"variant": "start", **diagnose(start, held), **capability(start, base)}]
    report(table[-1])
    for name, config in configs.items():
        prior = prior_data(pretrained, config) if name.endswith("prior data") else None
        trained, loss = train(start, train_rows, config, args.steps, args.seed, prior)
        table.append({"variant": name, "loss": loss, **diagnose(trained, held), **capability(trained, config)})
        report(table[-1])
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", {
        "pretrained": pretrained, "seed": args.seed, "steps": args.steps, "episodes": args.episodes, "eval_episodes": args.eval_episodes,
        "variants": dict(variants), "teacher": teacher, "table": table, "seconds": round(time.perf_counter() - began),
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()}})
    plot(table, teacher, RESULTS / f"{args.name}.png", args)
    print(f"wrote {RESULTS / args.name}.json and .png")


def report(row: dict) -> None:
    routes = ", ".join(f"{r} {row[f'action_error[{r}]']:.4f}" for r in ROUTES)
    print(f"{row['variant']:>24}: success {row['success']:.3f} ± {row['success_se']:.3f} (no planning "
          f"{row['success_no_planning']:.3f}), return {row['return']:.2f} ± {row['return_se']:.2f}; imagination "
          f"{row['imagination_error']:.4f} (hold {row['hold_error']:.4f}); action error: {routes}", flush=True)


def plot(table: list[dict], teacher: dict, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in table]
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].bar(x - 0.2, [r["success"] for r in table], 0.4, yerr=[r["success_se"] for r in table], capsize=3,
                label="planning")
    axes[0].bar(x + 0.2, [r["success_no_planning"] for r in table], 0.4,
                yerr=[r["success_no_planning_se"] for r in table], capsize=3, label="no planning")
    axes[0].axhline(teacher["success_rate"], color="k", ls="--", label="the sim's look-ahead (teacher)")
    axes[0].set_title(f"eval success ({args.eval_episodes} fixed episodes, ±1 s.e.)")
    axes[1].bar(x - 0.2, [r["imagination_error"] for r in table], 0.4, label="imagined")
    axes[1].bar(x + 0.2, [r["hold_error"] for r in table], 0.4, label="hold the latest step")
    axes[1].set_title("future proprio error vs realized (held out)")
    width = 0.8 / len(ROUTES)
    for k, route in enumerate(ROUTES):
        axes[2].bar(x + (k - (len(ROUTES) - 1) / 2) * width, [r[f"action_error[{route}]"] for r in table], width,
                    label=route)
    axes[2].set_title("action error vs executed (held out)")
    for ax in axes:
        ax.set_xticks(x, names, rotation=20, fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"one learning phase ({args.steps} steps) on one cycle of rollouts ({args.episodes} episodes)")
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=100)


if __name__ == "__main__":
    main()
