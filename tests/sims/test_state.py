import numpy as np

from sims.state import SimState


def test_a_snapshot_does_not_alias_the_arrays_it_was_made_from():
    qpos = np.zeros(3)
    state = SimState("s", 4, {"qpos": qpos})
    qpos[:] = 1.0
    assert not state.arrays["qpos"].any()


def test_equality_is_bitwise_and_covers_every_part():
    rng = np.random.default_rng(0).bit_generator.state
    base = SimState("s", 4, {"q": np.array([0.1, np.nan])}, rng)
    assert base.equals(SimState("s", 4, {"q": np.array([0.1, np.nan])}, rng))
    assert not base.equals(SimState("t", 4, {"q": np.array([0.1, np.nan])}, rng))
    assert not base.equals(SimState("s", 5, {"q": np.array([0.1, np.nan])}, rng))
    assert not base.equals(SimState("s", 4, {"q": np.array([np.nextafter(0.1, 1), np.nan])}, rng))
    assert not base.equals(SimState("s", 4, {"q": np.array([0.1, np.nan], dtype=np.float32)}, rng))
    assert not base.equals(SimState("s", 4, {"q": np.array([0.1, np.nan])}, np.random.default_rng(1).bit_generator.state))
