"""Staged pretraining: grow the backbone one generative capability at a time.

Understanding first, then image generation, then video generation, then action
generation; each stage adds one expert and freezes the ones before it, all under one
warmup-stable-decay learning-rate schedule (``docs/pretraining.md``). Read in this order:

- ``questions``: true captions and questions about a scene, from privileged sim state;
- ``datasets``: the four datasets, generated from the sims (in parallel on Ray), cached;
- ``schedule``: the learning-rate schedule, its stage bands, the per-step data mix;
- ``objectives``: a batch of each dataset -> model items -> the stage's loss;
- ``metrics``: held-out metrics with their baselines, and the closed-loop success;
- ``report``: the schedule figure and the metrics table;
- ``run``: ``pretrain(config)``, checks, bands, freezing, resume, the run directory;
- ``store``: done markers (checksums of finished files) and config hashes.

``flywheel pretrain`` (``flywheel/commands/pretrain.py``) is the command line.
"""

from policies.pretrain.run import check, pretrain
from policies.pretrain.schedule import Band, Schedule, build_schedule, plan

__all__ = ["Band", "Schedule", "build_schedule", "check", "plan", "pretrain"]
