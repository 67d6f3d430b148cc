"""bench_imitation: demonstrations windowed as the agent's chunks, and a fitted MLP that imitates them."""

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_imitation  # noqa: E402

SIM = "mujoco/reacher-twin"


def test_each_state_is_labelled_with_the_demonstrators_next_chunk():
    states, chunks = bench_imitation.demonstrations(SIM, episodes=2, max_steps=20, chunk=4, noise=0.3, seed=0)
    assert states.shape == (2 * (20 - 4 + 1), 8) and chunks.shape == (len(states), 4 * 2)
    # Within an episode, the chunk at step t+1 is the one at t shifted by one action.
    assert torch.equal(chunks[1, :6], chunks[0, 2:])
    assert not torch.equal(states[0], states[1])


def test_the_mlp_fits_its_demonstrations_better_than_a_zero_action():
    states, chunks = bench_imitation.demonstrations(SIM, episodes=4, max_steps=40, chunk=1, noise=0.3, seed=1)
    act, mse = bench_imitation.fit_mlp(states, chunks, steps=300, seed=0)
    zero = float((chunks ** 2).mean())
    assert mse < 0.5 * zero, (mse, zero)
    assert act(states[0].numpy()).shape == (2,) and np.isfinite(act(states[0].numpy())).all()


def test_the_flow_mlp_samples_chunks_near_its_demonstrations():
    states, chunks = bench_imitation.demonstrations(SIM, episodes=4, max_steps=40, chunk=2, noise=0.3, seed=1)
    act, _ = bench_imitation.fit_flow_mlp(states, chunks, steps=600, seed=0)
    sampled = np.stack([act(s.numpy()) for s in states[:32]])
    assert sampled.shape == (32, 4) and np.isfinite(sampled).all()
    # Fresh noise each call, integrated to the label: far closer than the noise it starts from.
    error = float(((torch.as_tensor(sampled) - chunks[:32]) ** 2).mean())
    assert error < 0.5 * float((chunks[:32] ** 2).mean() + 1.0), error


def test_an_agent_evaluated_twice_acts_the_same_whatever_ran_between():
    from policies.agent import Agent
    from sims import make

    env = make(SIM)
    obs, _ = env.reset(seed=0)
    agent = Agent("tiny").eval()
    first = bench_imitation.agent_policy(agent, env.embodiment, seed=3)(obs, [obs["proprio"]])
    torch.randn(100)  # what another evaluation would have drawn from the global generator
    again = bench_imitation.agent_policy(agent, env.embodiment, seed=3)(obs, [obs["proprio"]])
    other = bench_imitation.agent_policy(agent, env.embodiment, seed=4)(obs, [obs["proprio"]])
    assert np.array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(np.stack(first), np.stack(other))  # the flow's noise does reach the actions
