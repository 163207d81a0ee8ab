"""SimpleK8sWebApp-v0 on real DigitalOcean through the pulumi backend (costs money).

Runs only when ``DIGITALOCEAN_TOKEN`` is set. It deploys the env's layers into a fresh
deployment with its state in a temporary directory, takes a few steps, and closes the env,
which destroys everything; a failure to destroy fails the test and names the command
(``infragym stacks destroy``) that removes the leftovers.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.cloud,
    pytest.mark.engine,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(
        not os.environ.get("DIGITALOCEAN_TOKEN"), reason="DIGITALOCEAN_TOKEN not set"
    ),
]


def test_simple_k8s_web_app_on_digitalocean(pulumi_env: Path) -> None:
    import gymnasium as gym

    deployment = f"ci{uuid.uuid4().hex[:6]}"
    env = gym.make(
        "SimpleK8sWebApp-v0",
        backend="pulumi",
        step_seconds=30,
        backend_options={"deployment": deployment, "state_url": f"file://{pulumi_env / 'state'}"},
    )
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        for _ in range(3):
            obs, reward, terminated, _truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
            assert isinstance(reward, float) and not terminated
            assert info["engine_calls"] >= 1
    finally:
        env.close()
