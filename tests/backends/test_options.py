"""Bad ``backend_options`` and a failed pulumi reset: clear errors that never show secrets.

``gym.make`` rewrites a ``TypeError`` from an env's constructor to list every keyword
argument, credentials among them; :func:`infragym.backends.make_backend` checks option
names and values itself first. None of these tests contacts an engine.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import infragym  # noqa: F401  (registers the environments)
from infragym.backends import LayerSpec, make_backend
from infragym.backends.options import option_names
from infragym.backends.pulumi import PulumiBackend
from infragym.backends.sim import SimBackend
from infragym.errors import ConfigError
from infragym.twin.model import TwinParams

ENV_ID = "SimpleK8sWebApp-v0"
SECRET = "TOPSECRET123"


def _no_secret(exc: BaseException) -> None:
    """The error, its chain and its repr show no credential."""
    seen = exc
    while seen is not None:
        assert SECRET not in str(seen) and SECRET not in repr(seen)
        seen = seen.__cause__ or seen.__context__


def _pulumi_options(tmp_path, **extra):
    return {"state_url": f"file://{tmp_path}/state", "step_wait": False, **extra}


def test_unknown_option_is_named_with_the_valid_ones_and_no_secret_is_shown(tmp_path) -> None:
    options = {"state_url": f"s3://KEY:{SECRET}@bucket", "kep": True}
    with pytest.raises(ConfigError, match=r"unknown pulumi backend option 'kep'") as info:
        gym.make(ENV_ID, backend="pulumi", backend_options=options)
    assert "did you mean keep" in str(info.value) and "state_url" in str(info.value)
    _no_secret(info.value)
    # Still usable: the same options without the typo build the backend (no engine call).
    backend = make_backend("pulumi", **_pulumi_options(tmp_path))
    assert isinstance(backend, PulumiBackend)
    backend.close()


def test_unknown_sim_option_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown sim backend option 'twin_engin'") as info:
        gym.make(ENV_ID, backend_options={"twin_engin": "python"})
    assert "twin_engine" in str(info.value)
    env = gym.make(ENV_ID, backend_options={"twin_engine": "auto"})
    env.reset(seed=0)
    env.close()


def test_prometheus_url_with_credentials_is_checked_without_showing_them(tmp_path) -> None:
    for url in (f"ftp://user:{SECRET}@prom.example:9090", "prometheus:9090", ""):
        with pytest.raises(ConfigError, match="'prometheus_url' must be an http") as info:
            make_backend("pulumi", **_pulumi_options(tmp_path, prometheus_url=url))
        _no_secret(info.value)
    with pytest.raises(ConfigError, match="'prometheus_url' is not a valid URL") as info:
        make_backend(
            "pulumi", **_pulumi_options(tmp_path, prometheus_url=f"http://u:{SECRET}@[bad")
        )
    _no_secret(info.value)
    with pytest.raises(ConfigError, match="unknown pulumi backend option 'prometheus'") as info:
        make_backend("pulumi", prometheus=f"https://user:{SECRET}@prom.example")
    _no_secret(info.value)
    good = make_backend(
        "pulumi", **_pulumi_options(tmp_path, prometheus_url=f"https://u:{SECRET}@prom.example")
    )
    assert isinstance(good, PulumiBackend)
    good.close()


@pytest.mark.parametrize("url", ["s3://[bad", f"s3://KEY:{SECRET}@[bad", "file://x:99999999"])
def test_unparsable_state_url_is_a_clear_error(url: str) -> None:
    with pytest.raises(ConfigError, match="state URL is not a valid URL") as info:
        make_backend("pulumi", state_url=url)
    _no_secret(info.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("keep", "yes", "'keep' must be True or False"),
        ("step_wait", 1, "'step_wait' must be True or False"),
        ("deployment", 5, "'deployment' must be a non-empty string"),
        ("window_seconds", float("inf"), "'window_seconds' must be a positive, finite"),
        ("window_seconds", "30", "'window_seconds' must be a number"),
        ("env", {"A": 1}, "'env' must be a dict"),
        ("state_url", 5, "'state_url' must be a URL string"),
        ("passphrase_file", "", "'passphrase_file' must be a non-empty path"),
    ],
)
def test_pulumi_option_values_are_checked(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        make_backend("pulumi", **{key: value})
    assert repr(value) not in str(info.value) or key == "window_seconds"


def test_twin_params_as_a_dict_is_accepted_and_checked() -> None:
    backend = make_backend("sim", twin_params={"node_boot_s": 60, "noise": False})
    assert isinstance(backend, SimBackend)
    assert backend.twin_params == TwinParams(node_boot_s=60, noise=False)
    with pytest.raises(ConfigError, match="unknown twin parameter 'node_boot'"):
        make_backend("sim", twin_params={"node_boot": 60})
    with pytest.raises(ConfigError, match=r"twin_params.pod_startup_s must be a finite number"):
        make_backend("sim", twin_params={"pod_startup_s": -1})
    with pytest.raises(ConfigError, match=r"twin_params.noise must be True or False"):
        make_backend("sim", twin_params=TwinParams(noise="yes"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'twin_params' must be a TwinParams"):
        make_backend("sim", twin_params=5)
    env = gym.make(ENV_ID, backend_options={"twin_params": {"node_boot_s": 60}})
    env.reset(seed=0)
    env.step(np.array([1, 1, 2, 1]))
    assert env.unwrapped.backend.twin_params.node_boot_s == 60
    env.close()


def test_twin_engine_is_a_closed_choice() -> None:
    with pytest.raises(ConfigError, match=r"unknown twin_engine 'rust'.*auto, native"):
        make_backend("sim", twin_engine="rust")


def test_the_python_twin_engine_is_refused_as_retired() -> None:
    with pytest.raises(ConfigError, match=r"'twin_engine'.*Python twin was retired"):
        make_backend("sim", twin_engine="python")
    with pytest.raises(ConfigError, match=r"Python twin was retired"):
        gym.make(ENV_ID, backend_options={"twin_engine": "python"})


@pytest.mark.parametrize("cls", [SimBackend, PulumiBackend])
def test_actuation_option_is_accepted_where_the_backend_takes_it(cls: type, tmp_path) -> None:
    name = "sim" if cls is SimBackend else "pulumi"
    if "actuation" not in option_names(cls):
        pytest.skip(f"the {name} backend takes no actuation option yet")
    extra = {} if cls is SimBackend else _pulumi_options(tmp_path)
    for mode in ("async", "immediate"):
        make_backend(name, actuation=mode, **extra).close()
    with pytest.raises(ConfigError, match=r"unknown actuation 'later'"):
        make_backend(name, actuation="later", **extra)


def test_unknown_backend_and_option_names_of_other_types() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'simm'; valid choices: sim, pulumi"):
        make_backend("simm")
    with pytest.raises(ConfigError, match="unknown backend '<int>'"):
        make_backend(5)  # type: ignore[arg-type]
    from infragym.backends.options import check_options

    with pytest.raises(ConfigError, match="unknown sim backend option '<int>'"):
        check_options("sim", SimBackend, {5: "x"})
    with pytest.raises(ConfigError, match="backend_options must be a dict"):
        check_options("sim", SimBackend, ["twin_engine"])  # type: ignore[arg-type]


def test_failed_pulumi_reset_then_step_says_there_is_no_deployment(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_CLI", "/nonexistent/pulumi")  # the reset fails at the engine
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "test")  # nothing written to ~/.infragym
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "not-a-real-token")
    env = gym.make(ENV_ID, backend="pulumi", backend_options=_pulumi_options(tmp_path))
    with pytest.raises(ConfigError, match="PULUMI_CLI"):
        env.reset(seed=0)
    raw = env.unwrapped
    with pytest.raises(ConfigError, match="has no deployment: call reset"):
        raw.backend.observe(["request_rate", "cost_hourly"])
    with pytest.raises(ConfigError, match="has no deployment: call reset"):
        raw.backend.apply([])
    # The env says the same when stepped directly (gym.make's order check aside).
    with pytest.raises(ConfigError, match="reset"):
        raw.step(np.array([1, 1, 1, 1]))
    env.close()  # closes cleanly
    assert raw.backend._engine is None


def test_reset_refused_before_deploying_leaves_no_deployment(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reset refused by its checks (before the engine) leaves the backend as it was."""
    monkeypatch.setenv("PULUMI_CLI", "/nonexistent/pulumi")
    backend = make_backend("pulumi", **_pulumi_options(tmp_path))
    with pytest.raises(ConfigError, match="unknown layer"):
        backend.reset([LayerSpec("no-such-layer", {})])
    with pytest.raises(ConfigError, match="has no deployment: call reset"):
        backend.apply([])
    backend.close()
    assert backend._engine is None
