"""Run checkpoints: a resumed run continues bit for bit where the saved one would have."""

import random

import numpy as np
import pytest
import torch

from flywheel import checkpoint
from flywheel.checkpoint import RunCheckpointError, TrainerState
from policies.config import model_config
from policies.model import Model


def make_optimizer(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)


def train_steps(model, optimizer, n):
    """A few steps of a loss that touches every trainable parameter, driven by the global torch RNG."""
    for _ in range(n):
        optimizer.zero_grad()
        loss = sum((p * torch.randn_like(p)).sum() ** 2 for p in model.parameters() if p.requires_grad)
        loss.backward()
        optimizer.step()


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    model = Model(model_config("tiny"))
    optimizer = make_optimizer(model)
    generator = np.random.default_rng(5)
    train_steps(model, optimizer, 2)
    generator.normal(size=3)
    checkpoint.save(tmp_path, model, optimizer, TrainerState(cycle=2, weight_version=2, replay_cycles=[1, 2]),
                    generator)
    random.random()
    train_steps(model, optimizer, 2)
    expected, expected_draw, expected_py = snapshot(model), generator.normal(size=3), random.random()

    torch.manual_seed(123)  # a fresh process: different global RNG state
    generator2 = np.random.default_rng(0)
    restored, optimizer2, state = checkpoint.load(checkpoint.latest(tmp_path), optimizer_factory=make_optimizer,
                                                  generator=generator2)
    assert (state.cycle, state.weight_version, state.replay_cycles) == (2, 2, [1, 2])
    random.random()
    train_steps(restored, optimizer2, 2)
    got = snapshot(restored)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert np.array_equal(generator2.normal(size=3), expected_draw)
    assert random.random() == expected_py


def test_a_checkpoint_of_an_unfused_optimizer_resumes_in_the_learners_fused_one(tmp_path):
    """Runs saved before the learners fused their AdamW resume with the same moments, fused."""
    from flywheel.learners import make_optimizer as learners_optimizer

    torch.manual_seed(0)
    model = Model(model_config("tiny"))
    old = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.01)
    train_steps(model, old, 2)
    path = checkpoint.save(tmp_path, model, old, TrainerState(cycle=0, weight_version=0))

    fused = learners_optimizer(model, model.cfg.experts)
    checkpoint.load_optimizer_state(fused, checkpoint.optimizer_state(path))
    assert fused.param_groups[0]["fused"] is True
    moments = {id(p): s["exp_avg_sq"] for p, s in old.state.items()}
    assert moments and all(torch.equal(s["exp_avg_sq"], moments[id(p)]) for p, s in fused.state.items())
    expected = snapshot(model)
    torch.manual_seed(1)
    train_steps(model, old, 1)  # the unfused update from the same state...
    after_old = snapshot(model)
    model.load_state_dict(expected)
    torch.manual_seed(1)
    train_steps(model, fused, 1)  # ...and the fused one agree to float rounding
    assert all(torch.allclose(v, after_old[k], rtol=1e-5, atol=1e-7) for k, v in snapshot(model).items())


def test_latest_moves_only_when_a_checkpoint_is_complete(tmp_path, monkeypatch):
    model = Model(model_config("tiny"))
    checkpoint.save(tmp_path, model, None, TrainerState(cycle=0, weight_version=0))
    assert checkpoint.latest(tmp_path).name == "cycle-000000"

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, model, None, TrainerState(cycle=1, weight_version=1))
    assert checkpoint.latest(tmp_path).name == "cycle-000000"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["cycle-000000", "latest"]


def test_a_corrupt_file_is_refused(tmp_path):
    model = Model(model_config("tiny"))
    path = checkpoint.save(tmp_path, model, make_optimizer(model), TrainerState(cycle=0, weight_version=0))
    weights = path / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(RunCheckpointError, match=r"model/model.safetensors: missing or fails its checksum; the checkpoint is corrupt\. To resume from the one before"):
        checkpoint.load(path)


def test_a_truncated_header_is_an_error_naming_the_file(tmp_path):
    model = Model(model_config("tiny"))
    path = checkpoint.save(tmp_path, model, None, TrainerState(cycle=0, weight_version=1, extra={"cycle": 0}))
    header = path / "trainer.json"
    assert checkpoint.record(tmp_path, 0) == {"cycle": 0}
    header.write_text(header.read_text()[:100])
    for read in (lambda: checkpoint.load(path), lambda: checkpoint.record(tmp_path, 0)):
        with pytest.raises(RunCheckpointError, match=f"{header}: not readable JSON"):
            read()


def test_a_run_without_checkpoints_has_no_latest(tmp_path):
    assert checkpoint.latest(tmp_path) is None
    with pytest.raises(RunCheckpointError, match="not a run checkpoint"):
        checkpoint.load(tmp_path)


@pytest.fixture
def posing_checkpoint(tmp_path):
    """A run directory whose latest checkpoint's weights are a pickle posing as safetensors."""
    import pickle

    from configs.run_schema import RunConfig
    from configs.schema import SimConfig
    from flywheel.controller import prepare

    sim = SimConfig(name="mujoco/reacher-twin", max_episode_steps=16)
    config, run_dir, _, _ = prepare(RunConfig(run_dir=str(tmp_path / "run"), pretrained="scratch", sim=sim,
                                           reference=sim, num_rollout_workers=1, episodes_per_cycle=1),
                                 console=lambda *a: None)
    path = checkpoint.save(run_dir, Model(model_config("tiny")), None, TrainerState(cycle=0, weight_version=1))
    (path / "model" / "model.safetensors").write_bytes(pickle.dumps({"weights": [1.0]}))
    return run_dir, path


def test_resume_and_status_name_a_file_posing_as_the_weights_in_one_line(posing_checkpoint, capsys):
    from flywheel.cli import main

    run_dir, path = posing_checkpoint
    for argv in (["run", f"resume={run_dir}"], ["status", str(run_dir)]):
        assert main(argv) == 2, argv
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith(f"flywheel: error: {path / 'model' / 'model.safetensors'}: missing or fails its "
                               "checksum; the checkpoint is corrupt"), line
        assert f"write its directory name (cycle-NNNNNN) into {run_dir / 'checkpoints' / 'latest'}" in line
