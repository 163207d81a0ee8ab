"""The env kernel (``infragym.envs.kernel``) runs the same episodes as the Python step.

The reference is the env's own Python step (``use_kernel = False``), on the same compiled
twin: observations, rewards, truncations and infos bit for bit (``repr``, so NaN equals
NaN and dict order counts), over many seeds, every scenario family, both actuations and
random actions (a knob change on almost every step). Reading the twin mid-episode
(resources, info, the layer queue, render) rebuilds its Python side from the kernel's
record, and copies and pickles of envs and vector envs run on identically.
"""

from __future__ import annotations

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest

import infragym  # noqa: F401  (registers the environments)
from infragym.envs import kernel
from infragym.envs.scenarios import names as scenario_names
from infragym.errors import ActionError, ConfigError
from infragym.twin.model import TwinParams
from infragym.twin.twin import Twin, core_module

pytestmark = pytest.mark.skipif(
    core_module() is None or not hasattr(core_module(), "EnvBatch"),
    reason="the compiled core (with its env kernel) is not built",
)
IDS = ["SimpleK8sWebApp-v1", "SimpleK8sWebApp-v0"]
COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda env: pickle.loads(pickle.dumps(env))}


def _make(env_id: str, use_kernel: bool, **kwargs) -> gym.Env:
    env = gym.make(env_id, **kwargs)
    env.unwrapped.use_kernel = use_kernel
    return env


def _episode(env: gym.Env, seed: int, actions, scenario: str | None = None) -> list[str]:
    """Reset (and reset again at each episode end) and step through ``actions``."""
    options = None if scenario is None else {"scenario": scenario}
    obs, info = env.reset(seed=seed, options=options)
    out = [repr((obs.tobytes(), info))]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out.append(repr((obs.tobytes(), obs.dtype, reward, terminated, truncated, info)))
        if terminated or truncated:
            obs, info = env.reset(options=options)
            out.append(repr((obs.tobytes(), info)))
    return out


def _both(env_id: str, seed: int, actions, scenario=None, **kwargs) -> tuple[list, list]:
    got, want = [], []
    for use_kernel, out in ((True, got), (False, want)):
        env = _make(env_id, use_kernel, **kwargs)
        out += _episode(env, seed, actions, scenario)
        assert isinstance(env.unwrapped._kernel, kernel.Binding) == use_kernel
        env.close()
    return got, want


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("scenario", scenario_names())
def test_the_kernel_runs_the_python_steps_episodes(env_id: str, scenario: str) -> None:
    if env_id == "SimpleK8sWebApp-v0" and scenario.startswith("trace"):
        pytest.skip("v0 has the synthetic scenarios only")  # (it takes any: one is enough)
    rng = np.random.default_rng(len(scenario))
    actions = rng.integers(0, 3, (70, 4))
    for seed in range(4):  # 4 × 70 steps, an episode end at 40
        got, want = _both(env_id, seed, actions, scenario, max_episode_steps=40)
        assert got == want


@pytest.mark.parametrize("env_id", IDS)
def test_many_seeds_random_scenarios_absolute_actions(env_id: str) -> None:
    env = _make(env_id, True, action_mode="absolute", scenarios=scenario_names())
    ref = _make(env_id, False, action_mode="absolute", scenarios=scenario_names())
    env.action_space.seed(1)
    actions = [env.action_space.sample() for _ in range(30)]
    for seed in range(12):
        assert _episode(env, seed, actions) == _episode(ref, seed, actions)


def test_the_kernel_takes_list_actions_and_refuses_bad_ones_as_python_does() -> None:
    env, ref = _make(IDS[0], True), _make(IDS[0], False)
    for e in (env, ref):
        e.reset(seed=0)
    for action in ([2, 1, 0, 2], (0, 0, 2, 1), np.array([1, 2, 1, 0], dtype=np.int32)):
        a, b = env.step(action), ref.step(action)
        assert repr(a) == repr(b)
    for bad in ([3, 1, 1, 1], [-1, 1, 1, 1], [1, 1, 1], np.array([1.5, 1, 1, 1]), "x"):
        with pytest.raises(ActionError) as got:
            env.step(bad)
        with pytest.raises(ActionError) as want:
            ref.step(bad)
        assert str(got.value) == str(want.value)
    assert repr(env.step(np.ones(4, dtype=np.int64))) == repr(ref.step(np.ones(4, dtype=np.int64)))


def test_a_custom_reward_takes_the_python_step() -> None:
    env = gym.make(IDS[0], reward=lambda m: 1.0)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert env.unwrapped._kernel is False
    env.close()


@pytest.mark.parametrize("reference", [0.0, float("nan")])
def test_a_reward_that_fails_raises_the_same_error_after_the_step(reference: float) -> None:
    messages = []
    for use_kernel in (True, False):
        env = _make(IDS[0], use_kernel)
        env.reset(seed=0)
        env.unwrapped.cost_reference = reference  # cost / 0 raises; cost / NaN is NaN
        with pytest.raises(ConfigError, match="the reward") as error:
            env.step(np.array([1, 1, 1, 1]))
        messages.append(str(error.value))
        assert env.unwrapped.steps == 1
        assert len(env.unwrapped.history) == 2
    assert messages[0] == messages[1]


@pytest.mark.parametrize("env_id", IDS)
def test_reading_the_twin_mid_episode_changes_nothing(env_id: str) -> None:
    env = _make(env_id, True, render_mode="ansi")
    ref = _make(env_id, False, render_mode="ansi")
    rng = np.random.default_rng(5)
    actions = rng.integers(0, 3, (60, 4))
    for e in (env, ref):
        e.reset(seed=2)
    for i, action in enumerate(actions):
        a, b = env.step(action), ref.step(action)
        assert repr(a) == repr(b)
        if i % 7 == 3:
            backends = env.unwrapped.backend, ref.unwrapped.backend
            pending = backends[0]._sync.batch.pending(0)
            queues = backends[0].queue, backends[1].queue  # the kernel's: no rebuild
            assert backends[0]._sync.batch.pending(0) == pending > 0
            for name in ("requested", "applied", "in_flight", "queued"):
                assert repr(getattr(queues[0], name)) == repr(getattr(queues[1], name))
            assert queues[0].state() == queues[1].state()
            assert [r.inputs for r in backends[0].resources()] == [
                r.inputs for r in backends[1].resources()
            ]
            assert backends[0]._sync.batch.pending(0) == 0  # the twin was rebuilt
            assert repr(backends[0].info()) == repr(backends[1].info())
            assert backends[0].twin._log == backends[1].twin._log
            assert env.render() == ref.render()
            assert isinstance(backends[0].twin, Twin)


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("how", sorted(COPIES))
def test_copies_mid_episode_run_the_same_episode(env_id: str, how: str) -> None:
    env = _make(env_id, True, max_episode_steps=30)
    ref = _make(env_id, False, max_episode_steps=30)
    rng = np.random.default_rng(9)
    for e in (env, ref):
        e.reset(seed=4)
    for action in rng.integers(0, 3, (17, 4)):
        env.step(action)
        ref.step(action)
    dup = COPIES[how](env)
    actions = rng.integers(0, 3, (25, 4))  # across an episode end

    def run(e: gym.Env) -> list[str]:
        out = []
        for action in actions:
            step = e.step(action)
            out.append(repr(step))
            if step[3]:
                out.append(repr(e.reset()))
        return out

    expected = run(ref)
    assert run(dup) == expected
    assert run(env) == expected
    assert isinstance(dup.unwrapped._kernel, kernel.Binding)  # the copy attached its own


@pytest.mark.parametrize("how", sorted(COPIES))
def test_a_vector_env_copy_mid_episode_and_its_envs_state(how: str) -> None:
    vec = gym.make_vec(
        "SimpleK8sWebApp-v1", num_envs=3, vectorization_mode="vector_entry_point",
        max_episode_steps=12,
    )  # fmt: skip
    refs = [_make("SimpleK8sWebApp-v1", False, max_episode_steps=12) for _ in range(3)]
    vec.reset(seed=2)
    for i, ref in enumerate(refs):
        ref.reset(seed=2 + i)
    vec.action_space.seed(4)
    for _ in range(7):
        actions = vec.action_space.sample()
        vec.step(actions)
        for ref, action in zip(refs, actions, strict=True):
            ref.step(action)
    for env, ref in zip(vec.unwrapped.envs, refs, strict=True):  # each env's own state
        assert env.steps == ref.unwrapped.steps
        assert repr(env.history) == repr(ref.unwrapped.history)
        assert env.knob_values == ref.unwrapped.knob_values
        assert env.backend.twin._log == ref.unwrapped.backend.twin._log
    dup = COPIES[how](vec)
    actions = [vec.action_space.sample() for _ in range(10)]
    runs = []
    for one in (vec, dup):
        runs.append([repr(one.step(action)) for action in actions])
        one.close()
    assert runs[0] == runs[1]


def test_switching_the_kernel_off_and_on_mid_episode() -> None:
    env, ref = _make(IDS[0], True), _make(IDS[0], False)
    rng = np.random.default_rng(3)
    for e in (env, ref):
        e.reset(seed=1)
    for step, action in enumerate(rng.integers(0, 3, (45, 4))):
        env.unwrapped.use_kernel = step // 10 % 2 == 0  # on, off, on, ...
        assert repr(env.step(action)) == repr(ref.step(action))
    assert env.unwrapped.backend.twin._log == ref.unwrapped.backend.twin._log


@pytest.mark.parametrize(
    "kwargs",
    [
        {"step_seconds": 15.0, "action_mode": "absolute"},
        {"backend_options": {"twin_params": TwinParams(noise=False)}},
        {"settings": {"k8s-heater": {"replicas": 2, "cpu_limit": "500m"}}, "cost_weight": 0.5},
        {"node_sizes": ["s-2vcpu-4gb", "s-4vcpu-8gb"], "max_episode_steps": 25},
    ],
)
def test_other_arguments_run_the_same_episodes(kwargs) -> None:
    env_id = IDS[0]
    env = _make(env_id, True, **kwargs)
    env.action_space.seed(6)
    actions = [env.action_space.sample() for _ in range(40)]
    ref = _make(env_id, False, **kwargs)
    for seed in (0, 1):
        assert _episode(env, seed, actions) == _episode(ref, seed, actions)
    assert isinstance(env.unwrapped._kernel, kernel.Binding)


def test_graphs_the_kernel_does_not_take_run_the_python_step() -> None:
    """An HPA on the heater: the core runs it, but the kernel leaves such twins alone."""
    hpa = {"k8s-heater": {"hpa": {"min_replicas": 2, "max_replicas": 12}}}
    env = _make(IDS[0], True, settings=hpa)
    ref = _make(IDS[0], False, settings=hpa)
    env.action_space.seed(2)
    actions = [env.action_space.sample() for _ in range(15)]
    assert _episode(env, 3, actions) == _episode(ref, 3, actions)
    assert env.unwrapped._kernel is False


def test_a_vector_env_carries_on_after_one_of_its_envs_was_reset_directly() -> None:
    vec = gym.make_vec("SimpleK8sWebApp-v1", num_envs=2, vectorization_mode="vector_entry_point")
    vec.reset(seed=0)
    vec.action_space.seed(0)
    vec.step(vec.action_space.sample())
    member = vec.unwrapped.envs[1]
    member.reset(seed=9)
    assert not vec.unwrapped._kernel.attached[1]
    obs, *_ = vec.step(vec.action_space.sample())
    assert vec.unwrapped._kernel.attached.all()
    assert member.steps == 1 and obs.shape == (2, 35)
    vec.close()
