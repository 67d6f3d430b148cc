"""Per-stage metrics on held-out data, each next to the baseline that gives it meaning.

==================== ============================================= =============================
metric               how                                           against
==================== ============================================= =============================
understanding        greedy answer == true answer (exact match)    chance (1 / #answers) and
accuracy                                                           the majority answer per
                                                                   question in the train set
frame error          MSE in [-1, 1] of frames generated from        the sim's mean train frame,
                     caption + proprio                              and a random one
imagination error    per future step, RMS of the proprio error      constant velocity from the
                     in units of each dimension's std               last two observed steps
action error         MSE (normalized actions) of the policy route   always acting 0
                     and of acting on the realized future
closed-loop success  the policy route executing its own chunks      uniform random actions (and
                     (``execute`` steps each) on every sim          the demonstrator)
==================== ============================================= =============================

The closed loop runs all episodes of a sim in lockstep, one batched forward per chunk.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from policies.agent import Agent
from policies.data import Data
from policies.future import from_model
from policies.model import Item, Model
from policies.pretrain.datasets import Bank, env_pool
from policies.pretrain.objectives import Batch, make_batch, observation_items
from policies.routes import _greedy_text, generate
from policies.tokenizers import to_unit_frames


def eval_index(bank: Bank, n: int) -> torch.Tensor:
    """Up to ``n`` held-out examples spread evenly over the bank (so over every sim)."""
    total = len(bank)
    if total <= n:
        return torch.arange(total)
    return torch.linspace(0, total - 1, n).round().long().unique()


def batches(bank: Bank, model: Model, n: int, batch_size: int):
    index = eval_index(bank, n)
    for i in range(0, len(index), batch_size):
        yield make_batch(bank, index[i:i + batch_size], model)


def _per_sim(values: list[float], sims: list[int], bank: Bank) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for v, s in zip(values, sims):
        out.setdefault(bank.sims[s], []).append(v)
    return {k: float(np.mean(v)) for k, v in out.items()}


# ---------------------------------------------------------------------- understanding


@torch.no_grad()
def understanding(model: Model, held_out: Bank, train: Bank, n: int, batch_size: int) -> dict[str, Any]:
    by_question: dict[tuple[str, str], Counter] = {}
    train_sims = train.example_sims().tolist()
    for s, q, a in zip(train_sims, train.texts["question"], train.texts["answer"]):
        by_question.setdefault((train.sims[s], q), Counter())[a] += 1
    majority = {key: counts.most_common(1)[0][0] for key, counts in by_question.items()}
    correct, chance, major, sims = [], [], [], []
    max_len = 2 + max(len(a.encode()) for a in held_out.texts["answer"]) + 1
    for batch in batches(held_out, model, n, batch_size):
        _, cache = model.run(observation_items(batch, model), keep=True)
        predicted = _greedy_text(model, cache, max_len)
        for row, (i, s) in enumerate(zip(batch.index.tolist(), batch.sim.tolist())):
            truth, question = held_out.texts["answer"][i], held_out.texts["question"][i]
            correct.append(float(predicted[row] == truth))
            chance.append(1.0 / float(held_out.tensors["qa_choices"][i]))
            major.append(float(majority.get((held_out.sims[s], question)) == truth))
            sims.append(s)
    return {"understand_accuracy": float(np.mean(correct)), "understand_chance": float(np.mean(chance)),
            "understand_majority": float(np.mean(major)), "understand_examples": len(correct),
            "understand_accuracy_per_sim": _per_sim(correct, sims, held_out)}


# ---------------------------------------------------------------------- image


@torch.no_grad()
def frames(model: Model, held_out: Bank, train: Bank, n: int, batch_size: int, seed: int) -> dict[str, Any]:
    """Frames generated from caption + proprio against two blind baselines: the sim's mean
    frame (the best a predictor ignoring the text can do in MSE) and a random train frame of
    the same sim (what a sampler ignoring the text would draw)."""
    size = model.cfg.image_size
    frames_of = {}
    for s, sim in enumerate(train.sims):
        frames_of[sim] = to_unit_frames(train.tensors["frame"][train.tensors["sim"] == s], size)
    g = torch.Generator().manual_seed(seed)
    pick = torch.Generator().manual_seed(seed + 1)
    errors, mean_base, random_base, sims = [], [], [], []
    for batch in batches(held_out, model, n, batch_size):
        target = batch.extra["image"].values["image"]
        out = generate(model, {"text": batch.extra["caption"], "proprio": batch.observation["proprio"]}, "image",
                       Data({"image": torch.zeros_like(target)}), generator=g)
        errors += ((out.values["image"] - target) ** 2).mean(dim=(1, 2, 3)).tolist()
        pool = [frames_of[held_out.sims[s]] for s in batch.sim.tolist()]
        mean = torch.stack([p.mean(0) for p in pool])
        other = torch.stack([p[int(torch.randint(len(p), (), generator=pick))] for p in pool])
        mean_base += ((mean - target) ** 2).mean(dim=(1, 2, 3)).tolist()
        random_base += ((other - target) ** 2).mean(dim=(1, 2, 3)).tolist()
        sims += batch.sim.tolist()
    return {"frame_mse": float(np.mean(errors)), "frame_mse_mean_frame": float(np.mean(mean_base)),
            "frame_mse_random_frame": float(np.mean(random_base)),
            "frame_mse_per_sim": _per_sim(errors, sims, held_out)}


# ---------------------------------------------------------------------- video


@torch.no_grad()
def imagination(model: Model, held_out: Bank, n: int, batch_size: int, seed: int,
                scale: torch.Tensor) -> dict[str, Any]:
    """Imagined vs realized proprio over the chunk, in units of each dimension's std."""
    g = torch.Generator().manual_seed(seed)
    model_sq, cv_sq, hold_sq, counts, frame_err = 0.0, 0.0, 0.0, 0.0, []
    for batch in batches(held_out, model, n, batch_size):
        future = batch.extra["future"]
        inputs = {it.modality: it.data for it in observation_items(batch, model)}
        if "command" in model.tokenizers:
            inputs["command"] = batch.extra["command"]
        template = future.with_values({k: torch.zeros_like(v) for k, v in future.values.items()})
        hist = batch.observation["proprio"].values["proprio"]
        out = from_model(model, generate(model, inputs, "future", template, generator=g), hist)
        truth = from_model(model, future, hist).values["proprio"]
        mask = future.masks["proprio"].expand_as(truth).float()
        last, prev = hist[:, -1], hist[:, -2] if hist.shape[1] > 1 else hist[:, -1]
        steps = torch.arange(1, truth.shape[1] + 1, dtype=truth.dtype)[None, :, None]
        const_velocity = last[:, None] + steps * (last - prev)[:, None]
        norm = lambda x: (x - truth) / scale  # noqa: E731
        model_sq = model_sq + ((norm(out.values["proprio"]) ** 2) * mask).sum(dim=(0, 2))
        cv_sq = cv_sq + ((norm(const_velocity) ** 2) * mask).sum(dim=(0, 2))
        hold_sq = hold_sq + ((norm(last[:, None].expand_as(truth)) ** 2) * mask).sum(dim=(0, 2))
        counts = counts + mask.sum(dim=(0, 2))
        if "frames" in future.values:
            frame_err.append(((out.values["frames"] - future.values["frames"]) ** 2).mean().item())
    per_step = (model_sq / counts).sqrt()
    cv = (cv_sq / counts).sqrt()
    # Two baselines that imagine nothing: hold the latest step, or extrapolate its velocity.
    result = {"imagination_error": float(per_step.mean()), "imagination_error_const_velocity": float(cv.mean()),
              "imagination_error_hold": float((hold_sq / counts).sqrt().mean()),
              "imagination_error_per_step": [round(float(x), 4) for x in per_step],
              "imagination_error_const_velocity_per_step": [round(float(x), 4) for x in cv]}
    if frame_err:
        result["imagination_frame_mse"] = float(np.mean(frame_err))
    return result


# ---------------------------------------------------------------------- action


@torch.no_grad()
def actions(model: Model, held_out: Bank, n: int, batch_size: int, seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    policy, planned, zero, sims = [], [], [], []
    for batch in batches(held_out, model, n, batch_size):
        label = batch.extra["label"]
        truth, mask = label.values["action"], label.masks["action"].expand_as(label.values["action"]).float()
        template = label.with_values({"action": torch.zeros_like(truth)})
        inputs = {it.modality: it.data for it in observation_items(batch, model)}

        def mse(pred: torch.Tensor) -> list[float]:
            return (((pred - truth) ** 2 * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))).tolist()

        policy += mse(generate(model, inputs, "action", template, generator=g).values["action"])
        if "future" in model.tokenizers:
            planned += mse(generate(model, {**inputs, "future": batch.extra["future"]}, "action", template,
                                    generator=g).values["action"])
        zero += mse(torch.zeros_like(truth))
        sims += batch.sim.tolist()
    out = {"action_mse": float(np.mean(policy)), "action_mse_zero": float(np.mean(zero)),
           "action_mse_per_sim": _per_sim(policy, sims, held_out)}
    if planned:
        out["action_mse_given_future"] = float(np.mean(planned))
    return out


# ---------------------------------------------------------------------- closed loop


@torch.no_grad()
def closed_loop(sim: str, episodes: int, seed: int, execute: int, camera: bool, image_size: int,
                model: Model | None = None, policy: str = "model") -> dict[str, Any]:
    """Success rate of ``episodes`` seeded episodes of ``sim`` under ``policy``:
    ``model`` (the policy route, ``execute`` steps of each chunk), ``random`` or ``demonstrator``."""
    envs = env_pool(sim, episodes, False, image_size)
    # One renderer per sim, not per episode (each holds a GL context of ~90 MB): it is put in
    # each env's exact state in turn and draws its frame.
    camera_env = env_pool(sim, 1, True, image_size)[0] if camera else None

    def frame(env) -> np.ndarray:
        camera_env.set_state(env.get_state())
        return camera_env.render()

    rng = np.random.default_rng(seed)
    agent = Agent(model=model) if policy == "model" else None
    history = agent.cfg.history if agent is not None else 1
    obs, succeeded, done, hist, demos = [], [], [], [], []
    for i, env in enumerate(envs):
        o, info = env.reset(seed=seed + i)
        obs.append(o)
        succeeded.append(bool(info.get("success")))
        done.append(succeeded[-1])
        hist.append([o["proprio"]] * history)
        if policy == "demonstrator":
            demos.append(env.demonstrator())
            demos[-1].reset()
    emb = envs[0].embodiment
    while not all(done):
        active = [i for i in range(len(envs)) if not done[i]]
        if policy == "model":
            batch = [{"proprio": np.stack(hist[i]), "task": obs[i]["task"],
                      **({"image": frame(envs[i])} if camera else {})} for i in active]
            context = agent.perceive(batch, emb)
            chunk = agent.act(context).actions.values["action"][:, :, : emb.action_dim].cpu().numpy()
            plans = {i: [emb.to_env_action(a) for a in chunk[j][:execute]] for j, i in enumerate(active)}
        for k in range(execute if policy == "model" else 1):
            for i in active:
                if done[i]:
                    continue
                if policy == "model":
                    action = plans[i][k]
                elif policy == "random":
                    action = emb.to_env_action(rng.uniform(-1.0, 1.0, emb.action_dim))
                else:
                    action = demos[i](obs[i])
                obs[i], _, terminated, truncated, info = envs[i].step(action)
                hist[i] = hist[i][1:] + [obs[i]["proprio"]]
                succeeded[i] = succeeded[i] or bool(info.get("success"))
                done[i] = succeeded[i] or terminated or truncated
    return {"success": float(np.mean(succeeded)), "episodes": len(envs)}
