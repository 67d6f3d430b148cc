"""The learner pool: ``num_learners`` Ray actors training the agent with DistributedDataParallel.

    pool = LearnerPool("tiny", num_learners=2, resources={"num_cpus": 1}, train_experts=["video", "action"])
    result = pool.train(weights, weight_version=3, rows=rows, steps=40, batch_size=32)
    result.state_dict, result.optimizer_state, result.metrics
    pool.shutdown()

Every learner holds the whole model. A ``train`` call gives all of them the same weights
and the same rows, each put in the Ray object store once: a ``flywheel.store.Sample`` (the
rows the driver drew from the store, ``RolloutStore.sample``, and the draw's order), or plain
``flywheel.rows.ChunkRows``, which the pool draws from itself (``global_batches``, the same
draw). Step s trains on the draw's s-th run of ``batch_size`` rows, one *global* batch
seeded by (seed, weight_version), identical on every rank; rank r computes its contiguous slice of that batch as its share
of the global batch's loss (``flywheel.objective``: per-row flow noise seeded by (seed,
weight_version, s, row), every normaliser taken over the global batch), back-propagates
``world_size * share`` and DDP averages the gradients: every rank then holds the gradient
a single learner computes on the whole batch, clips it and steps. So two learners make the
same update as one (up to float summation order), and the result does not depend on the
number of learners. Rank 0 returns the new weights, its optimizer state (flattened as in
``flywheel.checkpoint``), the mean losses and, per step, the series the logger plots at
each learner step: every loss term, the gradient norm before clipping (of the averaged
gradient, so the same on every rank) and the learning rate.

Rendezvous: rank 0 listens on its node's address (Ray's node IP: 127.0.0.1 in an embedded
run, the cluster address on a cluster) and hands that socket to the process group's TCP store,
which would otherwise listen on every interface; every rank joins through that store (gloo on
CPU, nccl when each learner has a whole GPU). On a loopback node the collectives' own sockets
stay on loopback too (``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME``, unless already set).
Learners keep their optimizer state between ``train`` calls; ``load_optimizer`` restores one
after a resume.

Faults: if a learner dies (or the step hangs past ``timeout_s``, or a collective fails),
the pool kills every learner, starts a fresh set, restores the optimizer state the cycle
started from (the last result's, the one given to ``load_optimizer``, or the one passed to
``train``) and trains the cycle again from the weights it was given; after ``max_retries``
such restarts ``LearnerFailure`` names the cycle and every cause. Errors that a restart
cannot fix (a ``ValueError`` from the data, say) raise ``LearnerFailure`` at once.

Experts not in ``train_experts`` are frozen (``Model.freeze``): no gradient, not in the
optimizer, returned bit for bit as given. Within one ``train`` call a frozen text expert's
keys and values of each task text are computed once (``Model.text_prefixes``): a training
sequence is two thirds instruction, which made the step about 1.7x faster for the small
starter on one core. Only plain data (dicts, tuples, numbers, arrays,
the ``LearnerSpec`` dataclass, ``ChunkRows``) crosses into the actors, never OmegaConf objects.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
import socket
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from typing import Any, NamedTuple

import numpy as np
import ray
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from configs.learning import ObjectiveConfig
from flywheel import checkpoint as run_checkpoint
from flywheel.cluster import ray_options
from flywheel.objective import CANDIDATES, batch_loss
from flywheel.prior import PriorData, PriorSpec
from flywheel.rows import EPISODE, ChunkRows
from flywheel.store import Sample, shuffled_passes
from flywheel.td import CRITIC_TERMS
from policies import checkpoint as model_checkpoint
from policies.agent import Agent
from policies.config import SIZES, ModelConfig
from policies.critic import Q as Q_HEAD, VALUE
from policies.model import Model
from policies.ranker import RANK

log = logging.getLogger(__name__)

CRITIC_HEADS = (VALUE, Q_HEAD)

LOSS_TERMS = ("future", "action", "return", "total")
PRIOR = "prior"  # the prior data's term (``flywheel.prior``), inside ``total``
# With the critic or the prior on, their shares ride along in the same all-reduce (``flywheel.td``).
TERMS = LOSS_TERMS + CRITIC_TERMS + (PRIOR, CANDIDATES, RANK)
# The per-step series a learner returns (``TrainResult.series``), by TensorBoard tag.
SERIES = tuple(f"loss_{k}_step" for k in LOSS_TERMS) + ("grad_norm", "lr")


class LearnerFailure(RuntimeError):
    """The learner pool could not train a cycle; ``causes`` has one line per failed attempt."""

    def __init__(self, message: str, cycle: int, causes: Sequence[str]) -> None:
        super().__init__(message)
        self.cycle = cycle
        self.causes = list(causes)

    def __reduce__(self):
        return type(self), (str(self), self.cycle, self.causes)


# ---------------------------------------------------------------------- plain data


@dataclass(frozen=True)
class LearnerSpec:
    """Everything a learner actor needs, as plain data."""

    model: dict[str, Any]              # ModelConfig.to_dict()
    world_size: int
    train_experts: tuple[str, ...]
    objective: dict[str, Any]          # ObjectiveConfig's fields
    lr: float = 3e-4
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    seed: int = 0
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    backend: str = "gloo"              # gloo | nccl
    collective_timeout_s: float = 300.0
    prior: PriorSpec | None = None     # the starter's pretraining data, trained on beside the rows


class OptimizerState(NamedTuple):
    """An optimizer's state as ``flywheel.checkpoint.flatten_optimizer`` makes it: tensors
    named ``optim.<param index>.<key>`` (safetensors-ready) and JSON-ready ``meta``.

    A plain ``(tensors, meta)`` tuple works wherever this does: ``checkpoint.save`` takes
    it in place of an optimizer, and ``checkpoint.optimizer_state(path)`` returns one.
    """

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]   # every weight, CPU; frozen experts exactly as given
    optimizer_state: OptimizerState
    metrics: dict[str, Any] = field(default_factory=dict)  # numbers (None: no step was taken)
    # One value per learner step (None: skipped), by TensorBoard tag under ``learner/``: too long
    # for ``cycles.jsonl``, so only ``metrics`` summarises them. A key added here is plotted.
    series: dict[str, list[float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultInjection:
    """Test hook: learner ``rank`` exits its process at optimizer step ``step`` on each of
    the first ``attempts`` attempts of a ``train`` call."""

    rank: int = 1
    step: int = 0
    attempts: int = 1


# ---------------------------------------------------------------------- shared by driver and actors


def make_optimizer(model: Model, train_experts: Sequence[str], lr: float = 3e-4,
                   weight_decay: float = 0.01) -> torch.optim.AdamW:
    """Freeze every expert not in ``train_experts`` and build the learners' optimizer.

    The single definition of which parameters the optimizer holds and in which order, so
    a ``flywheel.checkpoint.load(..., optimizer_factory=lambda m: make_optimizer(m, ...))``
    restores state the learners can load.
    """
    check_train_experts(train_experts, model.cfg.experts)
    for expert in model.cfg.experts:
        if expert in train_experts:
            model.unfreeze(expert)
        else:
            model.freeze(expert)
    params = [p for p in model.parameters() if p.requires_grad]
    # Fused: one kernel over all parameters instead of ~10 small ops per tensor; the same
    # AdamW, a twentieth less time per learner step on CPU (docs/rl-core.md "Where the time goes").
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def check_train_experts(train_experts: Sequence[str], experts: Sequence[str]) -> None:
    """``train_experts`` must name some of the model's ``experts`` and nothing else."""
    unknown = sorted(set(train_experts) - set(experts))
    if unknown:
        raise ValueError(f"train_experts {unknown} are not experts of the model ({list(experts)})")
    if not train_experts:
        raise ValueError("train_experts is empty: nothing to train")


def global_batches(n_rows: int, batch_size: int, steps: int, seed: int, version: int) -> np.ndarray:
    """(steps, batch_size) row indices: shuffled passes over the rows, seeded by (seed, version)
    (what ``RolloutStore.sample`` draws with seed (seed, version))."""
    if n_rows < 1:
        raise ValueError("no rows to train on")
    return shuffled_passes(n_rows, steps * batch_size, np.random.default_rng([seed, version])).reshape(steps, batch_size)


def as_sample(rows: Mapping[str, np.ndarray] | Sample, steps: int, batch_size: int, seed: int,
              version: int) -> Sample:
    """What a ``train`` call trains on: a ``Sample`` of exactly ``steps * batch_size`` draws as
    given, or plain rows with ``global_batches``'s draw over them."""
    if isinstance(rows, Sample):
        if len(rows.order) != steps * batch_size:
            raise ValueError(f"a sample of {len(rows.order)} draws cannot make {steps} batches of {batch_size}")
        return rows
    rows = rows if isinstance(rows, ChunkRows) else ChunkRows.of(rows)
    return Sample(rows, global_batches(rows.n, batch_size, steps, seed, version).reshape(-1), rows.n)


def keep_collectives_on_loopback() -> None:
    """gloo and NCCL pick the interface of their own sockets from the host name, which may
    resolve to a routable address; on a loopback node, name the loopback interface instead
    (an operator's own choice, already in the environment, wins)."""
    loopback = next((name for _, name in socket.if_nameindex() if name in ("lo", "lo0")), None)  # Linux, macOS
    if loopback is not None:
        for variable in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            os.environ.setdefault(variable, loopback)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------- the actor


class _Objective(nn.Module):
    """What DDP wraps: its forward is this rank's share of a global batch's loss."""

    def __init__(self, agent: Agent, config: ObjectiveConfig, prior: PriorData | None = None) -> None:
        super().__init__()
        self.agent = agent
        self.config = config
        self.prior = prior

    def forward(self, rows: Mapping[str, np.ndarray], noise_seed: tuple[int, ...], rank: int,
                world_size: int) -> dict[str, torch.Tensor]:
        share = batch_loss(self.agent, rows, self.config, noise_seed=noise_seed, rank=rank, world_size=world_size)
        if self.prior is not None:
            size = self.prior.spec.batch_size or len(rows[EPISODE])
            share[PRIOR] = self.prior.share(self.agent.model, noise_seed, size, rank, world_size)
            share["total"] = share["total"] + share[PRIOR]
        return share


class Learner:
    """One rank of the pool: the whole model, its optimizer, and one process-group member.

    The pool runs it as a Ray actor (``RemoteLearner``); it is a plain class so that one
    rank can also run in-process (a test's single-learner reference, a debugger).
    """

    def __init__(self, rank: int, spec: LearnerSpec) -> None:
        torch.set_num_threads(max(1, int(spec.num_cpus)))
        torch.manual_seed(spec.seed)
        self.rank, self.spec = rank, spec
        use_gpu = spec.num_gpus > 0 and torch.cuda.is_available()
        self.device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
        self.agent = Agent(ModelConfig.from_dict(spec.model), device=self.device)
        self.optimizer = make_optimizer(self.agent.model, spec.train_experts, spec.lr, spec.weight_decay)
        self.params = [p for p in self.agent.model.parameters() if p.requires_grad]
        # The critic's gradients (in reward units) and the ranker's are clipped each on their own:
        # through one global norm they would starve the flow losses (and each other), as the
        # unscaled return head once did.
        heads = self.agent.model.heads
        apart = [{id(p) for name in family if name in heads for p in heads[name].parameters()}
                 for family in (CRITIC_HEADS, (RANK,))]
        policy = [p for p in self.params if not any(id(p) in ids for ids in apart)]
        self.clip_groups = [g for g in (policy, *([p for p in self.params if id(p) in ids] for ids in apart)) if g]
        self.agent.model.train()
        self.objective = ObjectiveConfig(**spec.objective)
        self.prior = None if spec.prior is None else PriorData(spec.prior)
        self.ddp: DistributedDataParallel | None = None
        self._listener: socket.socket | None = None  # rank 0's store socket, from rendezvous to connect

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0: the address and port of the process group's TCP store, listening already.

        torch's store binds every interface, and answers anyone: so rank 0 binds the node's own
        address here and ``connect`` hands the socket to the store (``master_listen_fd``). Bound
        now, the port cannot be taken by another process before the store starts."""
        address = ray.util.get_node_ip_address()
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((address, 0))
        listener.listen()
        self._listener = listener
        return address, listener.getsockname()[1]

    def connect(self, address: str, port: int) -> int:
        if ipaddress.ip_address(address).is_loopback:
            keep_collectives_on_loopback()
        listener, self._listener = self._listener, None
        timeout = timedelta(seconds=self.spec.collective_timeout_s)
        # The store serves rank 0's socket from here on: detached, Python never closes it under the store.
        store = dist.TCPStore(address, port, self.spec.world_size, is_master=listener is not None, timeout=timeout,
                              master_listen_fd=None if listener is None else listener.detach())
        dist.init_process_group(self.spec.backend, store=store, rank=self.rank, world_size=self.spec.world_size,
                                timeout=timeout)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Some parameters get no gradient from this objective (the text head, the image
        # tokenizer, ...): DDP must not wait for them. The model has no buffers to sync.
        self.ddp = DistributedDataParallel(_Objective(self.agent, self.objective, self.prior), device_ids=device_ids,
                                           find_unused_parameters=True)
        return self.rank

    def load_optimizer(self, state: tuple[dict[str, torch.Tensor], dict] | None) -> None:
        """Restore a flattened ``state``, or start a fresh optimizer when it is None."""
        self.optimizer = make_optimizer(self.agent.model, self.spec.train_experts, self.spec.lr, self.spec.weight_decay)
        if state is not None:
            run_checkpoint.load_optimizer_state(self.optimizer, tuple(state), str(self.device))

    def train(self, weights: dict[str, torch.Tensor], version: int, rows: Mapping[str, np.ndarray] | Sample,
              steps: int, batch_size: int, attempt: int = 0, fault: FaultInjection | None = None) -> dict | None:
        spec, rank = self.spec, self.rank
        started = time.perf_counter()
        self.agent.model.load_state_dict(weights)
        sample = as_sample(rows, steps, batch_size, spec.seed, version)
        self._check_same_data(sample)
        sums = torch.zeros(len(TERMS), dtype=torch.float64)
        first = last = None
        skipped = 0
        # The optional loss terms this run has on, each logged per step and per cycle.
        extra = tuple(k for k, on in ((PRIOR, self.prior is not None), (CANDIDATES, self.objective.candidate_samples),
                                      (RANK, self.objective.ranker)) if on)
        names = (SERIES + (tuple(f"critic_{k}_step" for k in CRITIC_TERMS) if self.objective.critic else ())
                 + tuple(f"loss_{k}_step" for k in extra))
        series: dict[str, list[float | None]] = {name: [] for name in names}
        # The frozen experts' weights stay as loaded until the phase ends: the task texts' keys
        # and values are computed once per instruction, not for every row of every step.
        with self.agent.model.text_prefixes():
            for step, idx in enumerate(sample.order.reshape(steps, batch_size)):
                if fault is not None and rank == fault.rank and step == fault.step and attempt < fault.attempts:
                    os._exit(1)  # the test hook: this learner dies mid-train
                parts, grad_norm = self._step(sample.rows.take(idx), (spec.seed, version, step))
                _append_step(series, parts, grad_norm, self.optimizer.param_groups[0]["lr"])
                if grad_norm is None:
                    skipped += 1
                    continue
                sums += parts
                last = parts[LOSS_TERMS.index("total")].item()
                first = last if first is None else first
        peak = self._peak_rss_mb()  # a collective: every rank, before rank 0 alone goes on
        if rank != 0:
            return None
        done = steps - skipped
        metrics: dict[str, Any] = {f"loss_{k}": (sums[i] / done).item() if done else None
                                   for i, k in enumerate(LOSS_TERMS)}
        if self.objective.critic:
            metrics.update(_critic_metrics(sums, done))
        metrics.update({f"loss_{k}": (sums[TERMS.index(k)] / done).item() if done else None for k in extra})
        metrics.update(loss_total_first=first, loss_total_last=last, steps=steps, skipped_steps=skipped,
                       samples=steps * batch_size, rows=sample.population, learners=spec.world_size, peak_rss_mb=peak,
                       seconds=time.perf_counter() - started, **_grad_norm_summary(series["grad_norm"]))
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.agent.model.state_dict().items()}
        optim = OptimizerState(*run_checkpoint.flatten_optimizer(self.optimizer))
        return {"state_dict": state, "optimizer_state": optim, "metrics": metrics, "series": series}

    def _step(self, batch: ChunkRows, noise_seed: tuple[int, ...]) -> tuple[torch.Tensor, float | None]:
        """One optimizer step on this rank's share of a global batch: the global batch's
        losses (``LOSS_TERMS``, identical on every rank) and the gradient's norm before
        clipping; the norm is None when the losses are not finite and the step is skipped (on
        every rank alike)."""
        world = self.spec.world_size
        self.optimizer.zero_grad(set_to_none=True)
        share = self.ddp(batch, noise_seed, self.rank, world)
        (share["total"] * world).backward()  # DDP averages: world * share sums to the global loss
        parts = torch.stack([share[k].detach() if k in share else torch.zeros((), device=self.device)
                             for k in TERMS]).float()
        dist.all_reduce(parts)  # the shares' sum: the global batch's losses, identical on every rank
        parts = parts.cpu().double()
        if not torch.isfinite(parts).all():
            return parts, None
        # DDP has averaged the gradients by now: the norm is the whole batch's, on every rank.
        if self.spec.grad_clip is not None:
            # Each group (the policy's, the critic's, the ranker's) is clipped alone; the norm reported is all of them.
            norms = [torch.nn.utils.clip_grad_norm_(group, self.spec.grad_clip) for group in self.clip_groups]
            grad_norm = torch.linalg.vector_norm(torch.stack(norms))
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        self.optimizer.step()
        if self.objective.critic:
            self.agent.model.update_critic_target(self.objective.target_tau)
        return parts, float(grad_norm)

    def _check_same_data(self, sample: Sample) -> None:
        """Every rank must train on the same rows in the same order: compare a fingerprint across ranks."""
        n_rows = sample.rows.n
        episodes = np.ascontiguousarray(np.asarray(sample.rows[EPISODE], dtype=np.int64))
        order = np.ascontiguousarray(sample.order, dtype=np.int64)
        mine = torch.tensor([n_rows, zlib.crc32(episodes.tobytes()), zlib.crc32(order.tobytes())], dtype=torch.int64,
                            device=self.device)
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise ValueError(f"learners see different rows: rank {self.rank} has {n_rows} rows "
                             f"(fingerprint {mine.tolist()}, ranks range {low.tolist()}..{high.tolist()})")

    def _peak_rss_mb(self) -> float:
        """The largest peak resident memory of any rank, in MB (the same on every rank)."""
        peak = torch.tensor([peak_rss_mb()], dtype=torch.float64, device=self.device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        return float(peak.item())

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
        self.ddp = None


RemoteLearner = ray.remote(max_restarts=0)(Learner)


def _append_step(series: dict[str, list[float | None]], parts: torch.Tensor, grad_norm: float | None,
                 lr: float) -> None:
    """One learner step's points; a skipped step's losses are kept (they say why it was skipped)."""
    for i, k in enumerate(TERMS):
        name = f"critic_{k}_step" if k in CRITIC_TERMS else f"loss_{k}_step"
        if name in series:
            series[name].append(parts[i].item())
    series["grad_norm"].append(grad_norm)
    series["lr"].append(float(lr))


def _grad_norm_summary(norms: Sequence[float | None]) -> dict[str, float | None]:
    """What ``cycles.jsonl`` keeps of the gradient norms: their mean and largest (None: no step taken)."""
    taken = [n for n in norms if n is not None]
    return {"grad_norm_mean": float(np.mean(taken)) if taken else None,
            "grad_norm_max": float(np.max(taken)) if taken else None}


# ---------------------------------------------------------------------- the pool


class _Retry(Exception):
    """A failure a fresh set of learners may not have."""


class _Fatal(Exception):
    """A failure every attempt would repeat (same weights, same rows)."""


_FATAL = (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError, AssertionError)


class LearnerPool:
    """``num_learners`` DDP learners on Ray; see the module docstring.

    ``model``: a ``ModelConfig``, its dict, a size name (``"tiny"``) or a policies
    checkpoint directory (only its config is read: weights come with every ``train``).
    ``resources``: per learner, a ``configs.run_schema.Resources`` or a mapping or object with some
    of its fields (``flywheel.cluster.ray_options``: CPUs, GPUs, memory, accelerator type, custom resources).
    ``objective``: an ``ObjectiveConfig`` (a run's ``learner`` is one; None: the defaults). ``train_experts``:
    the experts trained (None: all); the others are frozen. ``backend``: "gloo", "nccl" or
    "auto" (nccl when each learner has a whole GPU). ``timeout_s`` bounds one attempt of a
    ``train`` call; ``collective_timeout_s`` the process group's collectives and start-up.
    ``prior``: the starter's pretraining data each step also trains on (``flywheel.prior``).
    ``placement(rank)``: extra ``.options()`` for that rank's actor (its placement group bundle).
    """

    def __init__(self, model: ModelConfig | Mapping[str, Any] | str | os.PathLike, num_learners: int = 1,
                 resources: Any = None, objective: Any = None, lr: float = 3e-4, weight_decay: float = 0.01,
                 train_experts: Sequence[str] | None = None, seed: int = 0, *, max_retries: int = 2,
                 grad_clip: float | None = 1.0, backend: str = "auto", timeout_s: float = 3600.0,
                 collective_timeout_s: float = 300.0, prior: PriorSpec | None = None,
                 placement: Callable[[int], dict[str, Any]] | None = None) -> None:
        if num_learners < 1:
            raise ValueError(f"num_learners must be >= 1, got {num_learners}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        cfg = _model_config(model)
        num_cpus, num_gpus = float(_get(resources, "num_cpus", 1.0)), float(_get(resources, "num_gpus", 0.0))
        if backend == "auto":
            backend = "nccl" if num_gpus >= 1 else "gloo"
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be gloo, nccl or auto, got {backend!r}")
        if backend == "nccl" and num_gpus < 1:
            raise ValueError("nccl needs a whole GPU per learner (resources.num_gpus >= 1)")
        experts = tuple(cfg.experts) if train_experts is None else tuple(str(e) for e in train_experts)
        check_train_experts(experts, cfg.experts)
        objective = ObjectiveConfig() if objective is None else objective
        # Only the objective's own fields (a run's ``learner`` has more), as plain values.
        objective = ObjectiveConfig(**{f.name: getattr(objective, f.name) for f in fields(ObjectiveConfig)})
        self.spec = LearnerSpec(model=cfg.to_dict(), world_size=int(num_learners), train_experts=experts,
                                objective=asdict(objective), lr=float(lr), weight_decay=float(weight_decay),
                                grad_clip=None if grad_clip is None else float(grad_clip), seed=int(seed),
                                num_cpus=num_cpus, num_gpus=num_gpus, backend=backend,
                                collective_timeout_s=float(collective_timeout_s), prior=prior)
        self.actor_options = ray_options(resources)
        self.placement = placement or (lambda rank: {})  # rank -> its placement group bundle (flywheel.cluster)
        self.max_retries, self.timeout_s = int(max_retries), float(timeout_s)
        self.restarts = 0  # pool rebuilds so far, over every cycle
        self._actors: list = []
        self._connected = False  # the actors' process group is up (``start``)
        self._optimizer: OptimizerState | None = None  # the state the next cycle starts from
        self._optimizer_pending = False  # the live learners have yet to load ``_optimizer``
        with torch.device("meta"):  # names and shapes only: nothing is allocated
            self._shapes = {k: tuple(v.shape) for k, v in Model(cfg).state_dict().items()}

    @classmethod
    def from_config(cls, model: ModelConfig | Mapping[str, Any] | str | os.PathLike, config: Any,
                    **overrides: Any) -> "LearnerPool":
        """A pool as ``flywheel run`` configures it (``configs.run_schema.RunConfig``: its
        ``num_learners``, ``learner_resources``, ``seed`` and ``learner`` section)."""
        learner = config.learner
        kwargs = dict(num_learners=int(config.num_learners), resources=config.learner_resources,
                      objective=learner, lr=learner.lr, weight_decay=learner.weight_decay,
                      train_experts=list(learner.train_experts), seed=int(config.seed),
                      max_retries=int(learner.max_retries))
        return cls(model, **(kwargs | overrides))

    @property
    def num_learners(self) -> int:
        return self.spec.world_size

    # ------------------------------------------------------------------ lifecycle

    def spawn(self) -> None:
        """Start the learner actors without waiting for them: their processes boot (imports,
        model) while the caller goes on, e.g. while the rollout actors collect the first cycle."""
        if not self._actors:
            self._actors = [RemoteLearner.options(**self.actor_options, **self.placement(rank)).remote(rank, self.spec)
                            for rank in range(self.spec.world_size)]

    def start(self) -> None:
        """Start the learners and their process group (``train`` does it when needed)."""
        if self._connected:
            return
        self.spawn()
        actors, timeout = self._actors, self.spec.collective_timeout_s
        self._optimizer_pending = self._optimizer is not None
        address, port = ray.get(actors[0].rendezvous.remote(), timeout=timeout)
        ray.get([a.connect.remote(address, port) for a in actors], timeout=timeout)
        self._connected = True

    def shutdown(self) -> None:
        """Destroy the process group and the learner actors."""
        if self._actors:
            try:
                ray.get([a.close.remote() for a in self._actors], timeout=10)
            except Exception:  # a dead or hung learner: killing it below is enough
                pass
        self._kill()

    def __enter__(self) -> "LearnerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _kill(self) -> None:
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self._actors, self._connected = [], False

    def load_optimizer(self, state: tuple[dict[str, torch.Tensor], dict] | None) -> None:
        """The optimizer state the next ``train`` starts from (after a resume); None: fresh.

        ``state`` is flattened as ``flywheel.checkpoint.optimizer_state(path)`` returns it.
        """
        self._optimizer = None if state is None else OptimizerState(*state)
        self._optimizer_pending = True  # loaded by the learners at the start of the next train

    def _sync_optimizer(self) -> None:
        if self._optimizer_pending:
            ref = ray.put(self._optimizer)
            ray.get([a.load_optimizer.remote(ref) for a in self._actors], timeout=self.spec.collective_timeout_s)
            self._optimizer_pending = False

    # ------------------------------------------------------------------ training

    def train(self, weights: Mapping[str, torch.Tensor] | ray.ObjectRef, weight_version: int,
              rows: Mapping[str, np.ndarray] | Sample, steps: int, batch_size: int, *, cycle: int | None = None,
              optimizer_state: tuple[dict[str, torch.Tensor], dict] | None = None,
              inject_fault: FaultInjection | None = None) -> TrainResult:
        """``steps`` optimizer steps of global ``batch_size`` rows from ``weights``.

        ``rows``: a ``Sample`` of ``steps * batch_size`` draws (``RolloutStore.sample``), or chunk
        rows (validated here: ``ChunkRows.of``) to draw from; either is put in the object store once.
        ``optimizer_state``: start from this state instead of the learners' own (which is
        where the previous ``train`` left it). ``cycle`` (default ``weight_version``) names
        the cycle in a ``LearnerFailure``. ``inject_fault`` is a test hook.
        """
        cycle = weight_version if cycle is None else cycle
        weights_ref, rows_ref = self._put(weights, weight_version, rows, steps, batch_size)
        if optimizer_state is not None:
            self.load_optimizer(optimizer_state)
        causes: list[str] = []
        started = time.perf_counter()
        for attempt in range(self.max_retries + 1):
            try:
                self.start()
                self._sync_optimizer()
                result = self._run(weights_ref, weight_version, rows_ref, steps, batch_size, attempt, inject_fault)
            except _Retry as err:
                causes.append(f"attempt {attempt + 1}: {err}")
                log.warning("cycle %d: learner pool failed (%s); %s", cycle, err,
                            "restarting it" if attempt < self.max_retries else "giving up")
                self._kill()
                self.restarts += 1
                continue
            except _Fatal as err:
                self._kill()
                raise LearnerFailure(f"cycle {cycle}: learner pool cannot train: {err}", cycle,
                                     [*causes, str(err)]) from err.__cause__
            except Exception as err:  # e.g. the start timed out, or a learner's constructor failed
                if isinstance(err, _FATAL):
                    self._kill()
                    raise LearnerFailure(f"cycle {cycle}: learner pool cannot train: {_describe(err)}",
                                         cycle, [*causes, _describe(err)]) from err
                causes.append(f"attempt {attempt + 1}: {_describe(err)}")
                log.warning("cycle %d: learner pool failed to start (%s)", cycle, _describe(err))
                self._kill()
                self.restarts += 1
                continue
            self._optimizer = result.optimizer_state
            result.metrics.update(attempts=attempt + 1, wall_seconds=time.perf_counter() - started)
            return result
        raise LearnerFailure(f"cycle {cycle}: training failed on {len(causes)} attempt(s) with "
                             f"{self.num_learners} learner(s); last cause: {causes[-1]}", cycle, causes)

    def _put(self, weights: Mapping[str, torch.Tensor] | ray.ObjectRef, weight_version: int,
             rows: Mapping[str, np.ndarray] | Sample, steps: int,
             batch_size: int) -> tuple[ray.ObjectRef, ray.ObjectRef]:
        """Check a ``train`` call's arguments before any learner works, then put its weights
        and rows in the object store."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if batch_size < self.num_learners:
            raise ValueError(f"batch_size {batch_size} is smaller than the {self.num_learners} learners")
        if weight_version < 0:
            raise ValueError(f"weight_version must be >= 0, got {weight_version}")
        if isinstance(weights, ray.ObjectRef):
            weights_ref = weights
        else:
            self._check_weights(weights)
            weights_ref = ray.put({k: v.detach().to("cpu") for k, v in weights.items()})
        if not isinstance(rows, Sample):
            rows = ChunkRows.of(rows)  # validated here, before any learner works
        return weights_ref, ray.put(as_sample(rows, steps, batch_size, self.spec.seed, weight_version))

    def _check_weights(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Same names and shapes as the pool's model, or a ValueError before any learner works."""
        given = {k: tuple(v.shape) for k, v in weights.items()}
        if given != self._shapes:
            missing, extra = sorted(set(self._shapes) - set(given)), sorted(set(given) - set(self._shapes))
            shapes = sorted(k for k in set(given) & set(self._shapes) if given[k] != self._shapes[k])
            raise ValueError(f"weights do not fit the pool's model: missing {missing[:5]}, unexpected {extra[:5]}, "
                             f"other shapes {shapes[:5]}")

    def _run(self, weights_ref, version, data, steps, batch_size, attempt, fault) -> TrainResult:
        refs = [a.train.remote(weights_ref, version, data, steps, batch_size, attempt, fault) for a in self._actors]
        rank_of = {ref: rank for rank, ref in enumerate(refs)}
        deadline = time.monotonic() + self.timeout_s
        pending, results = list(refs), {}
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise _Retry(f"no result within {self.timeout_s:.0f} s (ranks {sorted(rank_of[r] for r in pending)} "
                             f"still running)")
            try:
                results[rank_of[ready[0]]] = ray.get(ready[0])
            except Exception as first:
                raise self._failure(first, rank_of[ready[0]], pending, rank_of) from first
        out = results[0]
        return TrainResult(out["state_dict"], out["optimizer_state"], out["metrics"], out["series"])

    def _failure(self, first: Exception, rank: int, pending: list, rank_of: dict) -> Exception:
        """The most telling cause: a learner that died beats the peers that lost it."""
        errors = [(rank, first)]
        if pending:  # peers of a dead learner fail in their collectives (or hang): give them a moment
            done, _ = ray.wait(pending, num_returns=len(pending), timeout=2.0)
            for ref in done:
                try:
                    ray.get(ref)
                except Exception as err:
                    errors.append((rank_of[ref], err))
        died = [(r, e) for r, e in errors if isinstance(e, ray.exceptions.RayActorError)]
        if died:
            r, e = died[0]
            return _Retry(f"learner rank {r} died ({_describe(e)})")
        r, e = errors[0]
        cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) and e.cause is not None else e
        if isinstance(cause, _FATAL):
            return _Fatal(f"learner rank {r} failed: {_describe(cause)}")
        return _Retry(f"learner rank {r} failed ({_describe(cause)})")


def _critic_metrics(sums: torch.Tensor, done: int) -> dict[str, float | None]:
    """Mean critic losses (``loss_q``, ``loss_value``) and diagnostics (``q_mean``, ``v_mean``,
    ``td_error``: mean |Q - y|, in value units) over the cycle's steps."""
    means = {k: (sums[TERMS.index(k)] / done).item() if done else None for k in CRITIC_TERMS}
    return {"loss_q": means["q"], "loss_value": means["value"], "q_mean": means["q_mean"],
            "v_mean": means["v_mean"], "td_error": means["td_error"]}


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(err).__name__}: {first[:300]}"


def _get(obj: Any, name: str, default: Any) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _model_config(model: ModelConfig | Mapping[str, Any] | str | os.PathLike) -> ModelConfig:
    if isinstance(model, ModelConfig):
        return model
    if isinstance(model, Mapping):
        return ModelConfig.from_dict(dict(model))
    if isinstance(model, str) and model in SIZES:
        return SIZES[model]
    return model_checkpoint.read_config(model)
