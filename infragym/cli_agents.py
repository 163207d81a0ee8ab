"""``infragym train``, ``infragym tune hpa`` and the comparison table of ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from infragym.errors import ConfigError, InfraGymError

tune_app = typer.Typer(no_args_is_help=True)


def _fail(exc: InfraGymError) -> None:
    typer.secho(f"error: {exc}", fg="red", err=True)
    raise typer.Exit(2)


def train(
    env_id: Annotated[str, typer.Argument(help="Environment id, e.g. SimpleK8sWebApp-v1.")],
    algo: Annotated[
        str, typer.Option(help="ppo, a2c, maskable-ppo or recurrent-ppo (MultiDiscrete fits).")
    ] = "ppo",
    steps: Annotated[int, typer.Option(min=1, help="Environment steps to train for.")] = 300_000,
    envs: Annotated[int, typer.Option(min=1, help="Parallel training envs.")] = 4,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the model and the envs.")] = 0,
    name: Annotated[str, typer.Option(help="Run name (default <algo>-<version>-s<seed>).")] = "",
    out: Annotated[Path, typer.Option(help="Directory of run directories.")] = Path("runs"),
    action_mode: Annotated[str, typer.Option(help="delta or absolute.")] = "delta",
    cost_weight: Annotated[float, typer.Option(help="The v1 reward's cost weight.")] = 1.0,
    frame_stack: Annotated[int, typer.Option(min=1, help="Observations stacked.")] = 1,
    vec_env: Annotated[str, typer.Option(help="dummy (one process) or subproc.")] = "dummy",
    eval_every: Annotated[
        int, typer.Option(min=0, help="Steps between validation evaluations (0: at the end).")
    ] = 25_000,
    eval_episodes: Annotated[int, typer.Option(min=1, help="Validation episodes.")] = 12,
    torch_threads: Annotated[int, typer.Option(min=1, help="Torch CPU threads.")] = 1,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Train an agent on the train split, keeping the checkpoint best on validation."""
    from infragym.agents.training import TrainConfig
    from infragym.agents.training import train as run_training
    from infragym.evaluate import check_env_id

    try:
        config = TrainConfig(
            env_id=check_env_id(env_id),
            algo=algo,
            total_steps=steps,
            n_envs=envs,
            seed=seed,
            name=name,
            out_dir=str(out),
            action_mode=action_mode,
            cost_weight=cost_weight,
            frame_stack=frame_stack,
            vec_env=vec_env,
            eval_every=eval_every,
            eval_episodes=eval_episodes,
            torch_threads=torch_threads,
        ).check()
        summary = run_training(config, progress=progress, log=typer.echo)
    except InfraGymError as exc:
        _fail(exc)
        return
    typer.echo(
        f"best validation return {summary['best_val_return']:.1f} at step "
        f"{summary['best_step']} ({summary['wall_s']:.0f} s); run written to {config.run_dir}"
    )
    typer.echo(f"evaluate it: infragym evaluate {config.env_id} --agents {config.algo}:"
               f"{config.run_dir},hpa --split test")  # fmt: skip


@tune_app.command("hpa")
def tune_hpa(
    env_id: Annotated[str, typer.Argument(help="Environment id.")] = "SimpleK8sWebApp-v1",
    budget: Annotated[
        int, typer.Option(min=1, help="Environment steps for the whole search.")
    ] = 300_000,
    episodes: Annotated[int, typer.Option(min=1, help="Train episodes per trial.")] = 12,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the sampler and episodes.")] = 0,
    sampler: Annotated[str, typer.Option(help="tpe or random.")] = "tpe",
    out: Annotated[Path, typer.Option(help="Where to write the tuned config.")] = Path(
        "tuned-hpa.json"
    ),
) -> None:
    """Tune HPA + cluster-autoscaler settings on the train split (Optuna)."""
    from rich.progress import Progress

    from infragym.agents.tuning import save_tuned
    from infragym.agents.tuning import tune_hpa as run_tuning
    from infragym.evaluate import check_env_id

    try:
        env_id = check_env_id(env_id)
        if out.is_dir():
            raise ConfigError(f"--out {str(out)!r} is a directory: give a file name")
        with Progress(transient=True) as progress:
            task = progress.add_task("tuning", total=None)

            def on_trial(i: int, n: int, value: float, best: float) -> None:
                progress.update(
                    task, total=n, completed=i + 1,
                    description=f"trial {i + 1}/{n}: {value:.1f} (best {best:.1f})",
                )  # fmt: skip

            result = run_tuning(env_id, budget, episodes, seed, sampler, on_trial=on_trial)
        path = save_tuned(result, out)
    except InfraGymError as exc:
        _fail(exc)
        return
    t, d = result["train_score"], result["default_train_score"]
    typer.echo(
        f"{result['tuning']['trials']} trials, {result['tuning']['steps']} steps, "
        f"{result['tuning']['wall_s']:.0f} s; best on train: return {t['return']:.1f}, "
        f"cost {t['cost_hourly']:.3f} $/h, SLO {100 * t['slo_attainment']:.1f} % "
        f"(default hpa: {d['return']:.1f}, {d['cost_hourly']:.3f} $/h, "
        f"{100 * d['slo_attainment']:.1f} %)"
    )
    typer.echo(f"params: {result['params']}")
    typer.echo(f"written to {path}; evaluate it with --agents hpa:{path}")


def _ci(d: Any, scale: float, unit: str, digits: int) -> str:
    return (
        f"{d.value * scale:+.{digits}f}{unit}\n"
        f"[{d.low * scale:+.{digits}f}, {d.high * scale:+.{digits}f}]"
    )


def comparison_table(results: list, differences: dict, reference: str, title: str):
    """A rich table: means, and each agent's difference to ``reference`` with 95 % CIs."""
    from rich.table import Table

    table = Table(title=title, caption=f"Δ: difference to {reference}, 95 % paired-bootstrap CI")
    cols = ("agent", "return", "Δ return", "cost $/h", "Δ cost", "SLO", "Δ SLO (pp)",
            "errors", "Δ errors (pp)")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col == "agent" else "right")
    for r in results:
        d = differences[r.agent]
        ref = r.agent == reference
        table.add_row(
            r.agent,
            f"{r.mean('ret'):.1f}",
            "–" if ref else _ci(d["ret"], 1, "", 1),
            f"{r.mean('mean_cost_hourly'):.3f}",
            "–" if ref else _ci(d["mean_cost_hourly"], 100, " %", 1),
            f"{100 * r.mean('slo_attainment'):.1f} %",
            "–" if ref else _ci(d["slo_attainment"], 100, "", 1),
            f"{100 * r.mean('mean_error_ratio'):.2f} %",
            "–" if ref else _ci(d["mean_error_ratio"], 100, "", 2),
        )
    return table


def print_wide(renderable: Any, min_width: int = 120) -> None:
    """Print with at least ``min_width`` columns (rich assumes 80 when not on a terminal,
    which wraps every interval of the comparison table)."""
    from rich.console import Console

    console = Console()
    if console.width < min_width:
        console = Console(width=min_width)
    console.print(renderable)
