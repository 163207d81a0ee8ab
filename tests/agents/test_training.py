"""``infragym train``: a tiny training end to end, and what a run directory holds."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("stable_baselines3")

import gymnasium as gym

import infragym  # noqa: F401
from infragym.agents import specs
from infragym.agents.learned import update_mask
from infragym.agents.training import TrainConfig
from infragym.cli import app
from infragym.errors import ConfigError
from infragym.evaluate import evaluate


def test_tiny_training_end_to_end(tmp_path) -> None:
    result = CliRunner().invoke(
        app,
        ["train", "SimpleK8sWebApp-v1", "--steps", "960", "--envs", "2", "--seed", "3",
         "--eval-every", "480", "--eval-episodes", "1", "--name", "tiny", "--out",
         str(tmp_path), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = tmp_path / "tiny"
    for name in ("best_model.zip", "best_vecnormalize.pkl", "final_model.zip",
                 "final_vecnormalize.pkl", "config.json", "curve.csv", "curve.png"):  # fmt: skip
        assert (run / name).is_file(), name
    summary = json.loads((run / "config.json").read_text())
    assert summary["config"]["seed"] == 3 and summary["steps"] >= 960
    assert summary["hyperparams"]["n_steps"] == 240
    rows = list(csv.DictReader((run / "curve.csv").open()))
    assert [int(r["steps"]) for r in rows] == [480, 960]
    best = max(float(r["val_return"]) for r in rows)
    assert summary["best_val_return"] == pytest.approx(best)
    assert "validation return" in result.output and "evaluate it" in result.output

    # The run loads as an agent and plays in either action mode (a delta policy's moves
    # become target values in an absolute env), on the same episodes as a baseline.
    agent = specs.make(f"ppo:{run}")
    for mode in ("absolute", "delta"):
        out = evaluate(
            lambda mode=mode: gym.make(
                "SimpleK8sWebApp-v1", action_mode=mode, split="test", max_episode_steps=10
            ),
            [agent, specs.make("static")],
            episodes=1,
            scenarios=["ramp"],
        )
        assert len(out[0].episodes[0].replicas) == 10
    # Training again into the same run directory is refused, not overwritten.
    again = CliRunner().invoke(
        app, ["train", "SimpleK8sWebApp-v1", "--steps", "10", "--name", "tiny", "--out",
              str(tmp_path), "--no-progress"],
    )  # fmt: skip
    assert again.exit_code == 2 and "already holds a model" in again.output


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"algo": "dqn"}, "DQN needs a single Discrete action space"),
        ({"algo": "sac"}, "needs a continuous (Box) action space"),
        ({"algo": "ppp"}, "unknown algorithm 'ppp'"),
        ({"total_steps": 0}, "total_steps must be an integer >= 1"),
        ({"action_mode": "relative"}, "action_mode must be"),
        ({"algo": "recurrent-ppo", "frame_stack": 2}, "recurrent-ppo has its own memory"),
    ],
)
def test_bad_configs_are_refused(kwargs, expected) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**kwargs).check()


def test_train_cli_refuses_unfit_algorithm(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["train", "SimpleK8sWebApp-v1", "--algo", "dqn", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "MultiDiscrete" in result.output and "Traceback" not in result.output


def test_update_mask_freezes_knobs_of_a_busy_layer() -> None:
    env = gym.make("SimpleK8sWebApp-v1", action_mode="delta")
    env.reset(seed=0)
    u = env.unwrapped
    assert update_mask(u, "delta").all()
    # Ask for a bigger pool: its layer's update is in flight while the new nodes boot.
    env.step(np.array([1, 1, 2, 1]))
    busy = set(u.backend.queue.in_flight)
    assert "do-managed-k8s" in busy
    mask = update_mask(u, "delta").reshape(4, 3)
    for knob, row in zip(u.knobs, mask, strict=True):
        expected = [False, True, False] if knob.layer in busy else [True, True, True]
        assert row.tolist() == expected, knob.name
    absolute = update_mask(u, "absolute")
    assert absolute.size == sum(len(k.values) for k in u.knobs)
    env.close()
