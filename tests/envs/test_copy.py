"""An env copies (``copy.deepcopy``, ``pickle``) on both twin engines, and the copies run
the same episode as the original, step for step (what lookahead agents need).

The compiled core cannot be pickled: :class:`~infragym.twin.fast.FastTwin` copies by
replaying its history on a new core; the Python twin copies as an object, sharing the
module's latency memo again.
"""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest

import infragym  # noqa: F401  (registers the environments)
from infragym.twin import twin as twin_module
from infragym.twin.fast import FastTwin, core_module

ENGINES = [
    "python",
    pytest.param(
        "native",
        marks=pytest.mark.skipif(core_module() is None, reason="infragym-twin-core not built"),
    ),
]
COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda env: pickle.loads(pickle.dumps(env))}


def _trajectory(env: gym.Env, actions: np.ndarray) -> list[str]:
    """The episode's observations, rewards and metrics (repr: NaN equals NaN)."""
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append(repr((obs.tobytes(), reward, terminated, truncated, info["metrics"])))
    return out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("how", sorted(COPIES))
def test_copies_run_the_same_episode(engine: str, how: str) -> None:
    env = gym.make(
        "SimpleK8sWebApp-v0", render_mode="ansi", backend_options={"twin_engine": engine}
    )
    env.reset(seed=3, options={"scenario": "spikes"})
    rng = np.random.default_rng(0)
    for a in rng.integers(0, 3, (25, 4)):
        env.step(a)
    env.render()  # inspection between steps changes nothing
    twin = env.unwrapped.backend.twin
    assert isinstance(twin, FastTwin) == (engine == "native")
    dup = COPIES[how](env)
    assert dup.unwrapped.backend.twin is not twin
    actions = rng.integers(0, 3, (40, 4))
    theirs = _trajectory(dup, actions)
    assert dup.unwrapped.backend.twin.t > twin.t  # the copy ran on its own
    assert _trajectory(env, actions) == theirs
    dup.close()
    env.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_copy_made_right_after_reset_and_a_copy_of_a_copy(engine: str) -> None:
    env = gym.make("SimpleK8sWebApp-v0", backend_options={"twin_engine": engine})
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


def test_python_twin_copies_share_the_latency_memo() -> None:
    env = gym.make("SimpleK8sWebApp-v0", backend_options={"twin_engine": "python"})
    env.reset(seed=0)
    env.step(np.array([2, 1, 1, 1]))
    for how in COPIES.values():
        dup = how(env)
        assert dup.unwrapped.backend.twin._quantile_cache is twin_module._QUANTILES
    env.close()


@pytest.mark.parametrize("how", sorted(COPIES))
def test_async_actuation_env_copies(how: str) -> None:
    """SimpleK8sWebApp-v1 (asynchronous actuation, Python twin) copies too."""
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
