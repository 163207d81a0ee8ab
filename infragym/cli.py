"""The ``infragym`` command: evaluate agents, list layers and sizes, manage stacks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from infragym import cli_agents
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
        str,
        typer.Option(
            help="Comma-separated agents: hpa, hpa:TUNED.json, ppo:RUN_DIR, mpc, static, "
            "random, ... (the first is the reference unless --reference says otherwise)."
        ),
    ] = "hpa,static,random",
    episodes: Annotated[int, typer.Option(min=1, help="Episodes per agent.")] = 5,
    split: Annotated[
        str | None, typer.Option(help="Scenario split (v1): train, validation or test.")
    ] = None,
    scenarios: Annotated[
        str | None,
        typer.Option(help="Comma-separated scenarios, run in turn (default: all of the env's)."),
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="Agent the differences are to (default: the first).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Also write the results and CIs as JSON here.")
    ] = None,
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
    """Run agents on the same episodes and compare them with paired 95 % intervals."""
    import gymnasium as gym
    from rich.progress import Progress

    import infragym  # noqa: F401  (registers the envs)
    from infragym import evaluate as ev
    from infragym.agents import specs
    from infragym.cli_agents import comparison_table, print_wide

    try:
        # Everything the user gave is checked before the run, which may take long.
        env_id = ev.check_env_id(env_id)
        names = ev.agent_names(agents)
        if reference is not None and reference not in names:
            raise ConfigError(f"--reference {reference!r} is not among the agents {names}")
        plot = ev.plot_path(plot)
        if output is not None and output.is_dir():
            raise ConfigError(f"--output {str(output)!r} is a directory: give a file name")
        kwargs = {"backend": backend, "action_mode": action_mode}
        if split is not None:
            if not env_id.endswith("-v1"):
                raise ConfigError(f"--split needs an env with splits (v1); {env_id} has none")
            kwargs["split"] = ev_split = split
            from infragym.envs.scenarios import check_split

            check_split(ev_split)
        make_env = lambda: gym.make(env_id, **kwargs)  # noqa: E731
        probe = make_env()
        step_seconds = probe.unwrapped.step_seconds
        chosen_scenarios = ev.scenario_list(scenarios, probe.unwrapped.scenario_names)
        probe.close()
        chosen = [specs.make(name) for name in names]
        with Progress(transient=True) as progress:
            task = progress.add_task("evaluating", total=len(chosen) * episodes)

            def advance(name: str, i: int) -> None:
                progress.update(task, advance=1, description=f"{name} episode {i + 1}")

            results = ev.evaluate(
                make_env, chosen, episodes, seed, on_episode=advance, scenarios=chosen_scenarios
            )
        ref = reference or names[0]
        differences = ev.compare(results, ref)
    except InfraGymError as exc:
        _fail(exc)
        return
    title = (
        f"{env_id}{f' ({split} split)' if split else ''}: {episodes} episode(s) per agent, "
        f"seeds {seed}..{seed + episodes - 1}, scenarios {', '.join(chosen_scenarios)} in turn"
    )
    print_wide(comparison_table(results, differences, ref, title))
    for r in results:
        typer.echo(f"{r.agent}: {r.wall_s:.1f} s")
    if output is not None:
        import json

        meta = {"env_id": env_id, "split": split, "episodes": episodes, "seed": seed,
                "scenarios": chosen_scenarios, "action_mode": action_mode}  # fmt: skip
        output.write_text(json.dumps(ev.to_json(results, differences, ref, meta), indent=1))
        typer.echo(f"results written to {output}")
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
app.command()(cli_agents.train)
app.add_typer(cli_agents.tune_app, name="tune", help="Tune baseline agents (Optuna).")

if __name__ == "__main__":
    app()
