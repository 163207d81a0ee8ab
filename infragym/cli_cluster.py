"""``infragym cluster``: a local real Kubernetes control plane with simulated nodes.

- ``infragym cluster up [--dir DIR] [--fresh]`` starts etcd, the API server, the controller
  manager, the scheduler and KWOK on 127.0.0.1 (binaries from
  ``scripts/install-kubernetes.sh``) and prints the kubeconfig path;
- ``infragym cluster status`` shows each component, the API server and the nodes;
- ``infragym cluster down [--purge]`` stops the processes by PID (``--purge`` also
  removes the directory: CA, data and kubeconfig).

:data:`cluster_app` is mounted as ``infragym cluster``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from infragym.errors import InfraGymError

if TYPE_CHECKING:
    from infragym.cluster import ClusterStatus, LocalCluster

cluster_app = typer.Typer(
    help="A local Kubernetes control plane on 127.0.0.1 whose nodes KWOK simulates.",
    no_args_is_help=True,
)

DirOpt = Annotated[
    Path | None,
    typer.Option("--dir", help="The cluster's directory (default ~/.infragym/cluster)."),
]


def _cluster(directory: Path | None) -> LocalCluster:
    from infragym.cluster import LocalCluster

    return LocalCluster(directory)


def _fail(exc: InfraGymError) -> None:
    typer.secho(f"error: {exc}", fg="red", err=True)
    raise typer.Exit(2)


def _show(status: ClusterStatus) -> None:
    for name, what in status.components.items():
        typer.echo(f"{name:<24} {what}")
    typer.echo(f"{'api server':<24} {status.server or '-'}")
    typer.echo(f"{'kubeconfig':<24} {status.kubeconfig or '-'}")
    if status.nodes is not None:
        typer.echo(f"{'nodes':<24} {status.nodes_ready} Ready of {status.nodes}")


@cluster_app.command()
def up(
    directory: DirOpt = None,
    fresh: Annotated[
        bool, typer.Option(help="Start from an empty directory (new CA, ports and etcd).")
    ] = False,
    timeout: Annotated[float, typer.Option(min=5, help="Seconds to wait for start-up.")] = 90.0,
) -> None:
    """Start the control plane (or find it running); print the kubeconfig path."""
    try:
        status = _cluster(directory).up(timeout=timeout, fresh=fresh)
    except InfraGymError as exc:
        _fail(exc)
    _show(status)
    typer.echo(f"\nexport KUBECONFIG={status.kubeconfig}")


@cluster_app.command()
def status(directory: DirOpt = None) -> None:
    """Show each component, the API server and the nodes (exit 1 when not running)."""
    st = _cluster(directory).status()
    _show(st)
    typer.echo(f"{'state':<24} {'running' if st.running else 'not running'}")
    if not st.running:
        raise typer.Exit(1)


@cluster_app.command()
def down(
    directory: DirOpt = None,
    purge: Annotated[
        bool, typer.Option(help="Also remove the directory (CA, etcd data, kubeconfig).")
    ] = False,
) -> None:
    """Stop the control plane's processes (by the PIDs it recorded)."""
    cluster = _cluster(directory)
    stopped = cluster.down()
    typer.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    if purge and cluster.dir.exists():
        shutil.rmtree(cluster.dir)
        typer.echo(f"removed {cluster.dir}")
