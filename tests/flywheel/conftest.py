"""Fixtures of the flywheel tests."""

import numpy as np
import pytest

from flywheel.rows import EPISODE, SIM, ChunkRows, columns_of

# Small stand-ins for the model's sizes, which name the shapes of the row schema's array columns.
FAKE_SIZES = {"history": 3, "chunk": 8, "proprio_pad": 6, "action_pad": 2}


def fake_rows(episodes=3, chunks_per_episode=4, seed=0, first_episode=0, **columns) -> ChunkRows:
    """Random chunk rows of the full schema (planned and graded), ``columns`` replaced: for code
    that must keep or show rows whatever they hold (the store, the report's figures)."""
    rng = np.random.default_rng(seed)
    n = episodes * chunks_per_episode
    rows = {}
    for column in columns_of(imagined=True, graded=True):
        shape = (n, *(FAKE_SIZES[s] for s in column.shape))
        if column.dtype == "object":
            rows[column.name] = np.array([f"{column.name} {i}" for i in range(n)], dtype=object)
        elif column.dtype == "bool":
            rows[column.name] = rng.random(shape) < 0.5
        else:
            rows[column.name] = rng.normal(size=shape).astype(column.dtype)
    rows[EPISODE] = np.repeat(np.arange(first_episode, first_episode + episodes), chunks_per_episode)
    rows[SIM] = np.array(["mujoco/reacher-twin"] * n, dtype=object)
    return ChunkRows.of({**rows, **columns})


@pytest.fixture
def make_rows():
    return fake_rows
