"""Bad arguments to the environments: a clear ConfigError (or ActionError), at ``make``
where the argument is the constructor's, and the environment usable afterwards.

The sim backend throughout (the compiled twin when installed); nothing here deploys.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import infragym  # noqa: F401  (registers the environments)
from infragym.envs.simple_k8s_web_app import SimpleK8sWebAppEnv
from infragym.errors import ActionError, ConfigError
from infragym.knobs import get_path

V0, V1 = "SimpleK8sWebApp-v0", "SimpleK8sWebApp-v1"
KEEP = np.array([1, 1, 1, 1])
SECRET = "TOPSECRET123"


def _runs(env: gym.Env, steps: int = 2) -> None:
    """The env resets and steps."""
    env.reset(seed=0)
    for _ in range(steps):
        _, reward, *_ = env.step(KEEP)
        assert math.isfinite(reward)


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("env_id", [V0, V1])
@pytest.mark.parametrize(
    ("layer", "setting", "value", "knob"),
    [
        ("k8s-heater", "replicas", 0, "heater_replicas"),
        ("k8s-heater", "replicas", 10**9, "heater_replicas"),
        ("do-managed-k8s", "node_count", 50, "node_count"),
    ],
)
def test_settings_outside_a_knob_domain_are_refused_at_make(
    env_id: str, layer: str, setting: str, value: int, knob: str
) -> None:
    with pytest.raises(ConfigError, match=rf"knob '{knob}' .* at {value}, outside its domain"):
        gym.make(env_id, settings={layer: {setting: value}})
    # A value in the domain is what the knob reports and what runs.
    env = gym.make(env_id, settings={layer: {setting: 3}})
    _, info = env.reset(seed=0)
    assert info["knobs"][knob] == 3
    k = next(k for k in env.unwrapped.knobs if k.name == knob)
    assert get_path(env.unwrapped.backend.twin.inputs(k.type, k.resource), k.path) == 3
    env.close()


def test_knob_domains_come_from_the_env_knobs() -> None:
    """A setting is judged against this env's domain (v1's CPU limits have no 250m)."""
    with pytest.raises(ConfigError, match="heater_cpu_limit"):
        gym.make(V1, settings={"k8s-heater": {"cpu_limit": "250m"}})
    env = gym.make(V0, settings={"k8s-heater": {"cpu_limit": "250m"}})
    _runs(env)
    env.close()


def test_settings_outside_a_domain_fail_before_a_pulumi_deploy(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_CLI", "/nonexistent/pulumi")  # any engine call would fail
    options = {"state_url": f"file://{tmp_path}/state", "step_wait": False}
    with pytest.raises(ConfigError, match="outside its domain"):
        gym.make(
            V0,
            backend="pulumi",
            backend_options=options,
            settings={"do-managed-k8s": {"node_count": 50}},
        )
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("env_id", [V0, V1])
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"k8s-heater": 5}, r"settings\['k8s-heater'\] must be a dict"),
        (5, "settings must be a dict"),
        ({"k8s-heater": {1: 2}}, "has a key that is not a string"),
        ({"k8s-nope": {}}, "unknown layers"),
        ({"k8s-heater": {"replicas": "many"}}, "invalid settings for layer 'k8s-heater'"),
    ],
)
def test_malformed_settings(env_id: str, settings: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        gym.make(env_id, settings=settings)


def test_a_siege_schedule_in_settings_is_refused_with_the_way_to_do_it() -> None:
    schedule = {"shape": {"kind": "constant", "rate": 5.0}}
    with pytest.raises(ConfigError, match=r"set by the episode's scenario.*register_scenario"):
        gym.make(V0, settings={"k8s-siege-engine": {"schedule": schedule}})
    env = gym.make(V0, scenarios=["constant"])
    _, info = env.reset(seed=0)
    assert info["scenario"] == "constant"
    env.close()


# ------------------------------------------------------------------ lists of names


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"node_sizes": "s-2vcpu-4gb"}, r"got the string 's-2vcpu-4gb': write node_sizes=\["),
        ({"scenarios": "constant"}, r"got the string 'constant': write scenarios=\["),
        ({"node_sizes": []}, "node_sizes is empty"),
        ({"scenarios": ()}, "scenarios is empty"),
        ({"scenarios": ["ramp", "ramp"]}, "scenarios lists 'ramp' twice"),
        ({"node_sizes": ["s-2vcpu-4gb", "s-2vcpu-4gb"]}, "lists 's-2vcpu-4gb' twice"),
        ({"scenarios": ["ramp", 3]}, r"scenarios\[1\] must be a name"),
        ({"scenarios": ["rampp"]}, "unknown scenario 'rampp'; did you mean ramp"),
        ({"node_sizes": ["s-2vcpu-5gb"]}, "unknown DOKS node size"),
        ({"node_sizes": 5}, "node_sizes must be a list of names"),
    ],
)
def test_lists_of_names(kwargs: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        gym.make(V0, **kwargs)


def test_good_lists_of_names_are_used() -> None:
    env = gym.make(V0, node_sizes=["s-2vcpu-4gb", "s-4vcpu-8gb"], scenarios=("ramp",))
    assert env.unwrapped.knobs[3].values == ("s-2vcpu-4gb", "s-4vcpu-8gb")
    _, info = env.reset(seed=0)
    assert info["scenario"] == "ramp"
    env.close()


# ------------------------------------------------------------------ scalars and callables


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"step_seconds": "30"}, "step_seconds must be a number of seconds, got a str"),
        ({"step_seconds": math.inf}, "positive, finite number of seconds, got inf"),
        ({"step_seconds": math.nan}, "positive, finite number of seconds, got nan"),
        ({"step_seconds": -30}, "positive, finite number of seconds, got -30"),
        ({"step_seconds": True}, "step_seconds must be a number"),
        ({"reward": 5}, "reward must be a callable"),
        ({"render_mode": "video"}, "unknown render_mode 'video'"),
        ({"action_mode": "relative"}, "unknown action mode 'relative'"),
        ({"backend_options": 5}, "backend_options must be a dict"),
        ({"backend_options": {"twin_params": {"node_boot": 1}}}, "unknown twin parameter"),
    ],
)
def test_bad_scalars_and_callables(kwargs: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        gym.make(V0, **kwargs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "at least 1"), (2.5, "an integer"), (True, "an integer")],
)
def test_bad_max_episode_steps_on_the_class(value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=f"max_episode_steps must be {expected}"):
        SimpleK8sWebAppEnv(max_episode_steps=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("env_id", [V0, V1])
def test_unknown_argument_is_named_and_no_value_is_shown(env_id: str) -> None:
    options = {"state_url": f"s3://KEY:{SECRET}@bucket"}
    with pytest.raises(ConfigError, match=r"unknown arguments \['backend_option'\]") as info:
        gym.make(env_id, backend="pulumi", backend_option=options)
    assert SECRET not in str(info.value) and info.value.__cause__ is None


# ------------------------------------------------------------------ episode length


def test_max_episode_steps_truncates_on_the_class_and_sets_the_schedule() -> None:
    env = SimpleK8sWebAppEnv(max_episode_steps=3)
    _, info = env.reset(seed=0, options={"scenario": "ramp"})
    assert info["schedule"]["shape"]["duration"] == 3 * 30.0  # the ramp spans the episode
    truncated = [env.step(KEEP)[3] for _ in range(3)]
    assert truncated == [False, False, True]
    env.reset(seed=1)  # a new episode after truncation
    assert env.step(KEEP)[3] is False
    env.close()


def test_gym_make_max_episode_steps_sets_the_schedule_length() -> None:
    env = gym.make(V0, max_episode_steps=240)
    _, info = env.reset(seed=0, options={"scenario": "ramp"})
    assert env.unwrapped.max_episode_steps == 240
    assert info["schedule"]["shape"]["duration"] == 240 * 30.0
    default = gym.make(V0)
    _, info = default.reset(seed=0, options={"scenario": "ramp"})
    assert info["schedule"]["shape"]["duration"] == 120 * 30.0
    steps = 0
    truncated = False
    while not truncated and steps < 300:  # bounded
        *_, truncated, _ = env.step(KEEP)
        steps += 1
    assert steps == 240
    env.close()
    default.close()


# ------------------------------------------------------------------ reset options and actions


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("constant", r"must be a dict, got a str \(for a scenario: options=\{'scenario'"),
        (["scenario"], "must be a dict, got a list"),
        ({"scenari": "ramp"}, r"unknown reset options \['scenari'\]"),
        ({"scenario": "nope"}, "unknown scenario 'nope'"),
    ],
)
def test_bad_reset_options_then_a_good_reset(options: object, expected: str) -> None:
    env = gym.make(V0)
    # A good reset first: Gymnasium's PassiveEnvChecker cannot take a first reset that
    # raised (its first step then fails unpacking the missing reset data).
    env.reset(seed=0)
    with pytest.raises(ConfigError, match=expected):
        env.reset(seed=0, options=options)
    _, info = env.reset(seed=0, options={"scenario": "spikes"})
    assert info["scenario"] == "spikes"
    env.step(KEEP)
    env.close()


@pytest.mark.parametrize(
    "action",
    [
        np.array([np.nan, 1, 1, 1]),
        np.array([1.0, np.inf, 1, 1]),
        [1, 1, -math.inf, 1],
        np.array([1.5, 1, 1, 1]),
    ],
)
def test_non_finite_actions_are_action_errors(action: object) -> None:
    env = gym.make(V0)
    env.reset(seed=0)
    before = dict(env.unwrapped.knob_values)
    t0 = env.unwrapped.backend.twin.t
    with pytest.raises(ActionError, match="not in the action space"):
        env.unwrapped.step(action)
    assert env.unwrapped.knob_values == before and env.unwrapped.backend.twin.t == t0
    env.step(np.array([2, 1, 1, 1]))
    env.close()


# ------------------------------------------------------------------ rewards that fail


class FlakyReward:
    """Returns ``bad`` on the steps listed in ``fail_at`` (counting calls), else 1."""

    def __init__(self, bad: object, fail_at: tuple[int, ...] = (1,)) -> None:
        self.bad, self.fail_at, self.calls = bad, fail_at, 0

    def __call__(self, metrics: dict) -> object:
        self.calls += 1
        if self.calls in self.fail_at:
            if isinstance(self.bad, Exception):
                raise self.bad
            return self.bad
        return 1.0


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (KeyError("latency_p999"), "raised KeyError"),
        (math.nan, "returned nan, not a finite number"),
        (math.inf, "returned inf, not a finite number"),
        ("1.0", "returned a str, not a number"),
        (None, "returned a NoneType, not a number"),
    ],
)
def test_a_failing_reward_leaves_the_env_consistent(bad: object, expected: str) -> None:
    reward = FlakyReward(bad)
    env = gym.make(V0, reward=reward)
    env.reset(seed=0)
    raw = env.unwrapped
    with pytest.raises(ConfigError, match=expected):
        env.step(np.array([2, 1, 1, 1]))
    # The step happened, as documented: time, knob, history and step count include it.
    assert raw.steps == 1 and len(raw.history) == 2
    assert raw.backend.twin.t == pytest.approx(2 * raw.step_seconds)
    assert raw.knob_values["heater_replicas"] == 3
    obs, value, _, _, info = env.step(KEEP)  # and the env carries on
    assert value == 1.0 and raw.steps == 2 and info["knobs"]["heater_replicas"] == 3
    assert raw.observation_space.contains(obs)
    env.close()
