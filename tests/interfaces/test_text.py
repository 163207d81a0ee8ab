"""The text interface: parsing, penalties, determinism under a seed."""

from __future__ import annotations

import json

import pytest
from gymnasium.utils.env_checker import check_env

from infragym.errors import ActionError
from infragym.interfaces.text import (
    INVALID_ACTION_PENALTY,
    MAX_INVALID_ACTIONS,
    TextActionWrapper,
    make_text_env,
    parse_action,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def env() -> TextActionWrapper:
    e = make_text_env()
    yield e
    e.close()


def test_parse_action() -> None:
    assert parse_action('{"heater_replicas": 6}') == {"heater_replicas": 6}
    assert parse_action('  {"node_size": "s-4vcpu-8gb"}\n') == {"node_size": "s-4vcpu-8gb"}
    assert parse_action('```json\n{"node_count": 3}\n```') == {"node_count": 3}
    assert parse_action("```\n{}\n```") == {}
    for bad, message in [
        ("", "not valid JSON"),
        ("heater_replicas=6", "not valid JSON"),
        ('{"heater_replicas": 6', "not valid JSON"),
        ("[6, 1, 2, 3]", "got a JSON list"),
        ("6", "got a JSON int"),
        ('"{}"', "got a JSON str"),
    ]:
        with pytest.raises(ActionError, match=message):
            parse_action(bad)
    with pytest.raises(ActionError, match="must be a string"):
        parse_action({"heater_replicas": 6})


def test_valid_and_invalid_actions(env: TextActionWrapper) -> None:
    obs, info = env.reset(seed=3, options={"scenario": "diurnal"})
    assert obs in env.observation_space and info["invalid_action"] is None
    obs, reward, terminated, truncated, info = env.step('{"heater_replicas": 8}')
    assert info["invalid_action"] is None and not terminated and not truncated
    assert "step 1 of 120" in obs and info["knobs"]["heater_replicas"] == 8
    time_s, knobs = info["time_s"], info["knobs"]
    for action, message in [
        ("scale up please", "not valid JSON"),
        ('{"heater_replicas": 99}', "outside its domain"),
        ('{"node_size": "s-16vcpu-32gb"}', "one of s-1vcpu-2gb"),
        ('{"replicas": 4}', "unknown knob 'replicas'"),
        ('{"heater_cpu_limit": "1000m\\u00e9"}', "one of 500m"),  # non-ASCII stays ASCII
    ]:
        obs, reward, terminated, truncated, info = env.step(action)
        assert reward == INVALID_ACTION_PENALTY
        assert obs.startswith("INVALID ACTION: ") and message in obs
        assert "Nothing was applied and no time passed" in obs and "step 1 of 120" in obs
        assert obs in env.observation_space
        assert message in info["invalid_action"]
        assert (info["time_s"], info["knobs"]) == (time_s, knobs)
        assert not terminated and not truncated
    assert env.session.steps == 1
    obs, reward, *_, info = env.step("{}")
    assert info["invalid_action"] is None and info["invalid_in_a_row"] == 0
    assert info["time_s"] == time_s + 30 and info["knobs"] == knobs


def test_invalid_actions_do_not_touch_the_state() -> None:
    """An episode with invalid actions interleaved equals one without them."""
    actions = ['{"heater_replicas": 9}', '{"node_count": 3}', "{}", '{"heater_cpu_limit": "750m"}']
    a, b = make_text_env(), make_text_env()
    try:
        a.reset(seed=11, options={"scenario": "spikes"})
        b.reset(seed=11, options={"scenario": "spikes"})
        for action in actions:
            a.step("not an action")
            a.step('{"node_count": 0}')
            oa, ra, *_ = a.step(action)
            ob, rb, *_ = b.step(action)
            assert (oa, ra) == (ob, rb)
    finally:
        a.close()
        b.close()


def test_invalid_actions_in_a_row_truncate(env: TextActionWrapper) -> None:
    env.reset(seed=0, options={"scenario": "constant"})
    for i in range(1, MAX_INVALID_ACTIONS + 1):
        _, reward, terminated, truncated, info = env.step("nope")
        assert reward == INVALID_ACTION_PENALTY and info["invalid_in_a_row"] == i
        assert truncated == (i == MAX_INVALID_ACTIONS) and not terminated
    with pytest.raises(ActionError, match="call reset"):
        env.step("{}")
    env.reset(seed=0)
    _, _, _, truncated, info = env.step("{}")
    assert not truncated and info["invalid_in_a_row"] == 0


def test_a_custom_penalty() -> None:
    e = make_text_env(invalid_penalty=-3.0, max_invalid_actions=2)
    try:
        e.reset(seed=0, options={"scenario": "constant"})
        assert e.step("x")[1:4] == (-3.0, False, False)
        assert e.step("x")[1:4] == (-3.0, False, True)
    finally:
        e.close()


def test_determinism_under_a_seed() -> None:
    def run(seed: int) -> list:
        e = make_text_env()
        try:
            out = [e.reset(seed=seed)[0]]
            for step in range(12):
                replicas = 4 + (step * 7) % 13
                obs, reward, *_ = e.step(json.dumps({"heater_replicas": replicas}))
                out.append((obs, reward))
            return out
        finally:
            e.close()

    first = run(21)
    assert run(21) == first
    assert run(22) != first


def test_episode_end_and_check_env(env: TextActionWrapper) -> None:
    env.reset(seed=1, options={"scenario": "ramp", "split": "test"})
    truncated, steps = False, 0
    while not truncated:
        _, _, terminated, truncated, _ = env.step('{"heater_replicas": 10}')
        assert not terminated
        steps += 1
    assert steps == 120
    assert "EPISODE OVER" in env.session.observe()
    with pytest.raises(ActionError, match="episode is over"):
        env.step("{}")
    assert "250 ms" in env.task_description and env.task_description.isascii()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_check_env() -> None:
    e = make_text_env()
    try:
        check_env(e, skip_render_check=True)
    finally:
        e.close()
