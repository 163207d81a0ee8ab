"""The MCP server as a subprocess, driven by the official SDK's client over stdio.

Every wait is bounded: ``anyio.fail_after`` around each client session, a per-call read
timeout, pytest-timeout on each test, and subprocess timeouts for the CLI checks.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import anyio
import gymnasium as gym
import pytest

from infragym.interfaces.mcp_server import TOKEN_ENV
from infragym.interfaces.session import json_value
from tests.interfaces.helpers import is_error, rule_policy, structured, text
from tests.procs import REPO_ROOT, free_port, start_process, stop_process

pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

pytestmark = pytest.mark.timeout(300)
SESSION_SECONDS = 240
CALL_SECONDS = 60
# The client's read timeout: seconds in mcp 2, a timedelta in mcp 1.
_MCP_MAJOR = int(importlib.metadata.version("mcp").split(".")[0])
READ_TIMEOUT = CALL_SECONDS if _MCP_MAJOR >= 2 else datetime.timedelta(seconds=CALL_SECONDS)
TOOLS = {
    "reset",
    "observe",
    "list_knobs",
    "set_knobs",
    "wait",
    "describe_layers",
    "episode_summary",
}


@contextlib.asynccontextmanager
async def server(*args: str) -> AsyncIterator[tuple[ClientSession, Any]]:
    """A server subprocess (``python -m infragym.interfaces.mcp_server``) and a client."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "infragym.interfaces.mcp_server", *args],
        cwd=str(REPO_ROOT),
    )
    with tempfile.TemporaryFile("w+") as errlog:
        try:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write, read_timeout_seconds=READ_TIMEOUT) as client,
            ):
                init = await client.initialize()
                yield client, init
        except BaseException:
            errlog.seek(0)
            sys.stderr.write("server stderr:\n" + errlog.read()[-4000:])
            raise


def run(main: Any) -> None:
    async def bounded() -> None:
        with anyio.fail_after(SESSION_SECONDS):
            await main()

    anyio.run(bounded)


def test_every_tool_and_bad_arguments() -> None:
    async def main() -> None:
        async with server() as (c, init):
            assert "250 ms" in init.instructions and "set_knobs" in init.instructions
            assert {t.name for t in (await c.list_tools()).tools} == TOOLS

            r = await c.call_tool("observe", {})
            assert is_error(r) and "ActionError: no episode is running" in text(r)
            r = await c.call_tool("reset", {"scenario": "diurnal", "seed": 3})
            assert not is_error(r) and "scenario diurnal (train) | step 0 of 120" in text(r)
            start = structured(r)
            assert start["knobs"]["heater_replicas"] == 6 and start["step"] == 0

            # Bad arguments: clear errors, and the episode is as it was.
            for name, args, message in [
                ("reset", {"scenario": "tsunami"}, "ConfigError: unknown scenario 'tsunami'"),
                ("reset", {"split": "dev"}, "ConfigError: unknown split 'dev'"),
                ("reset", {"seed": -4}, "ConfigError: seed must be"),
                ("set_knobs", {"knobs": {"heater_replicas": 40}}, "outside its domain"),
                ("set_knobs", {"knobs": {"node_size": "huge"}}, "ActionError: knob 'node_size'"),
                ("set_knobs", {"knobs": {"replicas": 3}}, "did you mean heater_replicas"),
                ("set_knobs", {"knobs": {"heater_replicas": 4, "node_count": 11}}, "1..10"),
                ("set_knobs", {"knobs": "heater_replicas=4"}, "knobs"),
                ("set_knobs", {}, "knobs"),
                ("wait", {"steps": 0}, "steps must be an integer in 1..120"),
                ("wait", {"steps": "many"}, "steps"),
                ("no_such_tool", {}, "no_such_tool"),
            ]:
                r = await c.call_tool(name, args)
                assert is_error(r), (name, args)
                assert message in text(r), (name, args, text(r))
            r = await c.call_tool("observe", {})
            assert structured(r) == start

            r = await c.call_tool("set_knobs", {"knobs": {"heater_replicas": 9, "node_count": 3}})
            assert not is_error(r)
            assert structured(r)["changed"] == {"heater_replicas": 9, "node_count": 3}
            assert "Staged for the next wait: heater_replicas=9, node_count=3" in text(
                await c.call_tool("observe", {})
            )
            r = await c.call_tool("wait", {"steps": 2})
            data = structured(r)
            assert not is_error(r) and len(data["rewards"]) == 2 and data["step"] == 2
            assert text(r).startswith("Advanced 2 step(s). Reward(s): ")
            assert data["knobs"]["node_count"] == 3 and data["knobs_running"]["node_count"] == 2
            assert "do-managed-k8s: node_count=3" in text(r)
            assert len(data["step_metrics"]) == 2 and "latency_p95" in data["step_metrics"][0]

            r = await c.call_tool("list_knobs", {})
            knobs = {k["name"]: k for k in structured(r)["knobs"]}
            assert set(knobs) == {"heater_replicas", "heater_cpu_limit", "node_count", "node_size"}
            assert knobs["heater_cpu_limit"]["values"] == ["500m", "750m", "1000m"]
            assert knobs["node_count"]["layer"] == "do-managed-k8s"
            assert "s-8vcpu-16gb: 8 vCPU" in text(r)

            r = await c.call_tool("describe_layers", {})
            layers = [layer["layer"] for layer in structured(r)["layers"]]
            assert layers[:2] == ["do-core", "do-managed-k8s"] and "k8s-heater" in layers
            assert "do-managed-k8s (after: do-core) [update in flight]" in text(r)

            r = await c.call_tool("episode_summary", {})
            s = structured(r)
            assert s["steps"] == 2 and math.isclose(s["return"], sum(data["rewards"]))
            assert "SLO attainment" in text(r)

    run(main)


def _gym_episode(scenario: str, seed: int) -> tuple[list[float], list[dict]]:
    """The rule policy through gym.make(..., action_mode="absolute")."""
    env = gym.make("SimpleK8sWebApp-v1", action_mode="absolute")
    try:
        _, info = env.reset(seed=seed, options={"scenario": scenario})
        rewards, metrics = [], []
        done, step = False, 0
        while not done:
            targets = rule_policy(step, info["metrics"], info["knobs"])
            action = env.unwrapped.codec.encode(targets, info["knobs"])
            _, reward, terminated, truncated, info = env.step(action)
            rewards.append(reward)
            metrics.append(json_value(info["metrics"]))
            done, step = terminated or truncated, step + 1
        return rewards, metrics
    finally:
        env.close()


EPISODES = [("spikes", 7), ("trace-conv", 3)]


def test_policy_through_mcp_equals_gym_make() -> None:
    """The same rule policy, through the MCP tools and through gym.make: same episodes."""
    through_mcp: list[tuple[list[float], list[dict], dict]] = []

    async def main() -> None:
        async with server() as (c, _):
            for scenario, seed in EPISODES:
                obs = structured(await c.call_tool("reset", {"scenario": scenario, "seed": seed}))
                rewards, metrics = [], []
                while not obs["done"]:
                    targets = rule_policy(obs["step"], obs["metrics"], obs["knobs"])
                    r = await c.call_tool("set_knobs", {"knobs": targets})
                    assert not is_error(r), text(r)
                    r = await c.call_tool("wait", {"steps": 1})
                    assert not is_error(r), text(r)
                    obs = structured(r)
                    rewards += obs["rewards"]
                    metrics += obs["step_metrics"]
                summary = structured(await c.call_tool("episode_summary", {}))
                r = await c.call_tool("wait", {})
                assert is_error(r) and "the episode is over (120 of 120 steps)" in text(r)
                through_mcp.append((rewards, metrics, summary))

    run(main)
    for (scenario, seed), (rewards, metrics, summary) in zip(EPISODES, through_mcp, strict=True):
        gym_rewards, gym_metrics = _gym_episode(scenario, seed)
        assert len(rewards) == len(gym_rewards) == 120
        assert rewards == gym_rewards  # exactly: floats survive JSON
        assert metrics == gym_metrics
        assert summary["return"] == sum(gym_rewards)
        assert summary["steps"] == 120 and summary["done"]
        # The policy did change things (the comparison is not vacuous).
        assert len({m["replicas_desired"] for m in metrics}) > 3


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infragym.cli", "mcp", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_pulumi_guard_on_the_command_line() -> None:
    done = _cli("--backend", "pulumi")
    assert done.returncode == 2
    assert "spends money" in done.stderr and "--allow-spend" in done.stderr
    assert done.stdout == ""
    done = _cli("SimpleK8sWebApp-v1", "--backend", "nope")
    assert done.returncode == 2 and "unknown backend 'nope'" in done.stderr
    done = _cli("--transport", "sse")
    assert done.returncode == 2 and "unknown transport 'sse'" in done.stderr
    assert "--allow-spend" in _cli("--help").stdout


def test_http_transport_needs_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    done = _cli("--transport", "streamable-http", env=env)
    assert done.returncode == 2 and TOKEN_ENV in done.stderr
    done = _cli("--transport", "streamable-http", env={**env, TOKEN_ENV: "short"})
    assert done.returncode == 2 and "at least 16" in done.stderr

    token = "t0k3n-for-a-test-only-0123456789"
    port = free_port()
    proc = start_process(
        [
            "-m",
            "infragym.interfaces.mcp_server",
            "--transport",
            "streamable-http",
            "--port",
            str(port),
        ],
        env={TOKEN_ENV: token},
    )
    url = f"http://127.0.0.1:{port}/mcp"
    body = (
        b'{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": '
        b'"2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}'
    )

    def post(auth: str | None) -> int:
        headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        }
        if auth is not None:
            headers["authorization"] = auth
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status = post(None)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.describe()
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.3)
        assert status == 401
        assert post("Bearer wrong-token-0123456789") == 401
        assert post(token) == 401  # the scheme is required
        assert post(f"Bearer {token}") == 200, proc.describe()
    finally:
        stop_process(proc)
