import numpy as np
import pytest

from sims.embodiment import Embodiment

ARM = Embodiment("arm", proprio_dim=5, action_dim=2, action_low=(-1.0, -2.0), action_high=(1.0, 2.0))


def test_padding_keeps_values_and_masks_mark_them():
    batch = np.arange(15, dtype=np.float32).reshape(3, 5)
    padded = ARM.pad_proprio(batch, size=8)
    assert padded.shape == (3, 8)
    np.testing.assert_array_equal(padded[:, :5], batch)
    assert not padded[:, 5:].any()
    np.testing.assert_array_equal(ARM.proprio_mask(8), [1, 1, 1, 1, 1, 0, 0, 0])


def test_action_round_trip_through_the_normalized_space():
    action = np.array([0.5, -1.0])
    unit = ARM.normalize_action(action)
    np.testing.assert_allclose(unit, [0.5, -0.5])
    np.testing.assert_allclose(ARM.to_env_action(ARM.unpad_action(ARM.pad_action(unit))), action)
    np.testing.assert_allclose(ARM.to_env_action([9.0, -9.0]), [1.0, -2.0])  # clipped to bounds


def test_a_body_bigger_than_the_pad_is_an_error():
    with pytest.raises(ValueError, match="more than the shared pad size 4"):
        ARM.pad_proprio(np.zeros(5), size=4)


def test_wrong_width_is_an_error():
    with pytest.raises(ValueError, match="arm: proprio has shape"):
        ARM.pad_proprio(np.zeros(4))


def test_bounds_must_match_the_action_size():
    with pytest.raises(ValueError, match="2 entries"):
        Embodiment("bad", 1, 2, (-1.0,), (1.0,))
