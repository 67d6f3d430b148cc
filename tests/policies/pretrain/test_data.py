"""The four datasets: sizes follow the ratios, windows are consistent, the cache is reused."""

import json

import numpy as np
import pytest
import torch

from policies.pretrain import datasets
from policies.pretrain.datasets import DataSpec, Generator, stage_sizes

STAGES = ["understand", "image", "video", "action"]
SIMS = ("mujoco/reacher-twin", "dmc/point_mass-easy")


def _spec(**kw):
    args = dict(sims=SIMS, sizes=tuple(stage_sizes(STAGES, 200, [4.0, 2.0, 5.0])), held_out=0.1, camera=True,
                image_size=16, history=2, chunk=8, max_steps=60, shard=60, scene_every=5)
    args.update(kw)
    return DataSpec(**args)


def test_stage_sizes_follow_the_ratios():
    assert stage_sizes(STAGES, 1000, [10, 4, 2]) == [("understand", 1000), ("image", 100), ("video", 25),
                                                      ("action", 12)]
    with pytest.raises(ValueError, match="'action' dataset would be empty"):
        stage_sizes(STAGES, 100, [10, 10, 10])
    with pytest.raises(ValueError, match="one ratio per stage"):
        stage_sizes(STAGES, 100, [10, 10])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    spec = _spec()
    directory, manifest = datasets.ensure(spec, cache, workers=1, progress=False, log=lambda s: None)
    banks = datasets.load(directory, manifest, spec, 64, 16)
    return spec, cache, directory, manifest, banks


def test_generated_sizes_follow_the_configured_ratios(generated):
    spec, _, _, manifest, banks = generated
    expected = {"understand": 200, "image": 50, "video": 25, "action": 5}
    for stage, n in expected.items():
        assert len(banks[stage]["train"]) == n
        assert sum(manifest["counts"][stage]["train"].values()) == n
        assert len(banks[stage]["eval"]) == max(1, int(np.ceil(0.1 * n)))
        # Every sim contributes (the split is even, remainders to the first sims).
        per_sim = torch.bincount(banks[stage]["train"].example_sims(), minlength=2).tolist()
        assert per_sim == [n - n // 2, n // 2]
    assert banks["video"]["train"].sims == SIMS


def test_windows_hold_real_steps_of_one_episode(generated):
    spec, _, _, _, banks = generated
    bank = banks["action"]["train"]
    t = bank.tensors
    for w in t["windows"].tolist():
        # the chunk and its realized future stay inside the episode of its first step
        assert t["first"][w + spec.chunk] == t["first"][w]
        sim = int(t["sim"][w])
        real = bank.action_mask[sim]
        assert torch.all(t["label"][w:w + spec.chunk][:, ~real] == 0)  # padding stays zero
        assert torch.all(t["label"][w:w + spec.chunk][:, real].abs() <= 1)
    scenes = banks["understand"]["train"]
    assert scenes.tensors["frame"].shape[1:] == (16, 16, 3) and scenes.tensors["frame"].dtype == torch.uint8
    assert scenes.tensors["proprio"].shape[1:] == (2, 64)
    assert len(scenes.texts["question"]) == len(scenes.texts["answer"]) == 200


def test_a_second_run_reuses_the_cache_and_a_corrupt_file_is_regenerated(generated, monkeypatch):
    spec, cache, directory, manifest, _ = generated

    def no_generation(self, unit, out_dir):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(Generator, "run", no_generation)
    again_dir, again = datasets.ensure(spec, cache, workers=1, progress=False, log=lambda s: None)
    assert again_dir == directory and again == manifest
    assert json.loads((directory / "manifest.json").read_text())["key"] == spec.key()

    monkeypatch.undo()
    victim = sorted(manifest["files"])[0]
    (directory / victim).write_bytes(b"not what was written")
    regenerated = []
    original = Generator.run

    def counting(self, unit, out_dir):
        regenerated.append(unit.name)
        return original(self, unit, out_dir)

    monkeypatch.setattr(Generator, "run", counting)
    _, fixed = datasets.ensure(spec, cache, workers=1, progress=False, log=lambda s: None)
    assert regenerated == [victim] and fixed["files"] == manifest["files"]  # same seed: the same bytes


def test_a_different_spec_gets_a_different_cache_entry():
    assert _spec().key() != _spec(action_noise=0.1).key() and _spec().key() == _spec().key()


@pytest.mark.xdist_group("ray-pretrain-data")
def test_ray_actors_generate_the_same_data_as_one_process(tmp_path):
    """The one test that starts Ray: units are seeded by identity, so workers change nothing."""
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    spec = _spec(sims=SIMS[:1], sizes=(("understand", 40), ("video", 12)), shard=20)
    _, local = datasets.ensure(spec, tmp_path / "local", workers=1, progress=False, log=lambda s: None)
    _, remote = datasets.ensure(spec, tmp_path / "ray", workers=2, progress=False, log=lambda s: None)
    assert local["files"] == remote["files"] and len(local["files"]) == 5  # byte for byte


def test_motion_statistics_are_the_spread_of_each_steps_motion_from_the_window_start(generated):
    spec, _, _, _, banks = generated
    motion = datasets.motion_statistics(banks, spec.chunk, 64)
    assert motion.shape == (spec.chunk, 64)
    moves = []
    for stage in ("video", "action"):  # the episode banks
        t, bank = banks[stage]["train"].tensors, banks[stage]["train"]
        for w in t["windows"].tolist():
            if bank.sims[int(t["sim"][w])] == "mujoco/reacher-twin":
                moves.append((t["proprio"][w + 3] - t["proprio"][w])[6].item())  # step 3, a target-offset entry
    assert motion[2, 6].item() == pytest.approx(np.std(moves), rel=1e-4)  # the point mass pads that entry
    assert torch.all(motion[:, 60:] == 1)  # padding no body uses: left at one
    assert torch.all(motion > 0)
