"""``infragym tune hpa`` (tiny budget), ``infragym evaluate --split test`` with tuned and
baseline agents, and the paired-bootstrap intervals it reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("optuna")

from infragym import evaluate as ev
from infragym.agents import specs
from infragym.agents.tuning import hpa_agent, load_hpa, tune_hpa
from infragym.cli import app
from infragym.errors import ConfigError


def test_tune_then_evaluate_on_the_test_split(tmp_path) -> None:
    tuned = tmp_path / "tuned.json"
    result = CliRunner().invoke(
        app, ["tune", "hpa", "--budget", "720", "--episodes", "2", "--out", str(tuned)]
    )
    assert result.exit_code == 0, result.output
    config = json.loads(tuned.read_text())
    # 720 steps = 3 trials of 2 × 120 steps; the first is the Kubernetes default.
    assert config["tuning"]["trials"] == 3 and config["tuning"]["steps"] == 720
    assert config["tuning"]["split"] == "train"
    assert config["train_score"]["return"] >= config["default_train_score"]["return"] - 1e-9
    assert load_hpa(tuned).name == f"hpa:{tuned.stem}"

    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        app,
        ["evaluate", "SimpleK8sWebApp-v1", "--agents", f"hpa,hpa:{tuned},static",
         "--split", "test", "--episodes", "2", "--scenarios", "ramp,trace-code",
         "--output", str(out), "--plot", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["split"] == "test" and data["reference"] == "hpa"
    assert data["scenarios"] == ["ramp", "trace-code"]
    names = [a["agent"] for a in data["agents"]]
    assert names == ["hpa", f"hpa:{tuned}", "static"]
    ref = data["agents"][0]["vs_reference"]["ret"]
    assert ref["value"] == ref["low"] == ref["high"] == 0.0
    assert "paired-bootstrap" in result.output


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--agents", "ppo"], "needs its run directory"),
        (["--agents", "ppo:/nonexistent/run"], "no run directory"),
        (["--agents", "hpa:/nonexistent.json"], "no hpa config"),
        (["--agents", "mpc:3"], "takes no argument"),
        (["--agents", "hpa,static", "--reference", "random"], "--reference 'random'"),
        (["--split", "tset"], "unknown split 'tset'"),
        (["--scenarios", "ramp,rmap"], "unknown scenario 'rmap'"),
    ],
)
def test_bad_evaluate_arguments(argv, expected) -> None:
    result = CliRunner().invoke(app, ["evaluate", "SimpleK8sWebApp-v1", *argv])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output


def test_split_needs_v1() -> None:
    result = CliRunner().invoke(app, ["evaluate", "SimpleK8sWebApp-v0", "--split", "test"])
    assert result.exit_code == 2 and "--split needs" in result.output


def test_tune_budget_below_one_trial() -> None:
    with pytest.raises(ConfigError, match="less than one trial"):
        tune_hpa(budget_steps=100, episodes_per_trial=1)


def test_hpa_agent_rejects_unknown_parameters() -> None:
    with pytest.raises(ConfigError, match="unknown hpa parameters"):
        hpa_agent({"target": 0.5})


def test_paired_bootstrap_intervals() -> None:
    rng = np.random.default_rng(1)
    b = rng.normal(10.0, 3.0, size=200)
    a = b + 1.0 + rng.normal(0.0, 0.1, size=200)  # paired: the spread of b cancels
    value, low, high = ev.paired_bootstrap(a, b)
    assert low < 1.0 < high and high - low < 0.1
    assert value == pytest.approx(np.mean(a) - np.mean(b))
    rel, rlow, rhigh = ev.paired_bootstrap(0.9 * b, b, relative=True)
    assert rel == pytest.approx(-0.1) and rlow == pytest.approx(-0.1)
    assert rhigh == pytest.approx(-0.1)
    with pytest.raises(ConfigError):
        ev.paired_bootstrap(a, b[:-1])


def test_compare_needs_the_same_episodes() -> None:
    e = ev.EpisodeStats(1.0, 0.1, 0.1, 1.0, 0.0)
    results = [ev.AgentSummary("a", [e, e]), ev.AgentSummary("b", [e])]
    with pytest.raises(ConfigError, match="same episodes"):
        ev.compare(results)
    with pytest.raises(ConfigError, match="reference agent 'c'"):
        ev.compare(results, "c")


def test_agent_specs() -> None:
    assert specs.split_spec("hpa:x.json") == ("hpa", "x.json")
    assert specs.split_spec("mpc") == ("mpc", None)
    with pytest.raises(ConfigError, match="did you mean"):
        specs.split_spec("mcp")
    with pytest.raises(ConfigError, match="empty argument"):
        specs.split_spec("hpa:")
