"""An env copies (``copy.deepcopy``, ``pickle``), and the copies run the same episode as
the original, step for step (what lookahead agents need).

The twin's compiled core does not pickle: a deep copy forks it (the core copies its
state in Rust), a pickle replays the twin's history on a new core.
"""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest

import infragym  # noqa: F401  (registers the environments)

COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda env: pickle.loads(pickle.dumps(env))}


def _trajectory(env: gym.Env, actions: np.ndarray) -> list[str]:
    """The episode's observations, rewards and metrics (repr: NaN equals NaN)."""
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append(repr((obs.tobytes(), reward, terminated, truncated, info["metrics"])))
    return out


@pytest.mark.parametrize("how", sorted(COPIES))
def test_copies_run_the_same_episode(how: str) -> None:
    env = gym.make("SimpleK8sWebApp-v0", render_mode="ansi")
    env.reset(seed=3, options={"scenario": "spikes"})
    rng = np.random.default_rng(0)
    for a in rng.integers(0, 3, (25, 4)):
        env.step(a)
    env.render()  # inspection between steps changes nothing
    twin = env.unwrapped.backend.twin
    dup = COPIES[how](env)
    assert dup.unwrapped.backend.twin is not twin
    assert dup.unwrapped.backend.twin._core is not twin._core
    actions = rng.integers(0, 3, (40, 4))
    theirs = _trajectory(dup, actions)
    assert dup.unwrapped.backend.twin.t > twin.t  # the copy ran on its own
    assert _trajectory(env, actions) == theirs
    dup.close()
    env.close()


def test_a_copy_made_right_after_reset_and_a_copy_of_a_copy() -> None:
    env = gym.make("SimpleK8sWebApp-v0")
    env.reset(seed=0)
    first = copy.deepcopy(env)
    second = pickle.loads(pickle.dumps(first))
    actions = np.random.default_rng(1).integers(0, 3, (30, 4))
    expected = _trajectory(env, actions)
    assert _trajectory(first, actions) == expected
    assert _trajectory(second, actions) == expected
    # The copies reset like new envs.
    for e in (env, first, second):
        e.reset(seed=5)
    assert _trajectory(first, actions[:5]) == _trajectory(env, actions[:5])


@pytest.mark.parametrize("how", sorted(COPIES))
def test_async_actuation_env_copies(how: str) -> None:
    """SimpleK8sWebApp-v1 (asynchronous actuation) copies too."""
    if "SimpleK8sWebApp-v1" not in gym.registry:
        pytest.skip("SimpleK8sWebApp-v1 is not registered")
    env = gym.make("SimpleK8sWebApp-v1")
    env.reset(seed=0)
    env.action_space.seed(2)
    for _ in range(10):
        env.step(env.action_space.sample())
    dup = COPIES[how](env)
    actions = [env.action_space.sample() for _ in range(20)]
    assert _trajectory(env, actions) == _trajectory(dup, actions)
    env.close()
