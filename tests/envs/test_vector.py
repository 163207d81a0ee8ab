"""The vector env: N SimpleK8sWebApp envs stepped together, their twins advanced in one call.

The reference is Gymnasium's own SyncVectorEnv over N ``gym.make`` envs with the same
seeds: the same observations, rewards, terminations, truncations and infos, bit for bit,
across episode ends (``NEXT_STEP`` autoreset).
"""

from __future__ import annotations

import copy
import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import infragym  # noqa: F401  (registers the envs)
from infragym.envs.vector import SimpleK8sWebAppVectorEnv
from infragym.errors import ConfigError
from infragym.twin.twin import Twin


def _plain(value):
    """Infos made comparable: NaN as None, arrays as lists, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _run(envs, actions, seed):
    out = []
    obs, infos = envs.reset(seed=seed)
    out.append((obs.tolist(), _plain(infos)))
    for action in actions:
        obs, rewards, terms, truncs, infos = envs.step(action)
        out.append((obs.tolist(), rewards.tolist(), terms.tolist(), truncs.tolist(), _plain(infos)))
    envs.close()
    return out


def _python_step(env):
    """``env`` with its Python step forced (the reference: no env kernel)."""
    env.unwrapped.use_kernel = False
    return env


@pytest.mark.parametrize("env_id", ["SimpleK8sWebApp-v1", "SimpleK8sWebApp-v0"])
def test_the_vector_env_gives_n_separate_envs_episodes_bit_for_bit(env_id):
    n, steps, limit = 3, 45, 20  # past two episode ends (autoreset)
    vec = gym.make_vec(
        env_id, num_envs=n, vectorization_mode="vector_entry_point", max_episode_steps=limit
    )
    assert isinstance(vec.unwrapped, SimpleK8sWebAppVectorEnv)
    assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    reference = SyncVectorEnv(
        [lambda: _python_step(gym.make(env_id, max_episode_steps=limit)) for _ in range(n)]
    )
    assert vec.observation_space == reference.observation_space
    assert vec.action_space == reference.action_space
    vec.action_space.seed(7)
    actions = [vec.action_space.sample() for _ in range(steps)]
    got, want = _run(vec, actions, seed=5), _run(reference, actions, seed=5)
    assert got == want
    assert any(any(step[3]) for step in got[1:])  # episodes ended and were reset


def test_the_python_steps_of_a_vector_env_give_the_same_episodes():
    """With the env kernel off, the vector env steps each env in Python (its twins advanced
    in one call): the same episodes again."""
    n, limit = 3, 15
    vec = gym.make_vec(
        "SimpleK8sWebApp-v1", num_envs=n, vectorization_mode="vector_entry_point",
        max_episode_steps=limit,
    )  # fmt: skip
    for env in vec.unwrapped.envs:
        env.use_kernel = False
    reference = SyncVectorEnv(
        [lambda: gym.make("SimpleK8sWebApp-v1", max_episode_steps=limit) for _ in range(n)]
    )
    vec.action_space.seed(3)
    actions = [vec.action_space.sample() for _ in range(35)]
    assert _run(vec, actions, seed=11) == _run(reference, actions, seed=11)


def test_one_call_into_the_core_steps_every_env():
    calls = []
    vec = gym.make_vec("SimpleK8sWebApp-v1", num_envs=4, vectorization_mode="vector_entry_point")
    vec.reset(seed=0)
    assert all(isinstance(e.backend.twin, Twin) for e in vec.unwrapped.envs)
    kernel = vec.unwrapped._kernel
    batch = kernel.batch

    class Spy:
        def __getattr__(self, name):
            return getattr(batch, name)

        def step(self, actions, active, *buffers):
            calls.append(int(active.sum()))
            return batch.step(actions, active, *buffers)

    kernel.batch = Spy()
    for _ in range(3):
        vec.step(vec.action_space.sample())
    assert calls == [4, 4, 4]  # no episode ends in three steps
    vec.close()


def test_seeds_per_env_and_bad_arguments():
    vec = gym.make_vec("SimpleK8sWebApp-v1", num_envs=2, vectorization_mode="vector_entry_point")
    obs, _ = vec.reset(seed=[3, 3])
    assert obs[0].tolist() == obs[1].tolist()  # the same seed, the same start
    with pytest.raises(ConfigError, match="one per env"):
        vec.reset(seed=[1, 2, 3])
    vec.close()
    with pytest.raises(ConfigError, match="num_envs"):
        SimpleK8sWebAppVectorEnv(0)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_vector_env_copies(how):
    vec = gym.make_vec(
        "SimpleK8sWebApp-v1", num_envs=3, vectorization_mode="vector_entry_point",
        max_episode_steps=12,
    )  # fmt: skip
    vec.reset(seed=2)
    vec.action_space.seed(4)
    for _ in range(7):
        vec.step(vec.action_space.sample())
    dup = copy.deepcopy(vec) if how == "deepcopy" else pickle.loads(pickle.dumps(vec))
    actions = [vec.action_space.sample() for _ in range(10)]  # across an episode end
    runs = []
    for one in (vec, dup):
        steps = []
        for action in actions:
            obs, rewards, _, truncs, infos = one.step(action)
            steps.append((obs.tolist(), rewards.tolist(), truncs.tolist(), _plain(infos)))
        runs.append(steps)
        one.close()
    assert runs[0] == runs[1]


def test_masks_are_shared_read_only_only_when_nothing_adds_to_the_infos():
    """A step the kernel took for every env shares one read-only mask among its keys; a
    step with resets gives each key a writable mask (``_add_info`` writes into them)."""
    vec = gym.make_vec(
        "SimpleK8sWebApp-v1", num_envs=2, vectorization_mode="vector_entry_point",
        max_episode_steps=2,
    )  # fmt: skip
    vec.reset(seed=0)
    vec.action_space.seed(0)
    *_, infos = vec.step(vec.action_space.sample())
    assert infos["_metrics"] is infos["_time_s"]
    assert not infos["_metrics"].flags.writeable
    assert infos["_metrics"].tolist() == [True, True]
    metrics = infos["metrics"]["offered_rate"]
    assert metrics.flags.writeable and metrics.base is not None  # a row of a fresh block
    *_, truncs, infos = vec.step(vec.action_space.sample())
    assert truncs.all()
    *_, infos = vec.step(vec.action_space.sample())  # both envs reset by this step
    assert infos["_metrics"] is not infos["_time_s"]
    assert all(infos[key].flags.writeable for key in infos if key.startswith("_"))
    vec.close()
