"""The learned training sim learns from the flywheel (``world_model.refit=true``).

A learned sim (``learned/<engine sim>``) steps a shadow of its engine with the same actions,
and the rollout rows keep what that engine did (``flywheel.rows.ENGINE_COLUMNS``): realized
physics on the states the agent visits, whatever the learned sim showed it. After each cycle's
rollouts, ``Refit`` fine-tunes the world model the cycle practised in (``world_model.fit`` with
``init=``: its weights and normalization, ``world_model.refit_steps`` steps) on those engine
transitions beside the recipe's own (``world_model.collect``'s, regenerated from its seed once
per process, so that what it knew of the states the agent does not visit is kept), writes it
to ``RUN_DIR/world_models/v<cycle + 1>`` (safetensors + JSON, ``world_model.checkpoint``) and
measures its fidelity against the reference on the run's probe set, as the run's start does
(``flywheel.controller.training_fidelity``). The next cycle's rollout actors step with it.

It runs in the driver, between learning and evaluation: the ensemble is small (4 MLPs of 64
units at the default recipe), so 200 steps at batch 256 take seconds on one thread, a few per
cent of a default cycle; a Ray task would add a round trip and a process for no gain, and the
driver already holds the cycle's rows. Every input is seeded (the recipe's data, the fit's
seed from the run's seed and the cycle), so a resumed run refits exactly as it would have.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

import sims
import world_model as wm
from configs.run_schema import RunConfig
from configs.schema import SimConfig
from flywheel.rows import ACTIONS, CHUNK, ENGINE_REALIZED, ENGINE_REWARDS, ENGINE_START, EPISODE, STEPS, ChunkRows
from sims.embodiment import Embodiment
from world_model import LearnedSimulator, Transitions

WORLD_MODELS = "world_models"  # under the run directory: v0001, v0002, ... (the version each cycle practised in)


def engine_transitions(rows: ChunkRows, reference: str, embodiment: Embodiment) -> Transitions:
    """The engine's transitions behind a learned sim's rows, one per executed step, episode by
    episode in step order (multi-step windows of the fit stay inside one episode)."""
    if not rows.engine:
        raise ValueError(f"{reference}: the rows hold no engine columns (only a learned training sim records them)")
    order = np.lexsort((rows[CHUNK], rows[EPISODE]))
    d = embodiment.proprio_dim
    parts: dict[str, list] = {"proprio": [], "action": [], "next_proprio": [], "reward": [], "episode": []}
    for i in order:
        n = int(rows[STEPS][i])
        after = rows[ENGINE_REALIZED][i, :n, :d]
        parts["proprio"].append(np.concatenate([rows[ENGINE_START][i, None, :d], after[:-1]]))
        parts["next_proprio"].append(after)
        parts["action"].append(embodiment.to_env_action(embodiment.unpad_action(rows[ACTIONS][i, :n])))
        parts["reward"].append(rows[ENGINE_REWARDS][i, :n])
        parts["episode"].append(np.full(n, rows[EPISODE][i]))
    return Transitions(reference, *(np.concatenate(parts[k]) for k in parts))


def refit_seed(run_seed: int, cycle: int) -> int:
    """The seed of cycle ``cycle``'s refit (its minibatches): another each cycle, the same on a resume."""
    return int(np.random.SeedSequence([run_seed, cycle]).generate_state(1)[0])


def version_dir(run_dir: str | Path, version: int) -> Path:
    return Path(run_dir) / WORLD_MODELS / f"v{version:04d}"


@dataclasses.dataclass
class Refit:
    """A run's refits: the recipe, the engine, and the recipe's own transitions (collected once)."""

    config: RunConfig
    run_dir: Path
    _recipe_data: Transitions | None = None

    @property
    def reference(self) -> str:
        return self.config.sim.name.removeprefix(wm.PREFIX)

    def recipe_data(self) -> Transitions:
        """``flywheel world-model fit``'s transitions for the run's recipe (seeded: the same every time)."""
        if self._recipe_data is None:
            collect = self.config.world_model.collect
            kwargs = SimConfig(name=self.reference).make_kwargs()
            kwargs.pop("camera")
            self._recipe_data = wm.collect(self.reference, collect.steps, seed=collect.seed,
                                           demo_fraction=collect.demo_fraction, noise=collect.noise, **kwargs)
        return self._recipe_data

    def __call__(self, simulator: LearnedSimulator, rows: ChunkRows, cycle: int
                 ) -> tuple[LearnedSimulator, dict[str, Any]]:
        """Cycle ``cycle``'s refit of ``simulator`` on its rows: the new simulator (written as
        version ``cycle + 1``) and its part of the cycle's record."""
        from flywheel.controller import training_fidelity  # the controller imports the cycle, which imports this

        recipe = self.config.world_model
        env = sims.make(self.reference)
        embodiment = env.embodiment
        env.close()
        flywheel = engine_transitions(rows, self.reference, embodiment)
        train = dataclasses.replace(recipe.train, steps=recipe.refit_steps, seed=refit_seed(self.config.seed, cycle))
        refitted = wm.fit([self.recipe_data(), flywheel], config=train, init=simulator)
        refitted.metadata["refit"] = {"cycle": cycle, "flywheel_transitions": len(flywheel),
                                      "recipe_transitions": len(self.recipe_data())}
        path = version_dir(self.run_dir, cycle + 1)
        wm.save_checkpoint(refitted, path)
        measured = training_fidelity(dataclasses.replace(self.config, sim=dataclasses.replace(
            self.config.sim, checkpoint=str(path))), console=lambda *_: None)
        return refitted, {"version": cycle + 1, "checkpoint": str(path.relative_to(self.run_dir)),
                          "fidelity": measured["fidelity"], "fidelity_detail": measured,
                          "flywheel_transitions": len(flywheel), "recipe_transitions": len(self.recipe_data()),
                          "steps": recipe.refit_steps, "final_loss": refitted.metadata["final_loss"]}


def in_use(config: RunConfig, run_dir: Path, record: dict[str, Any] | None) -> str:
    """The world model the next cycle practises in: the latest refit's (``record``: the last
    complete cycle's), else the training sim's own checkpoint."""
    refitted = (record or {}).get("world_model")
    return str(Path(run_dir) / refitted["checkpoint"]) if refitted else str(config.sim.checkpoint)
