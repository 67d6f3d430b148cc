"""What each stage trains: a batch of its dataset -> model items -> one loss.

============ ================================================================== ==========
stage        sequence                                                           loss
============ ================================================================== ==========
understand   [question + task text, frame, proprio] [answer text]               next byte
image        [caption text, proprio] [image (noisy)]                            flow
video        [task, frame, proprio, command (the chunk's actions)] [future]     flow
action       [task, frame, proprio] [action (noisy)] [future (clean)] [action]  flow, twice
============ ================================================================== ==========

The action sequence trains two routes in one pass, thanks to the mask (a noisy segment is
invisible to every later one): the first action segment sees only the observation (the
*policy* route the agent executes closed-loop), the second also sees the realized future
(``imagine_act``: acting on a plan). In the video stage a share of the batches leaves the
command out, so the same expert also imagines a future without being told the actions
(``Agent.imagine``).

Frames (``frame``) are inputs only when the data has a camera; futures carry frames when
the data has them and the model imagines frames (``cfg.future_frames``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from policies.data import Data, encode_text
from policies.future import to_model
from policies.model import Item, Model
from policies.pretrain.datasets import EPISODES, Bank
from policies.routes import route_loss
from policies.tokenizers import to_unit_frames


def question_text(question: str, task: str) -> str:
    """The understanding prompt: the question first, so a long task text is what gets cut."""
    return f"{question} | {task}"


# ---------------------------------------------------------------------- batches


@dataclass
class Batch:
    """Model-ready data of some examples of one bank (every entry batch-first)."""

    bank: Bank
    index: torch.Tensor               # example indices in the bank
    sim: torch.Tensor                 # (B,) sim index
    observation: dict[str, Data]      # text (task), frame (if any), proprio history
    extra: dict[str, Data]

    @property
    def size(self) -> int:
        return len(self.index)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.bank, self.index, self.sim, {k: v.to(device) for k, v in self.observation.items()},
                     {k: v.to(device) for k, v in self.extra.items()})


def make_batch(bank: Bank, index: torch.Tensor, model: Model) -> Batch:
    cfg = model.cfg
    t = bank.tensors
    if bank.stage == "understand":
        scene = t["qa_scene"][index]
        rows = scene
    elif bank.kind == EPISODES:
        rows = t["windows"][index]
    else:
        rows = index
    sim = t["sim"][rows]
    pmask = bank.proprio_mask[sim][:, None]
    amask = bank.action_mask[sim][:, None]
    if bank.kind == EPISODES:
        first = t["first"][rows]
        back = torch.arange(cfg.history - 1, -1, -1)
        hist_idx = torch.maximum(rows[:, None] - back[None], first[:, None])
        history = t["proprio"][hist_idx]
    else:
        history = t["proprio"][rows][:, -cfg.history:]
    obs: dict[str, Data] = {}
    if "text" in model.tokenizers:
        obs["text"] = encode_text([bank.tasks[int(s)] for s in sim], cfg.text_max)
    if "frame" in t and "frame" in model.tokenizers:
        obs["frame"] = Data({"frame": t["frame"][rows]})
    obs["proprio"] = Data({"proprio": history}, {"proprio": pmask})
    extra: dict[str, Data] = {}
    if bank.stage == "understand":
        questions = [question_text(bank.texts["question"][int(i)], bank.tasks[int(s)]) for i, s in zip(index, sim)]
        obs["text"] = encode_text(questions, cfg.text_max)
        extra["answer"] = encode_text([bank.texts["answer"][int(i)] for i in index], cfg.text_max)
    elif bank.stage == "image":
        extra["caption"] = encode_text([bank.texts["caption"][int(i)] for i in index], cfg.text_max)
        extra["image"] = Data({"image": to_unit_frames(t["frame"][rows], cfg.image_size)})
    else:
        steps = rows[:, None] + torch.arange(cfg.chunk)[None]
        future = {"proprio": t["proprio"][steps + 1]}
        if "frame" in t and cfg.future_frames:
            future["frames"] = to_unit_frames(t["frame"][steps + 1], cfg.image_size)
        extra["future"] = to_model(model, Data(future, {"proprio": pmask}), history)  # the model's coordinates
        extra["command"] = Data({"action": t["executed"][steps]}, {"action": amask})
        extra["label"] = Data({"action": t["label"][steps]}, {"action": amask})
    return Batch(bank, index, sim, obs, extra)


class Sampler:
    """Random batches of a bank (or of a subset of its examples), from a seeded generator."""

    def __init__(self, bank: Bank, batch_size: int, seed: int, subset: torch.Tensor | None = None) -> None:
        self.bank = bank
        self.batch_size = batch_size
        self.subset = subset
        self.generator = torch.Generator().manual_seed(seed)
        if len(self) == 0:
            raise ValueError(f"the {bank.stage!r} dataset has no examples to sample")

    def __len__(self) -> int:
        return len(self.bank) if self.subset is None else len(self.subset)

    def sample(self, model: Model) -> Batch:
        pick = torch.randint(0, len(self), (self.batch_size,), generator=self.generator)
        index = pick if self.subset is None else self.subset[pick]
        return make_batch(self.bank, index, model)


def high_quality(bank: Bank, fraction: float) -> torch.Tensor:
    """Indices of the ``fraction`` of the bank's examples with the highest quality (at least one)."""
    quality = bank.quality()
    k = max(1, int(round(fraction * len(quality))))
    return torch.argsort(quality, descending=True, stable=True)[:k]


# ---------------------------------------------------------------------- losses


def observation_items(batch: Batch, model: Model, text: bool = True) -> list[Item]:
    items = []
    for modality in ("text", "frame", "proprio"):
        if modality in batch.observation and (text or modality != "text") and modality in model.tokenizers:
            items.append(Item(modality, batch.observation[modality]))
    return items


def answer_loss(model: Model, prefix: list[Item], answer: Data) -> torch.Tensor:
    """Next-byte cross-entropy of the answer segment after ``prefix``."""
    hidden, _ = model.run([*prefix, Item("text", answer)])
    logits = model.tokenizer("text").logits(hidden[-1][:, :-1])
    labels = answer.values["ids"][:, 1:].masked_fill(~answer.masks["ids"][:, 1:], -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def understand_loss(model: Model, batch: Batch, generator: torch.Generator) -> torch.Tensor:
    return answer_loss(model, observation_items(batch, model), batch.extra["answer"])


def image_loss(model: Model, batch: Batch, generator: torch.Generator) -> torch.Tensor:
    inputs = {"text": batch.extra["caption"], "proprio": batch.observation["proprio"]}
    return route_loss(model, inputs, "image", batch.extra["image"], generator=generator)


def video_loss(model: Model, batch: Batch, generator: torch.Generator, uncond: float = 0.0) -> torch.Tensor:
    inputs = {it.modality: it.data for it in observation_items(batch, model)}
    device = None if generator is None else generator.device
    if "command" in model.tokenizers and float(torch.rand((), generator=generator, device=device)) >= uncond:
        inputs["command"] = batch.extra["command"]
    return route_loss(model, inputs, "future", batch.extra["future"], generator=generator)


def action_loss(model: Model, batch: Batch, generator: torch.Generator) -> torch.Tensor:
    label = batch.extra["label"]
    items = observation_items(batch, model)
    policy, p0, p1 = model.flow_target("action", label, generator)
    if "future" not in model.tokenizers:  # no video expert: the policy route alone
        hidden, _ = model.run([*items, policy])
        return model.flow_loss("action", hidden[-1], p0, p1)
    planned, q0, q1 = model.flow_target("action", label, generator)
    hidden, _ = model.run([*items, policy, Item("future", batch.extra["future"]), planned])
    k = len(items)
    return 0.5 * (model.flow_loss("action", hidden[k], p0, p1) + model.flow_loss("action", hidden[k + 2], q0, q1))


Loss = Callable[[Model, Batch, torch.Generator], torch.Tensor]
OBJECTIVES: dict[str, Loss] = {
    "understand": understand_loss,
    "image": image_loss,
    "video": video_loss,
    "action": action_loss,
}
