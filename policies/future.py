"""The coordinates the video expert imagines a chunk's proprio in.

Outside the model a future is absolute proprio (B, T, P), as the sim reports it. Inside, with
``ModelConfig.relative_future`` on, the flow generates and reads

    z_t = (x_t - x_now) / scale_t          x_now: the latest observed proprio step (B, 1, P)

with ``scale_t`` the standard deviation of that motion per future step and dimension in the
pretraining data (the future tokenizer's ``motion_scale``; ones until set). Why: a chunk moves
the body a little from where it is, so "stay where you are" is z = 0, the flow's mean, and
the flow's unit noise is the size of a typical motion, not of the whole state space: an
undertrained expert errs by about a motion, not by a state. In absolute raw units the small
starter imagined futures 42 times farther from the realized ones (in the state's standard
units) than simply holding the current state, and the target offset (std 0.06 m) drowned in unit flow noise;
relative, 7 times, and 1.6 times after one learning phase in the flywheel
(docs/rl-core.md, "Imagination").

Frames of an imagined future are untouched. Every place a future crosses the model's
boundary calls ``to_model`` or ``from_model``: the agent (imagine, act, loss) and
pretraining's batches (``policies.pretrain.objectives.make_batch``).
"""

from __future__ import annotations

import torch

from policies.data import Data


def _scale(model, like: torch.Tensor) -> torch.Tensor:
    return model.tokenizers["future"].motion_scale[: like.shape[1]]


def to_model(model, future: Data, history: torch.Tensor | None) -> Data:
    """An absolute future (B, T, P) in the model's coordinates, given each row's proprio history."""
    if not model.cfg.relative_future or history is None:
        return future
    x = future.values["proprio"]
    z = (x - history[:, -1:].to(x.dtype)) / _scale(model, x)  # from the latest observed step
    return future.with_values({**future.values, "proprio": z}).zeroed()


def from_model(model, future: Data, history: torch.Tensor | None) -> Data:
    """The inverse of ``to_model``: the model's future back in absolute proprio."""
    if not model.cfg.relative_future or history is None:
        return future
    z = future.values["proprio"]
    x = z * _scale(model, z) + history[:, -1:].to(z.dtype)
    return future.with_values({**future.values, "proprio": x}).zeroed()
