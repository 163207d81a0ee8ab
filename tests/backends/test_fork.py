"""The sim backend survives a ``fork``: ``AsyncVectorEnv``'s default context works.

A forked worker used to wait forever on the Pulumi mock runtime's thread pool, which the
parent had started and a fork does not copy. Each mock run now has an event loop (and a
pool) of its own, closed before the run returns.
"""

from __future__ import annotations

import multiprocessing
import threading

import gymnasium as gym
import numpy as np
import pytest

import infragym  # noqa: F401  (registers the environments)
from infragym.backends import LayerSpec
from infragym.backends.mockrun import run_layers

ENV_ID = "SimpleK8sWebApp-v0"
TIMEOUT_S = 120.0  # a hang is reported as a failure, not waited on


def _make() -> gym.Env:
    return gym.make(ENV_ID)


def test_mock_runs_leave_no_thread_behind() -> None:
    before = set(threading.enumerate())
    run_layers([LayerSpec("do-core", {"region": "ams3"})], deployment="forktest")
    assert set(threading.enumerate()) <= before


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform"
)
def test_async_vector_env_with_fork_after_the_parent_ran_an_episode() -> None:
    parent = _make()
    parent.reset(seed=0)
    parent.step(np.array([1, 1, 1, 1]))
    vec = gym.vector.AsyncVectorEnv([_make, _make], context="fork")
    try:
        vec.reset_async(seed=0)
        obs, _ = vec.reset_wait(timeout=TIMEOUT_S)
        assert obs.shape == (2, *parent.observation_space.shape)
        for _ in range(3):
            vec.step_async(np.array([[2, 1, 1, 1], [1, 1, 2, 1]]))
            obs, rewards, _, _, _ = vec.step_wait(timeout=TIMEOUT_S)
            assert np.isfinite(rewards).all()
        # A settings change in the children runs new mock programs there, after the fork.
        vec.reset_async(seed=12345, options={"scenario": "ramp"})
        vec.reset_wait(timeout=TIMEOUT_S)
    finally:
        vec.close(terminate=True)
    # The parent still works after its children ran.
    parent.step(np.array([1, 1, 1, 1]))
    parent.close()
