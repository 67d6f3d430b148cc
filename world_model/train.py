"""Fitting the learned simulator to realized transitions.

Each member is trained on its own random minibatches (the diversity that makes the ensemble
spread mean something) to predict the normalized proprio delta and reward. With
``horizon`` > 1 the loss also covers the member's own multi-step predictions along windows
of consecutive steps (the member is unrolled on its predictions, as TD-MPC2 trains its
latent dynamics), which is what keeps compounding error down.

``fit(data, ..., init=simulator)`` fine-tunes instead: it starts from a copy of ``simulator``'s
weights and keeps its normalization (the units its members step in), as the flywheel's refit
does each cycle (``flywheel.refit``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import torch

from configs.schema import WorldModelNetConfig, WorldModelTrainConfig
from world_model.data import Transitions
from world_model.model import Ensemble
from world_model.simulator import LearnedSimulator

STD_FLOOR = 1e-6


def fit(data: Transitions | Sequence[Transitions], model: WorldModelNetConfig | None = None,
        config: WorldModelTrainConfig | None = None,
        *, action_low=None, action_high=None, init: LearnedSimulator | None = None,
        progress: Callable[[int, float], None] | None = None) -> LearnedSimulator:
    """Fit a learned simulator of ``data``'s sim; ``progress(step, loss)`` is called every step.

    The action range defaults to the sim's embodiment (made once to read it); ``model`` and
    ``config`` default to the configs' defaults (what ``flywheel world-model fit`` uses).
    ``init``: fine-tune a copy of this simulator (its size, action range and normalization;
    ``model`` and the action range are then its own); it is left unchanged.
    """
    model = model if model is not None else WorldModelNetConfig()
    config = config if config is not None else WorldModelTrainConfig()
    data = Transitions.concat(data) if not isinstance(data, Transitions) else data
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _fit(data, model, config, action_low, action_high, init, progress)
    finally:
        torch.set_num_threads(threads)


def _fit(data: Transitions, model: WorldModelNetConfig, config: WorldModelTrainConfig, action_low, action_high,
         init: LearnedSimulator | None, progress: Callable[[int, float], None] | None) -> LearnedSimulator:
    torch.manual_seed(config.seed)
    delta = data.next_proprio - data.proprio
    if init is not None:
        if (init.reference, init.proprio_dim, init.action_dim) != (data.sim, data.proprio_dim, data.action_dim):
            raise ValueError(f"cannot fine-tune the simulator of {init.reference} (proprio {init.proprio_dim}, action "
                             f"{init.action_dim}) on transitions of {data.sim} ({data.proprio_dim}, {data.action_dim})")
        net, model = copy.deepcopy(init.net), init.config
        simulator = LearnedSimulator(init.reference, net, init.action_low, init.action_high)
    else:
        if action_low is None or action_high is None:
            import sims

            emb = sims.make(data.sim).embodiment
            action_low, action_high = emb.action_low, emb.action_high
        net = Ensemble(data.proprio_dim, data.action_dim, model, seed=config.seed)
        for name, values in (("proprio", data.proprio), ("delta", delta), ("reward", data.reward[:, None])):
            getattr(net, f"{name}_mean").copy_(torch.as_tensor(values.mean(axis=0)))
            getattr(net, f"{name}_std").copy_(torch.as_tensor(np.maximum(values.std(axis=0), STD_FLOOR)))
        simulator = LearnedSimulator(data.sim, net, np.asarray(action_low), np.asarray(action_high))

    horizon = config.horizon
    starts = data.windows(horizon)
    if len(starts) == 0:
        horizon, starts = 1, data.windows(1)  # episodes shorter than the horizon: one-step loss
    inputs = simulator.normalized_inputs(data.proprio, data.action)  # [N, D + A] float32
    targets = torch.as_tensor(np.concatenate([
        (delta - net.delta_mean.numpy()) / net.delta_std.numpy(),
        (data.reward[:, None] - net.reward_mean.numpy()) / net.reward_std.numpy(),
    ], axis=1), dtype=torch.float32)
    # Unrolling happens in normalized proprio units: next = p + delta * delta_std / proprio_std.
    delta_to_proprio = (net.delta_std / net.proprio_std).to(torch.float32)
    delta_offset = (net.delta_mean / net.proprio_std).to(torch.float32)
    d = data.proprio_dim

    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    k, batch = model.ensemble, min(config.batch, len(starts))
    starts_t = torch.as_tensor(starts)
    losses = []
    began = time.perf_counter()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * step / config.steps))
        rows = starts_t[torch.randint(len(starts_t), (k, batch), generator=gen)]  # per-member minibatches
        p = inputs[rows][..., :d]
        loss = torch.zeros(())
        for h in range(horizon):
            x = torch.cat([p, inputs[rows + h][..., d:]], dim=-1)
            out = net(x)
            loss = loss + torch.mean((out - targets[rows + h]) ** 2)
            p = p + out[..., :d] * delta_to_proprio + delta_offset
        loss = loss / horizon
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, losses[-1])
    net.eval()
    simulator.metadata = {
        "transitions": len(data),
        "episodes": int(len(np.unique(data.episode))),
        "fit": asdict(config),
        "final_loss": float(np.mean(losses[-max(1, config.steps // 20):])),
        "seconds": round(time.perf_counter() - began, 2),
    }
    return simulator
