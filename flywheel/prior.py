"""Prior data: the starter's own pretraining data, trained on beside the flywheel's rows.

RLPD (Ball et al. 2023) keeps the demonstrations in the replay for the whole run and samples
every batch half from them, half from fresh data, so online updates refine what the prior
taught instead of overwriting it. Here the prior is the data the starter was pretrained on
(``policies.pretrain.datasets``: demonstrations, noisy and random episodes of its sims), and
with ``learner.prior_coef`` > 0 every learner step adds, on a batch of it (per stage, as large
as the flywheel's batch or ``learner.prior_batch_size``), the pretraining objective of each
stage whose expert the flywheel trains
(``video``: imagine the realized future; ``action``: the demonstrator's label, on the policy
route and on the plan route):

    L = L_flywheel + prior_coef * sum_stage L_stage(prior batch)

The data comes from the recipe saved beside the starter's checkpoint (``config.yaml``) and
its cache: ``resolve`` generates it there, before Ray starts, when the cache is gone (the
sims regenerate it bit for bit), so the learners only read it. A start without such data
(``pretrained=scratch``, weights made elsewhere) trains without the term, and says so.

Data parallelism: step s's prior batch is drawn from a generator seeded by (seed, version,
s, stage), the same on every rank, and rank r computes the stage loss on its contiguous
slice, weighted by its share of the rows, so the ranks' shares sum to the batch's loss when
every example weighs alike (one embodiment; the pretraining losses average over real
entries). The flow noise is the rank's own draw: two learners make the update one learner
makes in expectation, not bit for bit (the flywheel's own term still is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:  # the module is imported by the learners; the sims behind datasets load lazily
    from policies.pretrain.datasets import DataSpec


# The pretraining stage that trains each expert the flywheel can train (``learner.train_experts``).
STAGE_OF_EXPERT = {"video": "video", "action": "action"}


@dataclass(frozen=True)
class PriorSpec:
    """What a learner needs to read the prior, as plain data."""

    cache_dir: str           # absolute: the recipe's data cache, generated already
    data: DataSpec           # the recipe's data, checked already (by ``resolve``, before Ray)
    proprio_pad: int         # the starter's padded sizes, as its pretraining loaded the data
    action_pad: int
    coef: float
    stages: tuple[str, ...]  # pretraining stages whose objectives the learners add
    video_uncond: float      # the recipe's share of video batches imagined without the chunk's actions
    frames: bool             # keep the data's frames: only in a camera run (``RunConfig.camera``)
    batch_size: int | None = None  # examples per stage a step (None: the flywheel batch's size)


def recipe(checkpoint: str | Path):
    """The pretraining recipe of ``checkpoint`` and what its checks worked out
    (``policies.pretrain.run.Checked``); None when there is no recipe beside it."""
    from policies.pretrain.run import check, saved_config

    config = saved_config(Path(checkpoint).parent)
    return None if config is None else (config, check(config))


def resolve(checkpoint: str | Path | None, coef: float, train_experts, camera: bool,
            log: Callable[[str], None] = print, batch_size: int | None = None) -> PriorSpec | None:
    """The run's prior, its data generated now if the cache is gone; None, said in one line,
    when there is none to read: ``coef`` is 0, the run starts from scratch, the starter has no
    recipe beside it (weights made elsewhere), or the recipe trained none of ``train_experts``.
    The prior's frames are kept only in a camera run (``camera``): the prior
    should teach the observation the agent acts on in the flywheel."""
    if not coef:
        return None
    if checkpoint is None:
        log("prior data: none (pretrained=scratch has no pretraining data); learner.prior_coef is unused")
        return None
    from policies.pretrain import datasets
    from policies.pretrain.run import CONFIG_FILE

    found = recipe(checkpoint)
    if found is None:
        log(f"prior data: none ({Path(checkpoint).parent / CONFIG_FILE}, the recipe that made the starter, is missing); "
            f"learner.prior_coef is unused")
        return None
    config, checked = found
    stages = tuple(STAGE_OF_EXPERT[e] for e in train_experts
                   if e in STAGE_OF_EXPERT and STAGE_OF_EXPERT[e] in config.stages)
    if not stages:
        log(f"prior data: none (the starter's recipe has no stage of the trained experts {list(train_experts)}); "
            f"learner.prior_coef is unused")
        return None
    cache_dir = Path(config.data.cache_dir).resolve()
    datasets.ensure(checked.spec, cache_dir, workers=1, log=log, progress=False)
    log(f"prior data: the starter's {' and '.join(stages)} data from {cache_dir}, weight {coef} in every learner step")
    return PriorSpec(str(cache_dir), checked.spec, checked.model.proprio_pad,
                     checked.model.action_pad, float(coef), stages, float(config.train.video_uncond), bool(camera),
                     batch_size)


def banks(spec: PriorSpec, split: str = "train") -> dict:
    """``{stage: Bank}`` of the prior's data, read from its cache (checksums verified; units
    missing from the cache are generated again)."""
    from policies.pretrain import datasets

    directory, manifest = datasets.ensure(spec.data, spec.cache_dir, 1, log=lambda _: None, progress=False)
    loaded = datasets.load(directory, manifest, spec.data, spec.proprio_pad, spec.action_pad)
    return {stage: loaded[stage][split] for stage in spec.stages}


class PriorData:
    """The prior's batches and their loss share, in a learner (or any training loop)."""

    def __init__(self, spec: PriorSpec) -> None:
        self.spec = spec
        self.banks = banks(spec)

    def share(self, model, key: tuple[int, ...], batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """Rank ``rank``'s share of ``coef * sum_stage L_stage`` on step ``key``'s prior batch
        of ``batch_size`` examples."""
        from flywheel.objective import seed_of, shard_bounds
        from policies.pretrain.objectives import make_batch

        start, stop = shard_bounds(batch_size, rank, world_size)
        device = next(model.parameters()).device
        total = torch.zeros((), device=device)
        for i, stage in enumerate(self.spec.stages):
            bank = self.banks[stage]
            draw = torch.Generator().manual_seed(seed_of(*key, i))
            index = torch.randint(0, len(bank), (batch_size,), generator=draw)[start:stop]
            batch = make_batch(bank, index, model)
            if not self.spec.frames:
                batch.observation.pop("frame", None)
            noise = torch.Generator(device=device).manual_seed(seed_of(*key, i, rank + 1))
            total = total + self._loss(stage, model, batch.to(device), noise) * ((stop - start) / batch_size)
        return self.spec.coef * total

    def _loss(self, stage: str, model, batch, noise: torch.Generator) -> torch.Tensor:
        from policies.pretrain.objectives import OBJECTIVES, video_loss

        if stage == "video":
            return video_loss(model, batch, noise, uncond=self.spec.video_uncond)
        return OBJECTIVES[stage](model, batch, noise)

