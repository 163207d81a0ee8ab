"""The ``infragym`` command: evaluate agents, list layers and sizes, manage stacks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infragym.cli_cluster import cluster_app
from infragym.cli_stacks import stacks_app
from infragym.errors import ConfigError, InfraGymError

app = typer.Typer(
    help="infragym: train and evaluate agents that operate cloud infrastructure.",
    no_args_is_help=True,
)


def _fail(exc: InfraGymError) -> None:
    typer.secho(f"error: {exc}", fg="red", err=True)
    raise typer.Exit(2)


@app.command()
def evaluate(
    env_id: Annotated[str, typer.Argument(help="Environment id, e.g. SimpleK8sWebApp-v0.")],
    agents: Annotated[
        str, typer.Option(help="Comma-separated baseline agents.")
    ] = "hpa,static,random",
    episodes: Annotated[int, typer.Option(min=1, help="Episodes per agent.")] = 5,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the first episode.")] = 0,
    backend: Annotated[str, typer.Option(help="sim or pulumi.")] = "sim",
    action_mode: Annotated[
        str, typer.Option(help="absolute lets rules jump like the real controllers.")
    ] = "absolute",
    plot: Annotated[
        Path,
        typer.Option(
            help="Where to write the plot (a directory gets evaluate.png; no suffix gets .png)."
        ),
    ] = Path("evaluate.png"),
) -> None:
    """Run baseline agents on an environment and compare them."""
    import gymnasium as gym
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    import infragym  # noqa: F401  (registers the envs)
    from infragym import evaluate as ev
    from infragym.agents.baselines import make_agent

    try:
        # Everything the user gave is checked before the run, which may take long.
        env_id = ev.check_env_id(env_id)
        chosen = [make_agent(name) for name in ev.agent_names(agents)]
        plot = ev.plot_path(plot)
        make_env = lambda: gym.make(env_id, backend=backend, action_mode=action_mode)  # noqa: E731
        probe = make_env()
        step_seconds = probe.unwrapped.step_seconds
        probe.close()
        with Progress(transient=True) as progress:
            task = progress.add_task("evaluating", total=len(chosen) * episodes)

            def advance(name: str, i: int) -> None:
                progress.update(task, advance=1, description=f"{name} episode {i + 1}")

            results = ev.evaluate(make_env, chosen, episodes, seed, on_episode=advance)
    except InfraGymError as exc:
        _fail(exc)
        return
    table = Table(
        title=f"{env_id}: {episodes} episode(s) per agent, seeds {seed}..{seed + episodes - 1}"
    )
    for col in ("agent", "mean return", "cost $/h", "episode cost $", "SLO attainment", "errors"):
        table.add_column(col, justify="right" if col != "agent" else "left")
    for r in results:
        table.add_row(
            r.agent,
            f"{r.mean('ret'):.1f}",
            f"{r.mean('mean_cost_hourly'):.3f}",
            f"{r.mean('cost_usd'):.3f}",
            f"{100 * r.mean('slo_attainment'):.1f} %",
            f"{100 * r.mean('mean_error_ratio'):.2f} %",
        )
    Console().print(table)
    try:
        ev.plot(results, str(plot), step_seconds)
    except OSError as exc:  # the directory was writable when checked; say what failed
        _fail(ConfigError(f"could not write the plot to {plot}: {exc.strerror or exc}"))
    typer.echo(f"plot written to {plot}")


@app.command()
def layers() -> None:
    """List the registered layers."""
    from stacks.registry import all_layers

    for layer in all_layers().values():
        optional = [f"{name} (optional)" for name in layer.optional_upstream]
        up = ", ".join([*layer.upstream, *optional]) or "-"
        typer.echo(f"{layer.name:<22} upstream: {up:<32} {layer.description}")


@app.command()
def sizes(kubernetes: Annotated[bool, typer.Option(help="Only DOKS node sizes.")] = False) -> None:
    """List DigitalOcean size slugs with vCPUs, memory and hourly price."""
    from infragym import catalog

    slugs = catalog.doks_node_sizes() if kubernetes else tuple(catalog.sizes())
    typer.echo(f"prices captured {catalog.PRICES_CAPTURED}")
    for slug in slugs:
        s = catalog.size(slug)
        gib = s.memory_mib / 1024
        typer.echo(f"{slug:<26} {s.vcpus:>3} vCPU {gib:>7.1f} GiB  ${s.price_hourly_usd:.5f}/h")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def mcp(ctx: typer.Context) -> None:
    """Serve an environment to language-model agents over MCP (`infragym mcp --help`)."""
    from infragym.interfaces.mcp_server import main

    main(ctx.args)


app.add_typer(
    stacks_app, name="stacks", help="List and destroy infragym stacks in a state backend."
)
app.add_typer(cluster_app, name="cluster", help="A local Kubernetes control plane (KWOK nodes).")

if __name__ == "__main__":
    app()
