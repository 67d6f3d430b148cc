"""``pretrain(config)``: the staged run, end to end, resumable.

    config checks -> data (generate or load the cache) -> schedule -> for each band:
        add the band's expert, freeze the others, train, evaluate, save stages/<band>/
    -> checkpoint/, schedule.png, metrics.json, metrics.md

Everything that can be wrong with the input is checked before the first example is
generated or the first step taken: unknown sims, a stage order that does not match the
expert list, a dataset that would be empty, a schedule without room for every stage.

Resume: ``stages/<band>/`` holds the model after that band (``policies.checkpoint``
format) and a done marker with the checksums of its files and the band's metrics. A run
started again with the same name and the same configuration loads the last intact stage
and continues with the next one; randomness is seeded per band, so a resumed run trains
exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from policies import checkpoint
from policies.config import DEFAULT_MODALITIES, ModelConfig, model_config
from policies.model import Model
from policies.pretrain import datasets, metrics, objectives, report, store
from policies.pretrain.schedule import DECAY, Band, Schedule, build_schedule, plan
from sims.files import write_bytes_atomic, write_json_atomic

STAGES_DIR = "stages"
CONFIG_FILE = "config.yaml"  # the run's config and its training hash, beside its checkpoint
CHECKPOINT_DIR = "checkpoint"
# The stages that teach acting and imagining, which a run without a camera does without frames
# (``train.frame_dropout``); understanding and image generation are about the frame.
FRAMELESS_STAGES = ("video", "action")


# ---------------------------------------------------------------------- configuration


def model_config_of(config) -> ModelConfig:
    """The model of a ``PretrainConfig``: ``model.size`` plus overrides, with the expert list
    given by the stages and the ``command`` modality (actions read by the video expert)."""
    agent = config.model
    if agent.checkpoint:
        raise ValueError("pretraining builds a fresh model; model.checkpoint is not supported here")
    overrides = {f.name: getattr(agent, f.name) for f in fields(agent) if f.name not in ("size", "device", "checkpoint")}
    experts = overrides.pop("experts", None)
    stages = list(config.stages)
    if experts is not None and list(experts) != stages:
        raise ValueError(f"the stage order {stages} does not match the expert list {list(experts)}: "
                         "each stage adds the next expert, in order")
    cfg = model_config(agent.size, **overrides)
    if experts is None and list(cfg.experts) != stages:
        raise ValueError(f"the stage order {stages} does not match the expert list {list(cfg.experts)} of "
                         f"model size {agent.size!r}: each stage adds the next expert, in order "
                         "(set model.experts to the stages)")
    reader = cfg.expert_of("proprio")
    if reader not in stages:
        raise ValueError(f"the stages {stages} leave out {reader!r}, the expert that reads the proprio every route "
                         "starts from; keep it (first)")
    modalities = tuple(cfg.modalities)
    if "video" in stages and "command" not in dict(modalities):
        modalities += (("command", "video"),)
    missing = [s for s in stages if s not in objectives.OBJECTIVES]
    if missing:
        raise ValueError(f"no pretraining objective for stage(s) {missing} (known: {sorted(objectives.OBJECTIVES)})")
    return replace(cfg, experts=tuple(stages), modalities=modalities)


def data_spec_of(config, cfg: ModelConfig) -> datasets.DataSpec:
    d = config.data
    return datasets.DataSpec(
        sims=tuple(d.sims), sizes=tuple(datasets.stage_sizes(list(config.stages), d.first, list(d.ratios))),
        held_out=d.held_out, camera=d.camera, image_size=cfg.image_size, history=cfg.history, chunk=cfg.chunk,
        scene_every=d.scene_every, random_episodes=d.random_episodes, scene_noise=d.scene_noise,
        video_noise=d.video_noise, action_noise=d.action_noise, stride=d.stride, after_success=d.after_success,
        max_steps=d.max_steps, shard=d.shard, seed=d.seed)


def schedule_of(config) -> Schedule:
    s = config.schedule
    return build_schedule(list(config.stages), s.steps, s.peak_lr, s.warmup, s.decay, s.first_share,
                          list(s.shares), s.final_lr_ratio)


def training_hash(config) -> str:
    """What a resumed run must share with the run it continues (not names, paths or eval sizes)."""
    payload = asdict(config)
    for key in ("name", "root", "resume", "eval"):
        payload.pop(key)
    for key in ("workers", "cache_dir"):
        payload["data"].pop(key)
    for key in ("threads", "log_every"):
        payload["train"].pop(key)
    payload["model"].pop("device")
    return store.config_hash(payload)[:16]


@dataclass
class Checked:
    """A configuration that passed every check, with what the checks worked out."""

    model: ModelConfig
    spec: datasets.DataSpec
    schedule: Schedule
    plan: list[str]
    sims: dict[str, dict[str, Any]]


def check(config) -> Checked:
    """Every input check, before any data is generated or any step taken."""
    import sims

    if config.curriculum not in ("staged", "joint"):
        raise ValueError(f"curriculum must be 'staged' or 'joint', got {config.curriculum!r}")
    if not config.stages:
        raise ValueError("stages is empty")
    cfg = model_config_of(config)
    if not config.data.sims:
        raise ValueError("data.sims is empty: name at least one registered sim")
    for name in config.data.sims:
        sims.check_config(name, {})  # unknown sims fail here, listing the known ones
    if len(set(config.data.sims)) != len(config.data.sims):
        raise ValueError(f"data.sims lists a sim twice: {list(config.data.sims)}")
    spec = data_spec_of(config, cfg)
    schedule = schedule_of(config)
    t = config.train
    if t.batch_size < 1 or not 0 < t.decay_quality <= 1 or not 0 <= t.video_uncond <= 1:
        raise ValueError("train.batch_size must be >= 1, train.decay_quality in (0, 1], train.video_uncond in [0, 1]")
    if not 0 <= t.frame_dropout <= 1:
        raise ValueError(f"train.frame_dropout must be in [0, 1], got {t.frame_dropout}")
    e = config.eval
    if not 1 <= e.execute <= cfg.chunk:
        raise ValueError(f"eval.execute must be in [1, chunk={cfg.chunk}], got {e.execute}")
    info = {name: datasets.sim_info(name) for name in spec.sims}
    datasets.check_spec(spec, info)
    datasets.check_demonstrations(spec)
    # The decay mixes the high-quality data of every expert it trains.
    decay_mix = trainable(schedule.decay, config, cfg.experts)
    return Checked(cfg, spec, schedule, plan(schedule, config.curriculum, config.seed, decay_mix), info)


# ---------------------------------------------------------------------- the run


Callback = Callable[[str, dict[str, Any]], None]


def pretrain(config, on_band_end: Callback | None = None, log: Callable[[str], None] = print,
             progress: bool = True) -> dict[str, Any]:
    """Run (or resume) pretraining; returns the summary also written to ``metrics.json``.

    ``on_band_end(band, metrics)`` is called after each band is saved (tests interrupt there).
    """
    started = time.perf_counter()
    checked = check(config)
    cfg, spec, schedule, steps_plan = checked.model, checked.spec, checked.schedule, checked.plan
    run_dir = Path(config.root) / config.name
    thash = training_hash(config)
    _prepare_run_dir(run_dir, config, thash)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)

    t0 = time.perf_counter()
    cache_dir, manifest = datasets.ensure(spec, config.data.cache_dir, config.data.workers, log=log,
                                          progress=progress)
    banks = datasets.load(cache_dir, manifest, spec, cfg.proprio_pad, cfg.action_pad)
    shift, scale = datasets.proprio_statistics(banks, cfg.proprio_pad)
    data_seconds = time.perf_counter() - t0
    report.plot_schedule(schedule, list(cfg.experts), config.curriculum, config.train.decay_unfreeze,
                         run_dir / "schedule.png", title=f"{config.name}: {config.curriculum} curriculum, "
                                                         f"{schedule.total} steps")

    _check_text_fits(banks, cfg, log)
    results: list[dict[str, Any]] = []
    model: Model | None = None
    baselines: dict[str, Any] = {}
    resumed_from = None
    completed = _completed(run_dir, schedule, thash)
    for k, band in enumerate(schedule.bands):
        stage_dir = run_dir / STAGES_DIR / band.name
        if k < len(completed):
            results.append(completed[k]["metrics"])
            baselines = completed[k].get("baselines", baselines)
            resumed_from = band.name
            continue
        if model is None:
            if resumed_from is not None:
                model = checkpoint.load(run_dir / STAGES_DIR / resumed_from / "model")
                log(f"resume: stages up to {resumed_from!r} are complete; continuing with {band.name!r}")
            else:
                torch.manual_seed(config.seed)
                first = cfg if config.curriculum == "joint" else replace(cfg, experts=cfg.experts[:1])
                model = Model(first)
                model.tokenizers["proprio"].set_normalization(shift, scale)
                set_motion_scale(model, banks)
        result = _train_band(model, k, band, config, checked, banks, steps_plan, log, progress)
        eval_start = time.perf_counter()
        if not baselines and _wants_success(config, band, cfg):
            baselines = _baselines(config, spec, cfg, log)
        result.update(_evaluate(model, band, config, checked, banks, scale, log))
        result["eval_seconds"] = round(time.perf_counter() - eval_start, 1)
        results.append(result)
        checkpoint.save(model, stage_dir / "model", metadata={"band": band.name, "step": band.stop})
        store.mark_done(stage_dir, ["model/model.safetensors", "model/config.json"], band=band.name,
                        training_hash=thash, metrics=result, baselines=baselines)
        log(_band_line(result, baselines))
        if on_band_end is not None:
            on_band_end(band.name, result)
    if model is None:  # every band was already complete
        model = checkpoint.load(run_dir / STAGES_DIR / schedule.bands[-1].name / "model")

    summary = {
        "name": config.name, "curriculum": config.curriculum, "stages": list(config.stages),
        "decay_unfreeze": config.train.decay_unfreeze, "steps": schedule.total,
        "bands": [asdict(b) for b in schedule.bands], "data": {"key": spec.key(), "dir": str(cache_dir),
                                                               "counts": manifest["counts"],
                                                               "seconds": round(data_seconds, 1)},
        "baselines": baselines, "metrics": results, "resumed_from": resumed_from,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "model": cfg.to_dict(), "parameters": sum(p.numel() for p in model.parameters()),
    }
    for expert in model.cfg.experts:  # the delivered checkpoint has nothing frozen
        model.unfreeze(expert)
    checkpoint.save(model, run_dir / CHECKPOINT_DIR, metadata={
        "pretrain": {"name": config.name, "curriculum": config.curriculum, "steps": schedule.total,
                     "data_key": spec.key(), "final": results[-1]}})
    write_json_atomic(run_dir / "metrics.json", summary)
    title = f"Pretraining {config.name} ({config.curriculum}, {schedule.total} steps)"
    write_bytes_atomic(run_dir / "metrics.md", report.metrics_markdown(results, baselines, title).encode())
    log(f"wrote {run_dir / CHECKPOINT_DIR}, schedule.png, metrics.json, metrics.md "
        f"({summary['wall_seconds']:.0f} s)")
    return summary


def _completed(run_dir: Path, schedule: Schedule, thash: str) -> list[dict[str, Any]]:
    """Done markers of the leading bands that are complete and intact (a resume starts after them)."""
    out = []
    for band in schedule.bands:
        done = store.read_done(run_dir / STAGES_DIR / band.name)
        if done is None or done.get("training_hash") != thash:
            break
        out.append(done)
    for band in schedule.bands[len(out):]:  # anything after the first gap is stale
        stale = run_dir / STAGES_DIR / band.name
        if stale.exists():
            shutil.rmtree(stale)
    return out


def _check_text_fits(banks, cfg: ModelConfig, log) -> None:
    if "understand" not in banks:
        return
    bank = banks["understand"]["train"]
    longest = max(len(objectives.question_text(q, t).encode()) for q in set(bank.texts["question"])
                  for t in bank.tasks)
    question = max(len(q.encode()) for q in set(bank.texts["question"]))
    if question + 8 > cfg.text_max - 2:
        raise ValueError(f"model.text_max={cfg.text_max} is too short for the questions ({question} bytes)")
    if longest > cfg.text_max - 2:
        log(f"note: question + task text is up to {longest} bytes; the task text is cut to fit "
            f"model.text_max={cfg.text_max}")


def _prepare_run_dir(run_dir: Path, config, thash: str) -> None:
    import yaml

    saved = run_dir / CONFIG_FILE
    if saved.is_file() and (run_dir / STAGES_DIR).is_dir():
        previous = yaml.safe_load(saved.read_text()) or {}
        if previous.get("training_hash") != thash:
            if config.resume:
                raise ValueError(f"{run_dir} holds a run with a different configuration; pick another name= "
                                 "or pass resume=false to start it over")
        if not config.resume:
            shutil.rmtree(run_dir / STAGES_DIR)
    elif not config.resume and (run_dir / STAGES_DIR).is_dir():
        shutil.rmtree(run_dir / STAGES_DIR)
    payload = {"training_hash": thash, **asdict(config)}
    write_bytes_atomic(saved, yaml.safe_dump(payload, sort_keys=False).encode())


def saved_config(run_dir: Path):
    """The ``PretrainConfig`` a run directory was trained with (its ``config.yaml``), or None."""
    from omegaconf import OmegaConf

    from configs.schema import PretrainConfig, to_dataclass

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    raw = OmegaConf.load(path)
    raw.pop("training_hash", None)
    return to_dataclass(OmegaConf.merge(OmegaConf.structured(PretrainConfig), raw), PretrainConfig)


# ---------------------------------------------------------------------- one band


def trainable(band: Band, config, stages: tuple[str, ...]) -> list[str]:
    if config.curriculum == "joint":
        return list(stages)
    if band.name == DECAY:
        return list(stages) if config.train.decay_unfreeze else [stages[-1]]
    return [band.name]


def set_motion_scale(model: Model, banks) -> None:
    """A new future tokenizer's motion scale, from the episodes' windows (``policies.future``)."""
    if "future" in model.tokenizers and model.cfg.relative_future:
        motion = datasets.motion_statistics(banks, model.cfg.chunk, model.cfg.proprio_pad)
        if motion is not None:
            model.tokenizers["future"].set_motion_scale(motion)


def _train_band(model: Model, k: int, band: Band, config, checked: Checked, banks, steps_plan: list[str],
                log, progress: bool) -> dict[str, Any]:
    cfg, schedule = checked.model, checked.schedule
    torch.manual_seed(config.seed * 1000 + k)  # a new expert's initial weights
    if band.name != DECAY and band.name not in model.cfg.experts:
        model.add_expert(band.name)
        set_motion_scale(model, banks)
    training = trainable(band, config, cfg.experts)
    for expert in model.cfg.experts:
        (model.unfreeze if expert in training else model.freeze)(expert)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=schedule.lr(band.start), betas=(0.9, 0.95),
                            weight_decay=config.train.weight_decay, fused=True)  # one kernel, not ~10 ops a tensor
    needed = sorted(set(steps_plan[band.start:band.stop]))
    samplers = {}
    for j, stage in enumerate(needed):
        bank = banks[stage]["train"]
        subset = objectives.high_quality(bank, config.train.decay_quality) if band.name == DECAY else None
        samplers[stage] = objectives.Sampler(bank, config.train.batch_size, config.seed * 1000 + k * 10 + j, subset)
    losses_of = {s: (partial(objectives.video_loss, uncond=config.train.video_uncond) if s == "video"
                     else objectives.OBJECTIVES[s]) for s in needed}
    generator = torch.Generator().manual_seed(config.seed * 1000 + k)
    # Its own stream: which batches go without frames leaves every other draw as it was.
    frameless = np.random.default_rng([config.seed, k])
    start = time.perf_counter()
    window: dict[str, list[float]] = {s: [] for s in needed}
    last: dict[str, float] = {}
    bar = _bar(progress, len(band), f"{band.name} ({', '.join(training)} training)")
    with bar:
        for step in range(band.start, band.stop):
            stage = steps_plan[step]
            lr = schedule.lr(step)
            for group in opt.param_groups:
                group["lr"] = lr
            batch = samplers[stage].sample(model)
            if stage in FRAMELESS_STAGES and frameless.random() < config.train.frame_dropout:
                batch.observation.pop("frame", None)
            loss = losses_of[stage](model, batch, generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{band.name}: non-finite {stage} loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.train.grad_clip)
            opt.step()
            window[stage].append(loss.item())
            bar.advance()
            done = step + 1 - band.start
            if done % config.train.log_every == 0 or step + 1 == band.stop:
                for s, values in window.items():
                    if values:
                        last[s] = sum(values) / len(values)
                window = {s: [] for s in needed}
                losses = ", ".join(f"{s} {v:.4f}" for s, v in last.items())
                log(f"[{band.name}] step {step + 1}/{schedule.total} lr {lr:.2e} loss {losses} "
                    f"({time.perf_counter() - start:.0f} s)")
    model.eval()
    return {"stage": band.name, "start": band.start, "stop": band.stop, "training": training,
            "frozen": sorted(model.frozen), "experts": list(model.cfg.experts),
            "loss": float(sum(last.values()) / max(1, len(last))), "losses": last,
            "lr_end": schedule.lr(band.stop - 1), "train_seconds": round(time.perf_counter() - start, 1)}


class _bar:
    """A rich progress bar on a terminal; nothing otherwise (log lines cover it)."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        from rich.console import Console

        self.progress = None
        if enabled and Console().is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), transient=True)
            self.task = self.progress.add_task(description, total=total)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)


# ---------------------------------------------------------------------- evaluation


def _trained(band: Band, config, stages: tuple[str, ...]) -> list[str]:
    """The stages whose capability exists (has been trained) after ``band``."""
    if config.curriculum == "joint" or band.name == DECAY:
        return list(stages)
    return list(stages[: stages.index(band.name) + 1])


def _wants_success(config, band: Band, cfg: ModelConfig) -> bool:
    trained = _trained(band, config, cfg.experts)
    last_stage = cfg.experts[-1]
    return (config.eval.episodes > 0 and "action" in trained
            and (band.name in (DECAY, "action") or (config.curriculum == "joint" and band.name == last_stage)))


def _evaluate(model: Model, band: Band, config, checked: Checked, banks, scale: torch.Tensor, log) -> dict[str, Any]:
    e, cfg = config.eval, checked.model
    trained = _trained(band, config, cfg.experts)
    out: dict[str, Any] = {}
    with torch.no_grad():
        if "understand" in trained:
            out.update(metrics.understanding(model, banks["understand"]["eval"], banks["understand"]["train"],
                                             e.examples, e.batch_size))
        if "image" in trained:
            out.update(metrics.frames(model, banks["image"]["eval"], banks["image"]["train"], e.examples,
                                      e.batch_size, config.seed))
        if "video" in trained:
            out.update(metrics.imagination(model, banks["video"]["eval"], e.examples, e.batch_size, config.seed,
                                           scale))
        if "action" in trained:
            out.update(metrics.actions(model, banks["action"]["eval"], e.examples, e.batch_size, config.seed))
        if _wants_success(config, band, cfg):
            out["success"] = {}
            for sim in checked.spec.sims:
                r = metrics.closed_loop(sim, e.episodes, e.seed, e.execute, checked.spec.camera, cfg.image_size,
                                        model=model)
                out["success"][sim] = r["success"]
            if checked.spec.camera:  # as a flywheel run without a camera (its default) will act
                out["success_no_frames"] = {
                    sim: metrics.closed_loop(sim, e.episodes, e.seed, e.execute, False, cfg.image_size,
                                             model=model)["success"] for sim in checked.spec.sims}
    return out


def _baselines(config, spec: datasets.DataSpec, cfg: ModelConfig, log) -> dict[str, Any]:
    e = config.eval
    out: dict[str, dict[str, float]] = {"random": {}, "demonstrator": {}}
    for sim in spec.sims:
        for policy in ("random", "demonstrator"):
            out[policy][sim] = metrics.closed_loop(sim, e.episodes, e.seed, 1, False, cfg.image_size,
                                                   policy=policy)["success"]
    log("baselines (success over the evaluation seeds): " + json.dumps(out))
    return out


def _band_line(m: dict[str, Any], baselines: dict[str, Any]) -> str:
    parts = [f"[{m['stage']}] done: loss {m['loss']:.4f}"]
    if "understand_accuracy" in m:
        parts.append(f"answer accuracy {m['understand_accuracy']:.3f} (chance {m['understand_chance']:.3f}, "
                     f"majority {m['understand_majority']:.3f})")
    if "frame_mse" in m:
        parts.append(f"frame MSE {m['frame_mse']:.4f} (mean frame {m['frame_mse_mean_frame']:.4f}, "
                     f"random frame {m['frame_mse_random_frame']:.4f})")
    if "imagination_error" in m:
        parts.append(f"imagination {m['imagination_error']:.3f} (hold {m['imagination_error_hold']:.3f}, "
                     f"const. velocity {m['imagination_error_const_velocity']:.3f})")
    if "action_mse" in m:
        parts.append(f"action MSE {m['action_mse']:.4f} (zero {m['action_mse_zero']:.4f})")
    if "success" in m:
        parts.append("success " + ", ".join(f"{s} {v:.2f} (random {baselines.get('random', {}).get(s, float('nan')):.2f})"
                                            for s, v in m["success"].items()))
    if "success_no_frames" in m:
        parts.append("without frames " + ", ".join(f"{s} {v:.2f}" for s, v in m["success_no_frames"].items()))
    parts.append(f"{m['train_seconds']:.0f}+{m['eval_seconds']:.0f} s")
    return "; ".join(parts)
