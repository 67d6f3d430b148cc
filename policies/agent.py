"""``Agent``: Perceive -> Imagine -> Act, batched over a vector of environments.

    agent = Agent("tiny")
    context = agent.perceive(observations, env.embodiment)   # prefix + its KV cache
    imagined = agent.imagine(context, n=4)                    # 4 imagined chunks per env
    acted = agent.act(context, imagined)                      # actions conditioned on each plan
    plan = agent.plan(context, n_candidates=4)                # all of the above, best candidate per env
    env_actions = plan.env_actions()                          # per env, (chunk, action_dim) in env units

- ``perceive`` tokenizes the task text, camera frame and proprio history of B envs and
  runs them once, keeping their keys and values (the prefix cache).
- ``imagine`` samples n futures per env by flow matching: one forward per Euler step over
  B * n sequences, all attending to the shared prefix cache (expanded, not recomputed).
- ``act`` appends each imagined future as a clean segment (it is the plan now, not noise),
  reads a return estimate off it, and generates the action chunk after it: actions are
  conditioned on the imagined plan, not on the observation alone.
- ``plan`` scores each candidate (the critic's mean Q of its action chunk where the model
  has a critic, else the learned return head; plus the task's reward function on the
  imagined trajectory where one is given), keeps the best, and returns its actions
  together with the imagined trajectory the grader will hold against reality.
- ``critic_features``, ``values`` and ``chunk_values`` read the critic (``policies.critic``):
  V of a batch of states and mean_k Q_k of action chunks in them.

Actions are in the model's units: [-1, 1], padded to ``cfg.action_pad``;
``Plan.env_actions`` maps them back through each env's embodiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from policies import checkpoint, critic, routes
from policies.config import SIZES, ModelConfig
from policies.data import Data, encode_text
from policies.future import from_model, to_model
from policies.model import Item, Model
from policies.mot import KVCache
from policies.ranker import RANK
from sims.embodiment import Embodiment


@dataclass
class Observed:
    """A batch of observations as model inputs, with each env's padding masks."""

    items: list[Item]                 # the prefix: text, frame, proprio (those the model reads)
    proprio_mask: torch.Tensor        # (B, 1, proprio_pad)
    action_mask: torch.Tensor         # (B, 1, action_pad)
    frames: bool                      # the observation had a camera frame
    embodiments: tuple[Embodiment, ...]

    @property
    def batch(self) -> int:
        return self.proprio_mask.shape[0]

    def history(self, n: int = 1) -> torch.Tensor | None:
        """The proprio history (B * n, H, P), each env repeated n times; None when the model reads none."""
        for it in self.items:
            if it.modality == "proprio":
                return it.data.values["proprio"].repeat_interleave(n, dim=0)
        return None

    def inputs(self) -> dict[str, Data]:
        """The prefix as route inputs: ``{modality: data}`` for ``Agent.generate``."""
        return {it.modality: it.data for it in self.items}

    def future_data(self, proprio: torch.Tensor, frames: torch.Tensor | None = None) -> Data:
        """Padded future proprio (B, T, P) (+ frames (B, T, S, S, 3) in [-1, 1]) as ``Data``."""
        values = {"proprio": proprio} if frames is None else {"proprio": proprio, "frames": frames}
        return Data(values, {"proprio": self.proprio_mask})

    def action_data(self, actions: torch.Tensor) -> Data:
        """Padded normalized actions (B, T, A) as ``Data``."""
        return Data({"action": actions}, {"action": self.action_mask})


@dataclass
class Context:
    """What ``perceive`` saw: the observation batch and its prefix cache."""

    observed: Observed
    cache: KVCache
    _expanded: dict[int, KVCache] = field(default_factory=dict, repr=False)

    @property
    def batch(self) -> int:
        return self.observed.batch

    def shared(self, n: int) -> KVCache:
        """The prefix cache with each env repeated n times (built once per n)."""
        if n not in self._expanded:
            self._expanded = {n: self.cache.expand(n)}  # keep one: imagine and act use the same n
        return self._expanded[n]


@dataclass
class Imagined:
    """n imagined chunks per env, flattened env-major: row b * n + i is env b, candidate i."""

    future: Data
    n: int


@dataclass
class Acted:
    actions: Data                     # (B * n, T, A), normalized, padded
    returns: torch.Tensor | None      # (B * n,) learned return estimate of each imagined future
    n: int


@dataclass
class Plan:
    actions: torch.Tensor             # (B, T, A) the chosen chunk, normalized, padded
    imagined: Data                    # the chosen imagined future, (B, T, ...) per part
    scores: torch.Tensor              # (B, n) every candidate's score
    choice: torch.Tensor              # (B,) index of the chosen candidate
    returns: torch.Tensor | None      # (B, n) learned return estimates
    embodiments: tuple[Embodiment, ...]
    candidates: torch.Tensor | None = None  # (B, n, T, A) every candidate's actions
    futures: Data | None = None             # every candidate's imagined future, (B * n, T, ...)

    @classmethod
    def of(cls, candidates: torch.Tensor, futures: Data, scores: torch.Tensor, choice: Sequence[int] | torch.Tensor,
           returns: torch.Tensor | None, embodiments: tuple[Embodiment, ...]) -> "Plan":
        """Every candidate (B, n, ...) and futures (B * n, ...), with candidate ``choice[b]`` chosen for env b."""
        b, n = scores.shape
        choice = torch.as_tensor(choice, dtype=torch.long, device=scores.device)
        envs = torch.arange(b, device=choice.device)
        return cls(candidates[envs, choice], futures.map(lambda t: t[envs * n + choice]), scores, choice, returns,
                   embodiments, candidates, futures)

    def choose(self, choice: Sequence[int] | torch.Tensor) -> "Plan":
        """The same candidates with another choice per env (``choice`` (B,), e.g. the best
        candidates when the training sim runs each of them, ``flywheel.rollout``)."""
        return Plan.of(self.candidates, self.futures, self.scores, choice, self.returns, self.embodiments)

    def env_actions(self) -> list[np.ndarray]:
        """Per env, the chunk (T, action_dim) in that env's action units."""
        acts = self.actions.detach().cpu().numpy()
        return [emb.to_env_action(emb.unpad_action(a)) for emb, a in zip(self.embodiments, acts)]

    def imagined_proprio(self) -> list[np.ndarray]:
        """Per env, the imagined proprio trajectory (T, proprio_dim), padding removed."""
        prop = self.imagined.values["proprio"].detach().cpu().numpy()
        return [p[:, : emb.proprio_dim] for emb, p in zip(self.embodiments, prop)]


RewardFn = Callable[[torch.Tensor, torch.Tensor], Any]
"""(imagined proprio (B, n, T, P), actions (B, n, T, A)) -> scores (B, n)."""


class Agent(nn.Module):
    def __init__(self, cfg: ModelConfig | str = "tiny", device: torch.device | str = "cpu",
                 model: Model | None = None) -> None:
        super().__init__()
        cfg = SIZES[cfg] if isinstance(cfg, str) else cfg
        self.model = (model if model is not None else Model(cfg)).to(device)

    @classmethod
    def from_checkpoint(cls, path, device: torch.device | str = "cpu") -> "Agent":
        return cls(model=checkpoint.load(path, device), device=device)

    def save(self, path, metadata: dict[str, Any] | None = None):
        return checkpoint.save(self.model, path, metadata)

    @property
    def cfg(self) -> ModelConfig:
        return self.model.cfg

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ Perceive

    def observe(self, observation: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                embodiment: Embodiment | Sequence[Embodiment]) -> Observed:
        """Batch observations into model inputs.

        ``observation`` is one env's observation dict (``task`` a str), a batched dict from a
        vector env (``task`` a sequence of B strings, arrays with a leading B axis), or a
        list of per-env dicts. ``proprio`` may carry a history axis: (T, d) per env.
        """
        envs = _per_env(observation)
        embs = tuple(embodiment) if isinstance(embodiment, Sequence) else (embodiment,) * len(envs)
        if len(embs) != len(envs):
            raise ValueError(f"{len(envs)} observations but {len(embs)} embodiments")
        cfg, dev = self.cfg, self.device
        proprio = []
        for obs, emb in zip(envs, embs):
            p = np.asarray(obs["proprio"], dtype=np.float32)
            p = p[None] if p.ndim == 1 else p
            proprio.append(emb.pad_proprio(p, cfg.proprio_pad)[-cfg.history:])
        if len({p.shape[0] for p in proprio}) > 1:
            raise ValueError("every env in a batch must give the same proprio history length")
        proprio_mask = torch.as_tensor(np.stack([e.proprio_mask(cfg.proprio_pad) for e in embs]), device=dev)[:, None]
        action_mask = torch.as_tensor(np.stack([e.action_mask(cfg.action_pad) for e in embs]), device=dev)[:, None]
        has_frames = all("image" in obs and obs["image"] is not None for obs in envs)
        items = []
        if "text" in self.model.tokenizers:
            items.append(Item("text", encode_text([obs["task"] for obs in envs], cfg.text_max, dev)))
        if has_frames and "frame" in self.model.tokenizers:
            frames = torch.as_tensor(np.stack([np.asarray(obs["image"]) for obs in envs]), device=dev)
            items.append(Item("frame", Data({"frame": frames})))
        if "proprio" in self.model.tokenizers:
            items.append(Item("proprio", Data({"proprio": torch.as_tensor(np.stack(proprio), device=dev)},
                                              {"proprio": proprio_mask})))
        if not items:
            raise ValueError("this model reads none of text, frame, proprio: it cannot perceive")
        return Observed(items, proprio_mask, action_mask, has_frames, embs)

    @torch.no_grad()
    def perceive(self, observation: Mapping[str, Any] | Sequence[Mapping[str, Any]] | Observed,
                 embodiment: Embodiment | Sequence[Embodiment] | None = None) -> Context:
        """Run the prefix once and keep its keys/values for every later segment."""
        observed = observation if isinstance(observation, Observed) else self.observe(observation, embodiment)
        items, cache = observed.items, None
        if items[0].modality == "text" and (self.cfg.dropout == 0 or not self.model.training):
            items, cache = items[1:], self._task_prefix(items[0])
        if items:
            _, cache = self.model.run(items, cache, keep=True)
        return Context(observed, cache)

    # A rollout perceives the same task text every chunk, and text is most of the prefix (a
    # byte per token), so its keys and values are kept for the next call while the weights stay.
    _TASK_PREFIXES = 8

    def _task_prefix(self, text: Item) -> KVCache:
        """The task text's keys and values. Text comes first and no segment attends to a later
        one, so they do not depend on the frame and proprio that follow."""
        # Every in-place update (load_state_dict, an optimizer step) bumps a tensor's version.
        weights = tuple((p.data_ptr(), p._version) for p in self._text_parameters())
        if getattr(self, "_prefix_weights", None) != weights:
            self._prefix_weights, self._prefixes = weights, {}
        ids = text.data.values["ids"]
        key = (tuple(ids.shape), ids.cpu().numpy().tobytes())
        if key not in self._prefixes:
            if len(self._prefixes) >= self._TASK_PREFIXES:
                self._prefixes.clear()
            self._prefixes[key] = self.model.run([text], keep=True)[1]
        return self._prefixes[key]

    def _text_parameters(self) -> list[nn.Parameter]:
        """The weights the task text's keys and values depend on: the text tokenizer and the
        text expert (walking every module of the model per chunk cost more than the text)."""
        owners = (self.model.tokenizers["text"], self.model.backbone.experts[self.cfg.expert_of("text")])
        if getattr(self, "_text_owners", ()) != owners:  # modules compare by identity
            self._text_owners, self._text_params = owners, [p for m in owners for p in m.parameters()]
        return self._text_params

    # ------------------------------------------------------------------ Imagine

    def future_template(self, observed: Observed, n: int = 1) -> Data:
        cfg = self.cfg
        b = observed.batch * n
        values = {"proprio": torch.zeros(b, cfg.chunk, cfg.proprio_pad, device=self.device)}
        if observed.frames and cfg.future_frames:
            values["frames"] = torch.zeros(b, cfg.chunk, cfg.image_size, cfg.image_size, 3, device=self.device)
        return Data(values, {"proprio": observed.proprio_mask.repeat_interleave(n, dim=0)})

    @torch.no_grad()
    def imagine(self, context: Context, n: int = 1, steps: int | None = None,
                generator: torch.Generator | None = None) -> Imagined:
        """n imagined futures of the coming chunk per env: one batched sampler over B * n."""
        future = self.model.sample("future", self.future_template(context.observed, n),
                                   context.shared(n), steps=steps, generator=generator)
        return Imagined(from_model(self.model, future, context.observed.history(n)), n)

    # ------------------------------------------------------------------ Act

    @torch.no_grad()
    def act(self, context: Context, imagined: Imagined | None = None, steps: int | None = None,
            generator: torch.Generator | None = None) -> Acted:
        """The action chunk after each imagined future (or after the observation alone when
        ``imagined`` is None: the plain policy route)."""
        n = 1 if imagined is None else imagined.n
        cache, returns = context.shared(n), None
        if imagined is not None:
            future = to_model(self.model, imagined.future, context.observed.history(n))
            (hidden,), cache = self.model.run([Item("future", future)], cache, keep=True)
            if "return" in self.model.heads:
                returns = self.model.heads["return"](hidden)
        cfg = self.cfg
        template = context.observed.action_data(torch.zeros(context.batch, cfg.chunk, cfg.action_pad,
                                                            device=self.device)).repeat(n)
        actions = self.model.sample("action", template, cache, steps=steps, generator=generator)
        return Acted(actions, returns, n)

    # ------------------------------------------------------------------ Plan

    @torch.no_grad()
    def plan(self, context: Context, n_candidates: int = 4, reward_fn: RewardFn | None = None,
             return_weight: float = 1.0, steps: int | None = None,
             generator: torch.Generator | None = None) -> Plan:
        """Imagine ``n_candidates`` futures per env, act on each, keep the best-scoring one.

        score = the agent's own score + reward_fn(imagined proprio, actions), the agent's own
        score being the chunk ranker's (``policies.ranker``) where the model has one, else the
        critic's mean Q, else return_weight * the return head's.
        """
        b, n = context.batch, n_candidates
        imagined = self.imagine(context, n, steps=steps, generator=generator)
        acted = self.act(context, imagined, steps=steps, generator=generator)
        actions = acted.actions.values["action"].view(b, n, *acted.actions.values["action"].shape[1:])
        scores = torch.zeros(b, n, device=self.device)
        returns = None if acted.returns is None else acted.returns.view(b, n)
        if self.model.has_ranker:  # trained on exactly this: one state's candidates, ranked as the sim did
            chunks = acted.actions.zeroed().values["action"].view(b, n, *actions.shape[2:])
            scores = scores + self.model.heads[RANK](self.critic_features(context.observed), chunks)
        elif self.model.has_critic:  # the critic sees past the chunk; the return head only guesses its return
            features = self.critic_features(context.observed).repeat_interleave(n, dim=0)
            q = self.model.heads[critic.Q](features, acted.actions.zeroed().values["action"])
            scores = scores + q.mean(dim=0).view(b, n)
        elif returns is not None:
            scores = scores + return_weight * returns
        if reward_fn is not None:
            prop = imagined.future.values["proprio"]
            reward = reward_fn(prop.view(b, n, *prop.shape[1:]), actions)
            scores = scores + torch.as_tensor(reward, dtype=scores.dtype, device=self.device).view(b, n)
        return Plan.of(actions, imagined.future, scores, scores.argmax(dim=1), returns, context.observed.embodiments)

    # ------------------------------------------------------------------ the critic

    @torch.no_grad()
    def critic_features(self, observed: Observed) -> torch.Tensor:
        """(B, F) detached state features the critic reads: the proprio item's hidden states,
        mean-pooled, next to the latest proprio step, standardized and masked (frames left out:
        ``policies.critic``)."""
        items = [it for it in observed.items if it.modality != "frame"]
        if not items or items[-1].modality != "proprio":
            raise ValueError("the critic reads the proprio item's hidden states; this model perceives no proprio")
        cache = None
        if items[0].modality == "text" and (self.cfg.dropout == 0 or not self.model.training):
            items, cache = items[1:], self._task_prefix(items[0])
        hidden, _ = self.model.run(items, cache)
        proprio = items[-1].data.values["proprio"][:, -1]
        tok = self.model.tokenizers["proprio"]
        latest = (proprio - tok.shift) / tok.scale * observed.proprio_mask[:, 0]
        return torch.cat([hidden[-1].mean(dim=1), latest], dim=-1)

    def values(self, observed: Observed, target: bool = False) -> torch.Tensor:
        """V(s) (B,) of a batch of states (``target``: the slow EMA copy the TD targets use)."""
        head = self.model.heads[critic.VALUE_TARGET if target else critic.VALUE]
        return head(self.critic_features(observed))

    def chunk_values(self, observed: Observed, actions: torch.Tensor) -> torch.Tensor:
        """Every Q member of action chunks (B, T, A; model units, padded) in these states: (K, B)."""
        zeroed = observed.action_data(actions).zeroed().values["action"]
        return self.model.heads[critic.Q](self.critic_features(observed), zeroed)

    # ------------------------------------------------------------------ routes

    def generate(self, inputs: dict[str, Data], output: str, template: Data | None = None,
                 steps: int | None = None, generator: torch.Generator | None = None) -> Data | list[str]:
        """Any route through the same weights (see ``policies.routes``)."""
        return routes.generate(self.model, inputs, output, template, steps=steps, generator=generator)

    # ------------------------------------------------------------------ training

    def loss(self, observed: Observed, future: Data, actions: Data, returns: torch.Tensor | None = None,
             generator: torch.Generator | None = None,
             action_weights: torch.Tensor | None = None,
             noise: Mapping[str, tuple[Data, torch.Tensor]] | None = None,
             denominators: Mapping[str, Any] | None = None, plan: Data | None = None) -> dict[str, torch.Tensor]:
        """Imagination and acting in one sequence: [prefix, future (noisy), future (clean), action (noisy)].

        The noisy future is invisible to what follows, so the actions learn from the clean
        future, which at inference is the imagined one. ``plan``, where given, is the clean
        future instead (e.g. the one a rollout imagined, so the actions learn from the input they
        get at inference) while ``future`` stays the imagination's target. ``returns`` (B,) trains
        the return head; ``action_weights`` (B,) weight each sample's action regression (the
        flywheel's grades).

        For data-parallel shares of a larger batch: ``noise`` gives ``{"future" | "action":
        (x0, t)}`` instead of drawing them from ``generator``, and ``denominators`` gives the
        larger batch's normalizers: ``{"future" | "action": {part: value}}`` (see
        ``flow.loss_denominators``) and ``"return"``: the number of rows the return error
        is averaged over.
        """
        noise, denominators = noise or {}, denominators or {}
        history = observed.history()
        future = to_model(self.model, future, history)
        plan = None if plan is None else to_model(self.model, plan, history)
        f_x0, f_t = noise.get("future", (None, None))
        a_x0, a_t = noise.get("action", (None, None))
        noisy_future, f0, f1 = self.model.flow_target("future", future, generator, t=f_t, x0=f_x0)
        noisy_action, a0, a1 = self.model.flow_target("action", actions, generator, t=a_t, x0=a_x0)
        items = [*observed.items, noisy_future, Item("future", future if plan is None else plan), noisy_action]
        hidden, _ = self.model.run(items)
        k = len(observed.items)
        out = {"future": self.model.flow_loss("future", hidden[k], f0, f1, denominators=denominators.get("future")),
               "action": self.model.flow_loss("action", hidden[k + 2], a0, a1, action_weights,
                                              denominators=denominators.get("action"))}
        if returns is not None and "return" in self.model.heads:
            predicted = self.model.heads["return"](hidden[k + 1])
            if "return" in denominators:
                out["return"] = ((predicted - returns) ** 2).sum() / denominators["return"]
            else:
                out["return"] = torch.nn.functional.mse_loss(predicted, returns)
        out["total"] = sum(out.values())
        return out

    def action_loss(self, observed: Observed, plan: Data, actions: Data, returns: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, noise: tuple[Data, torch.Tensor] | None = None,
                    denominators: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """The action expert's flow loss (``"action"``) and, with ``returns`` (B,), the return
        head's error on the plan (``"return"``), as the agent acts and scores a plan at
        inference: [prefix, plan (clean), action (noisy)]. ``loss``'s terms without the noisy
        future, which nothing after it sees; ``noise`` is the action's (x0, t) and
        ``denominators`` as in ``loss``."""
        denominators = denominators or {}
        a_x0, a_t = noise if noise is not None else (None, None)
        noisy_action, a0, a1 = self.model.flow_target("action", actions, generator, t=a_t, x0=a_x0)
        items = [*observed.items, Item("future", to_model(self.model, plan, observed.history())), noisy_action]
        hidden, _ = self.model.run(items)
        out = {"action": self.model.flow_loss("action", hidden[-1], a0, a1, denominators=denominators.get("action"))}
        if returns is not None and "return" in self.model.heads:
            error = (self.model.heads["return"](hidden[-2]) - returns) ** 2
            out["return"] = error.sum() / denominators["return"] if "return" in denominators else error.mean()
        return out


def _per_env(observation: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(observation, Mapping):
        if isinstance(observation["task"], str):
            return [observation]
        n = len(observation["task"])
        return [{k: (v[i] if k in ("proprio", "image", "task") and v is not None else v)
                 for k, v in observation.items()} for i in range(n)]
    return list(observation)
