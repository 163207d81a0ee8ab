"""``infragym mcp ENV_ID``: an environment as a Model Context Protocol server.

Built on the official ``mcp`` Python SDK (``pip install 'infragym[mcp]'``); stdio is the
default transport. The tools drive one :class:`~infragym.interfaces.session.AgentSession`:

- ``reset(scenario?, seed?, split?)``: start an episode; returns the observation.
- ``observe()``: metrics with units, knobs requested and running, updates in flight, the
  recent load, the last reward.
- ``list_knobs()``: names, domains and what each changes in which layer.
- ``set_knobs(knobs)``: stage ``{name: value}`` targets in the knobs' own units (every
  name and value is checked first; knobs not named keep their targets).
- ``wait(steps=1)``: apply the staged targets and advance ``steps`` steps; returns the
  observation and the reward(s).
- ``describe_layers()``: the layers and their resources, from the resource graph.
- ``episode_summary()``: return, cost and SLO attainment.

Every tool answers with text for the model and the same data as structured content for
programs. A bad call is an MCP tool error (``isError``) carrying the
:class:`~infragym.errors.ActionError` or :class:`~infragym.errors.ConfigError` message,
and changes nothing: the episode goes on.

Guard rails: the ``sim`` backend by default; ``--backend pulumi`` (real DigitalOcean, real
money) only with ``--allow-spend``; the HTTP transport binds 127.0.0.1 only and requires
the bearer token in ``INFRAGYM_MCP_TOKEN``.
"""

from __future__ import annotations

import functools
import hmac
import os
import threading
from collections.abc import Callable
from typing import Annotated, Any

import typer

from infragym.errors import ConfigError, InfraGymError
from infragym.interfaces.session import DEFAULT_ENV_ID, AgentSession, check_backend, json_value

HTTP_HOST = "127.0.0.1"
"""The only address the HTTP transport binds."""
TOKEN_ENV = "INFRAGYM_MCP_TOKEN"
"""Environment variable holding the bearer token the HTTP transport requires."""
MIN_TOKEN_CHARS = 16
TRANSPORTS = ("stdio", "streamable-http")


def _sdk() -> tuple[Any, Any]:
    """The SDK's server class and ToolError (``MCPServer`` in mcp 2, ``FastMCP`` in mcp 1).

    Raises:
        ConfigError: The ``mcp`` package is not installed.
    """
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "mcp":
            raise
        try:  # mcp 1.x
            from mcp.server.fastmcp import FastMCP as MCPServer
            from mcp.server.fastmcp.exceptions import ToolError
        except ModuleNotFoundError:
            raise ConfigError(
                "the MCP server needs the mcp package: pip install 'infragym[mcp]'"
            ) from None
    return MCPServer, ToolError


def _result(text: str, data: dict[str, Any]) -> Any:
    """A tool result: ``text`` for the model, ``data`` as structured content."""
    from mcp.types import CallToolResult

    return CallToolResult.model_validate(
        {"content": [{"type": "text", "text": text}], "structuredContent": data}
    )


def build_server(session: AgentSession) -> Any:
    """An MCP server (the SDK's ``MCPServer``/``FastMCP``) whose tools drive ``session``.

    Tools run one at a time (a lock), whatever the client sends concurrently.
    """
    server_cls, tool_error = _sdk()
    server = server_cls(
        name="infragym", instructions=session.task_description(), log_level="WARNING"
    )
    lock = threading.Lock()

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                try:
                    return fn(*args, **kwargs)
                except InfraGymError as exc:
                    raise tool_error(f"{type(exc).__name__}: {exc}") from None

        return call

    def observation(prefix: str = "") -> Any:
        return _result(prefix + session.observe(), session.observation())

    @server.tool()
    @guarded
    def reset(
        scenario: str | None = None, seed: int | None = None, split: str | None = None
    ) -> Any:
        """Start a new episode and return its first observation.

        Args:
            scenario: Load scenario (constant, diurnal, spikes, ramp, trace-conv,
                trace-code); drawn at random when left out.
            seed: Seed of the episode: the same seed, scenario and actions give the same
                episode.
            split: Scenario variants: train (default), validation or test.
        """
        session.reset(scenario=scenario, seed=seed, split=split)
        return observation()

    @server.tool()
    @guarded
    def observe() -> Any:
        """The current observation: metrics over the last step with units, the knobs as
        requested and as running, updates in flight, the recent load and the last reward."""
        return observation()

    @server.tool()
    @guarded
    def list_knobs() -> Any:
        """The knobs: names, domains, units, which layer and resource property each sets,
        what it changes, node sizes with prices, and the values requested and running."""
        return _result(session.knobs_text(), {"knobs": session.list_knobs()})

    @server.tool()
    @guarded
    def set_knobs(knobs: dict[str, Any]) -> Any:
        """Stage knob targets, applied by the next wait().

        Args:
            knobs: {name: value} in the knobs' own units, for example
                {"heater_replicas": 6, "node_size": "s-4vcpu-8gb"}. Knobs not named keep
                their targets. Every name and value is checked before anything changes.
        """
        staged = session.set_knobs(knobs)
        changed = ", ".join(f"{n}={v}" for n, v in staged["changed"].items()) or "nothing"
        text = f"Staged; the next wait() applies them. Changes from what is requested: {changed}."
        return _result(text, staged)

    @server.tool()
    @guarded
    def wait(steps: int = 1) -> Any:
        """Apply the staged knob targets and let time pass; return the observation and reward.

        Args:
            steps: Steps to advance (each is the env's step length, 30 s by default),
                holding the same targets. Stops early at the episode's end.
        """
        out = session.wait(steps)
        rewards = " ".join(f"{r:+.3f}" for r in out["rewards"])
        head = f"Advanced {len(out['rewards'])} step(s). Reward(s): {rewards}"
        if len(out["rewards"]) > 1:
            head += f" (sum {sum(out['rewards']):+.3f})"
        data = session.observation()
        data.update(rewards=out["rewards"], step_metrics=json_value(out["metrics"]))
        return _result(head + "\n\n" + session.observe(), data)

    @server.tool()
    @guarded
    def describe_layers() -> Any:
        """The deployment's layers and their resources (type and name), from the resource
        graph, with the knobs on each and the layers with an update in flight."""
        text = session.describe_layers()
        return _result(text, {"layers": session.layers()})

    @server.tool()
    @guarded
    def episode_summary() -> Any:
        """Return, cloud cost and SLO attainment of the episode (so far, or finished)."""
        return _result(session.summary_text(), session.episode_summary())

    return server


class _TokenGate:
    """ASGI middleware: HTTP requests need ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(got, self.expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send(
                    {"type": "http.response.body", "body": b"missing or wrong bearer token\n"}
                )
                return
        await self.app(scope, receive, send)


def http_token() -> str:
    """The bearer token for the HTTP transport, from :data:`TOKEN_ENV`.

    Raises:
        ConfigError: The variable is unset or shorter than :data:`MIN_TOKEN_CHARS`.
    """
    token = os.environ.get(TOKEN_ENV, "")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"the HTTP transport requires a bearer token of at least {MIN_TOKEN_CHARS} "
            f"characters in {TOKEN_ENV} (for example: export {TOKEN_ENV}=$(openssl rand "
            "-hex 24)); clients send it as 'Authorization: Bearer <token>'"
        )
    return token


def serve(
    env_id: str = DEFAULT_ENV_ID,
    *,
    backend: str = "sim",
    allow_spend: bool = False,
    transport: str = "stdio",
    port: int = 8765,
    **env_kwargs: Any,
) -> None:
    """Build the session and the server and serve until the client disconnects.

    Raises:
        ConfigError: A spending backend without ``allow_spend``, an unknown transport, a
            missing HTTP token, or a bad env argument (all before anything is deployed).
    """
    check_backend(backend, allow_spend)
    if transport not in TRANSPORTS:
        raise ConfigError(f"unknown transport {transport!r}; valid: {', '.join(TRANSPORTS)}")
    token = http_token() if transport != "stdio" else None
    _sdk()  # a missing SDK is reported before the env is built
    session = AgentSession.make(env_id, backend=backend, allow_spend=allow_spend, **env_kwargs)
    try:
        server = build_server(session)
        if token is None:
            server.run("stdio")
        else:
            import uvicorn

            app = _TokenGate(server.streamable_http_app(), token)
            uvicorn.run(app, host=HTTP_HOST, port=port, log_level="warning")
    finally:
        session.env.close()


def mcp_command(
    env_id: Annotated[str, typer.Argument(help="Environment id.")] = DEFAULT_ENV_ID,
    backend: Annotated[str, typer.Option(help="sim (the twin) or pulumi (real cloud).")] = "sim",
    allow_spend: Annotated[
        bool, typer.Option("--allow-spend", help="Required for --backend pulumi: it spends money.")
    ] = False,
    transport: Annotated[
        str, typer.Option(help=f"stdio, or streamable-http on {HTTP_HOST} (needs {TOKEN_ENV}).")
    ] = "stdio",
    port: Annotated[int, typer.Option(help="Port of the HTTP transport.")] = 8765,
    split: Annotated[str, typer.Option(help="Default scenario split.")] = "train",
    step_seconds: Annotated[float, typer.Option(help="Seconds per step.")] = 30.0,
) -> None:
    """Serve an environment to language-model agents over the Model Context Protocol."""
    try:
        serve(
            env_id,
            backend=backend,
            allow_spend=allow_spend,
            transport=transport,
            port=port,
            split=split,
            step_seconds=step_seconds,
        )
    except InfraGymError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None


def main(args: list[str] | None = None) -> None:
    """Run :func:`mcp_command` as a command line (``infragym mcp ...``)."""
    cmd = typer.Typer(add_completion=False)
    cmd.command()(mcp_command)
    cmd(args=args, prog_name="infragym mcp")


if __name__ == "__main__":
    main()
