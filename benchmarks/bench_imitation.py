"""How well a sim's demonstrator can be imitated at all: a plain MLP against the MoT starters.

    python benchmarks/bench_imitation.py [CHECKPOINT ...] [--label NAME ...] [--sim dmc/cartpole-swingup]
        [--max-episode-steps 1000] [--episodes 16] [--name bench_imitation]

Why: a starter that acts far below its demonstrator leaves the flywheel to learn what imitation
alone could have given. This trains two plain MLPs by regression on demonstrations made the way
pretraining makes its action data (``policies.pretrain.datasets``: the demonstrator's label at
each state, the executed action noised by a per-episode std up to 0.3, DART), one predicting a
single action, one a chunk of ``--chunk`` actions executed open-loop as the agent executes its
chunks, and evaluates them and each CHECKPOINT's plain policy route (``Agent.act``, whole chunks)
on the same fixed episodes (``flywheel.rollout.reset_seed`` of the evaluation seed). The
demonstrator itself is the ceiling. Prints a table, writes ``benchmarks/results/<name>.json``
and a PNG of the returns with their standard errors.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.bench_planning import model_dir  # noqa: E402
from flywheel.rollout import reset_seed  # noqa: E402
from policies.agent import Agent  # noqa: E402
from sims import make  # noqa: E402
from sims.files import write_figure_atomic, write_json_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
EVAL_SEED = 1_000_000  # the run's eval.seed default: the same episodes the flywheel evaluates on


def demonstrations(sim: str, episodes: int, max_steps: int, chunk: int, noise: float, seed: int):
    """(states, label chunks): each state of noisy demonstrator episodes and the demonstrator's
    labels at it and the next ``chunk - 1`` states visited."""
    env, rng = make(sim), np.random.default_rng(seed)
    demo = env.demonstrator()
    states, chunks = [], []
    for _ in range(episodes):
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        demo.reset()
        sigma = rng.uniform(0.0, noise)
        seen, labels = [], []
        for _ in range(max_steps):
            label = np.asarray(demo(obs), np.float32)
            seen.append(obs["proprio"])
            labels.append(label)
            obs, _, terminated, truncated, _ = env.step(np.clip(label + rng.normal(0, sigma, label.shape), -1, 1))
            if terminated or truncated:
                break
        for t in range(len(seen) - chunk + 1):
            states.append(seen[t])
            chunks.append(np.concatenate(labels[t:t + chunk]))
    env.close()
    return torch.as_tensor(np.array(states)), torch.as_tensor(np.array(chunks))


def _mlp(inputs: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, outputs))


def _regress(net: nn.Module, steps: int, examples: int, loss_of) -> float:
    """``steps`` Adam steps on ``loss_of(indices)`` of random batches of 256; the last loss."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        loss = loss_of(torch.randint(0, examples, (256,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    return loss.item()


def fit_mlp(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int):
    torch.manual_seed(seed)
    shift, scale = x.mean(0), x.std(0) + 1e-6
    net = _mlp(x.shape[1], y.shape[1])
    loss = _regress(net, steps, len(x), lambda i: ((net((x[i] - shift) / scale) - y[i]) ** 2).mean())

    @torch.no_grad()
    def act(proprio: np.ndarray) -> np.ndarray:
        return net((torch.as_tensor(proprio)[None] - shift) / scale)[0].numpy()
    return act, loss


def fit_flow_mlp(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int, flow_steps: int = 8):
    """``fit_mlp``'s network trained as the agent's action expert is: rectified flow (noise x0 to the
    label chunk along a straight line, the velocity regressed at a logit-normal time, as
    ``policies.flow``), sampled from fresh noise with ``flow_steps`` Euler steps. Tells the flow
    objective's share of the MoT's shortfall from the rest."""
    torch.manual_seed(seed)
    shift, scale = x.mean(0), x.std(0) + 1e-6
    d = y.shape[1]
    net = _mlp(x.shape[1] + d + 1, d)

    def velocity_error(i: torch.Tensor) -> torch.Tensor:
        x0, t = torch.randn(len(i), d), torch.sigmoid(torch.randn(len(i), 1))
        xt = (1 - t) * x0 + t * y[i]
        return ((net(torch.cat([(x[i] - shift) / scale, xt, t], 1)) - (y[i] - x0)) ** 2).mean()
    loss = _regress(net, steps, len(x), velocity_error)

    @torch.no_grad()
    def act(proprio: np.ndarray) -> np.ndarray:
        state = (torch.as_tensor(proprio)[None] - shift) / scale
        a = torch.randn(1, d)
        for k in range(flow_steps):
            a = a + net(torch.cat([state, a, torch.full((1, 1), k / flow_steps)], 1)) / flow_steps
        return a[0].numpy()
    return act, loss


def episode_returns(sim: str, episodes: int, max_episode_steps: int, chunk_of, image_size: int = 0) -> np.ndarray:
    """Returns of the fixed episodes, acting on ``chunk_of(obs, history)`` (a list of env
    actions run open-loop) until the episode ends; with ``image_size``, ``obs["image"]`` is the
    camera frame at that size when each chunk is chosen (as a ``camera=true`` run renders it)."""
    returns = []
    # One env for every episode: closing a renderer while another lives garbles the other's frames
    # (``policies.pretrain.datasets.env_pool``).
    camera = {"render_mode": "rgb_array", "image_size": image_size} if image_size else {}
    env = make(sim, max_episode_steps=max_episode_steps, **camera)
    for i in range(episodes):
        obs, _ = env.reset(seed=reset_seed(EVAL_SEED, i))
        history, total, done = [obs["proprio"]], 0.0, False
        while not done:
            seen = {**obs, "image": env.render()} if image_size else obs
            for action in chunk_of(seen, history):
                obs, reward, terminated, truncated, _ = env.step(action)
                history.append(obs["proprio"])
                total += reward
                done = terminated or truncated
                if done:
                    break
        returns.append(total)
    env.close()
    return np.array(returns)


def agent_policy(agent: Agent, embodiment, seed: int):
    """The agent's plain policy route, its flow's noise drawn from a generator of its own seeded
    ``seed``: the same policy evaluated twice scores the same, whatever ran before it."""
    generator = torch.Generator().manual_seed(seed)

    def chunk_of(obs, history):
        past = history[-agent.cfg.history:]
        past = [past[0]] * (agent.cfg.history - len(past)) + past
        with torch.no_grad():
            seen = {"proprio": np.stack(past), "task": obs["task"]}
            if "image" in obs:
                seen["image"] = obs["image"]
            context = agent.perceive([seen], embodiment)
            actions = agent.act(context, generator=generator).actions.values["action"]
            chunk = actions[0, :, : embodiment.action_dim].numpy()
        return [embodiment.to_env_action(a) for a in chunk]
    return chunk_of


def train_more(run_dir: Path, steps: int, batch_size: int, every: int, experts: str, seed: int,
               frames: bool = True):
    """The pretraining run ``run_dir``'s starter trained further on its own action data with its
    own objective (``objectives.action_loss``), ``batch_size`` examples a step at a constant
    learning rate: yields ``(steps so far, agent)`` every ``every`` steps. ``experts``: ``action``
    trains the action expert alone (as pretraining's action stage and decay do), ``all`` every
    expert; ``frames=False`` leaves the data's camera frames out (as a ``camera=false`` run acts).
    Tells a starter short of training budget from one its objective or inputs hold back."""
    from policies.pretrain import datasets, objectives
    from policies.pretrain.run import check, saved_config

    config = saved_config(run_dir)
    if config is None:
        sys.exit(f"{run_dir}: not a pretraining run directory (no config.yaml)")
    spec = check(config).spec
    # A relative cache (the default) is the repository's, where `flywheel pretrain` runs.
    directory, manifest = datasets.ensure(spec, ROOT / config.data.cache_dir, log=lambda s: None, progress=False)
    agent = Agent.from_checkpoint(model_dir(str(run_dir)))
    model = agent.model
    banks = datasets.load(directory, manifest, spec, model.cfg.proprio_pad, model.cfg.action_pad)
    for expert in model.cfg.experts:
        (model.unfreeze if experts == "all" or expert == "action" else model.freeze)(expert)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.schedule.peak_lr, betas=(0.9, 0.95),
                                  weight_decay=config.train.weight_decay)
    sampler = objectives.Sampler(banks["action"]["train"], batch_size, seed)
    generator = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        model.train()
        batch = sampler.sample(model)
        if not frames:
            batch.observation.pop("frame", None)
        loss = objectives.action_loss(model, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.train.grad_clip or float("inf"))
        optimizer.step()
        if step % every == 0 or step == steps:
            model.eval()
            yield step, agent, loss.item()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="*", help="MoT starters or run checkpoints (bench_planning's CHECKPOINT)")
    ap.add_argument("--label", action="append", default=None, help="one per checkpoint (default: the path)")
    ap.add_argument("--sim", default="dmc/cartpole-swingup")
    ap.add_argument("--max-episode-steps", type=int, default=1000)
    ap.add_argument("--episodes", type=int, default=16, help="fixed evaluation episodes")
    ap.add_argument("--demo-episodes", type=int, default=24)
    ap.add_argument("--demo-steps", type=int, default=500, help="steps per demonstration episode, at most")
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4000, help="MLP regression steps (batch 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-more", type=int, default=0,
                    help="also train each CHECKPOINT (a pretraining run directory) this many more steps on its "
                         "action data, evaluating every --every steps")
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256, help="--train-more's batch size")
    ap.add_argument("--experts", choices=("action", "all"), default="action", help="--train-more trains these")
    ap.add_argument("--no-frames", action="store_true", help="--train-more leaves the data's frames out")
    ap.add_argument("--name", default="bench_imitation")
    args = ap.parse_args(argv)
    labels = args.label or args.checkpoints
    if len(labels) != len(args.checkpoints):
        sys.exit(f"{len(labels)} --label for {len(args.checkpoints)} checkpoints")
    torch.set_num_threads(1)
    embodiment = make(args.sim).embodiment
    to_env = embodiment.to_env_action

    table = []

    def measure(label: str, chunk_of, extra: dict | None = None, image_size: int = 0) -> None:
        began = time.perf_counter()
        returns = episode_returns(args.sim, args.episodes, args.max_episode_steps, chunk_of, image_size)
        row = {"policy": label, "mean_return": float(returns.mean()),
               "return_se": float(returns.std(ddof=1) / np.sqrt(len(returns))),
               "returns": [round(float(r), 2) for r in returns], "seconds": round(time.perf_counter() - began, 1),
               **(extra or {})}
        table.append(row)
        print(f"{label:>44}  return {row['mean_return']:7.1f} +- {row['return_se']:5.1f}  ({row['seconds']} s)",
              flush=True)

    # The scripted demonstrator reads the env it was made for: one per episode's env.
    def demonstrator_returns():
        returns = []
        for i in range(args.episodes):
            env = make(args.sim, max_episode_steps=args.max_episode_steps)
            obs, _ = env.reset(seed=reset_seed(EVAL_SEED, i))
            demo, total, done = env.demonstrator(), 0.0, False
            demo.reset()
            while not done:
                obs, reward, terminated, truncated, _ = env.step(demo(obs))
                total += reward
                done = terminated or truncated
            returns.append(total)
            env.close()
        return np.array(returns)

    returns = demonstrator_returns()
    table.append({"policy": "demonstrator (the ceiling)", "mean_return": float(returns.mean()),
                  "return_se": float(returns.std(ddof=1) / np.sqrt(len(returns))),
                  "returns": [round(float(r), 2) for r in returns]})
    print(f"{'demonstrator (the ceiling)':>44}  return {returns.mean():7.1f}", flush=True)

    x, y = demonstrations(args.sim, args.demo_episodes, args.demo_steps, args.chunk, 0.3, args.seed)
    a = embodiment.action_dim
    one, loss_one = fit_mlp(x, y[:, :a], args.steps, args.seed)
    measure("MLP, one action a step", lambda obs, h: [to_env(one(obs["proprio"]))],
            {"train_mse": loss_one, "examples": len(x)})
    chunked, loss_chunk = fit_mlp(x, y, args.steps, args.seed)
    measure(f"MLP, {args.chunk}-action chunks open-loop",
            lambda obs, h: [to_env(c) for c in chunked(obs["proprio"]).reshape(args.chunk, a)],
            {"train_mse": loss_chunk, "examples": len(x)})
    flowing, loss_flow = fit_flow_mlp(x, y, args.steps, args.seed)
    measure(f"MLP, flow matching, {args.chunk}-action chunks",
            lambda obs, h: [to_env(c) for c in flowing(obs["proprio"]).reshape(args.chunk, a)],
            {"train_mse": loss_flow, "examples": len(x)})
    for label, path in zip(labels, args.checkpoints):
        agent = Agent.from_checkpoint(model_dir(path)).eval()
        measure(label, agent_policy(agent, embodiment, args.seed), {"checkpoint": path, "frames": False})
        # Pretraining shows the starter a camera frame with every action example (data.camera) while a
        # flywheel run acts without one (camera=false, the default): the same policy, seeing them.
        if "frame" in agent.model.tokenizers:
            measure(f"{label}, seeing frames", agent_policy(agent, embodiment, args.seed),
                    {"checkpoint": path, "frames": True}, image_size=agent.cfg.image_size)
        if args.train_more:
            torch.set_num_threads(2)
            seen = "no frames" if args.no_frames else "frames"
            for step, more, loss in train_more(Path(path), args.train_more, args.batch, args.every, args.experts,
                                               args.seed, frames=not args.no_frames):
                torch.set_num_threads(1)
                measure(f"{label} +{step} steps x {args.batch} ({args.experts}, {seen})",
                        agent_policy(more, embodiment, args.seed),
                        {"checkpoint": path, "more_steps": step, "batch": args.batch, "experts": args.experts,
                         "frames": not args.no_frames, "train_loss": loss})
                torch.set_num_threads(2)

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / f"{args.name}.json", {
        "sim": args.sim, "max_episode_steps": args.max_episode_steps, "episodes": args.episodes,
        "eval_seed": EVAL_SEED, "demo_episodes": args.demo_episodes, "demo_steps": args.demo_steps,
        "chunk": args.chunk, "mlp_steps": args.steps, "table": table,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}})
    plot(table, RESULTS / f"{args.name}.png", args)
    print(f"wrote {RESULTS / args.name}.json and .png")


def plot(table: list[dict], path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2.0 + 1.4 * len(table), 3.8))
    x = np.arange(len(table))
    ax.bar(x, [r["mean_return"] for r in table], yerr=[r["return_se"] for r in table], capsize=3,
           color=["tab:gray"] + ["tab:green"] * 3 + ["tab:blue"] * (len(table) - 4))
    ax.set_xticks(x, [r["policy"] for r in table], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("eval return")
    ax.set_title(f"imitating {args.sim}'s demonstrator ({args.episodes} fixed episodes of "
                 f"{args.max_episode_steps} steps, +-1 s.e.)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    write_figure_atomic(path, fig, dpi=100)


if __name__ == "__main__":
    main()
