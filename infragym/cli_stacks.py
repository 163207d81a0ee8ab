"""``infragym stacks``: find and remove the layer stacks left in a state backend.

Leaked cloud resources cost money, so whatever an env did not clean up (``keep=True``, a
crash, a Ctrl-C, a killed process) can be listed and destroyed from the command line:

- ``infragym stacks list [--backend URL] [--deployment D]`` shows every ``infragym``
  stack: deployment, layer, resource count, last update, a lock (and whether its holder
  is gone) and operations an interrupted update left pending;
- ``infragym stacks destroy D [--backend URL] [--yes] [--force]`` destroys the
  deployment's stacks downstream first and removes them. A lock whose holder was a
  process on this host that is gone is cleared (``pulumi cancel``); a live or remote
  holder is left alone unless ``--force``. Pending creates are reported, since the cloud
  resource they were creating may exist without being in the state.

The lead mounts :data:`stacks_app` as ``infragym stacks``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from infragym.errors import ConfigError, InfraGymError, StackLockedError, StateBackendError

log = logging.getLogger(__name__)

stacks_app = typer.Typer(
    help="List and destroy infragym layer stacks in a state backend.", no_args_is_help=True
)

BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="State backend URL: file://DIR (default file://~/.infragym/state), "
        "s3://BUCKET?region=..., spaces://BUCKET?region=nyc3.",
    ),
]


@dataclass
class StackInfo:
    """One stack found in a backend.

    Attributes:
        name: Stack name (``<deployment>.<layer>``).
        deployment: Its deployment.
        layer: Its layer.
        resources: Custom resources in its state (providers left out).
        last_update: When it was last updated (as the engine reports it).
        locks: Lock files on it.
        pending: ``(operation, urn)`` of operations an interrupted update left pending.
    """

    name: str
    deployment: str
    layer: str
    resources: int | None = None
    last_update: str = ""
    locks: list[Any] = field(default_factory=list)
    pending: list[tuple[str, str]] = field(default_factory=list)


def _engine(backend_url: str | None) -> Any:
    from infragym.backends.engine import Engine
    from infragym.backends.state import parse_state_url

    return Engine(parse_state_url(backend_url), new_passphrase=False)


def _backend_exists(engine: Any) -> bool:
    """Whether the backend's directory or bucket exists (a missing one has no stacks)."""
    from infragym.backends.state import prepare_backend

    try:
        prepare_backend(engine.backend, create=False)
    except StateBackendError as exc:
        if "does not exist" in str(exc):
            return False
        raise
    return True


def _noop() -> None:
    """Inline program for stacks opened only to destroy or inspect them."""


def find_stacks(engine: Any, deployment: str | None = None, detail: bool = True) -> list[StackInfo]:
    """The ``infragym`` stacks of a backend (of one deployment, if given).

    Args:
        engine: An :class:`~infragym.backends.engine.Engine` on the backend.
        deployment: Only this deployment's stacks.
        detail: Read each stack's state for resource counts and pending operations.
    """
    from pulumi import automation as auto

    from infragym.backends.engine import map_error
    from stacks.registry import split_stack_name

    if not _backend_exists(engine):
        return []
    try:
        summaries = engine.workspace().list_stacks()
    except auto.CommandError as exc:
        raise map_error(exc, "*", "stack ls", engine.backend) from None
    found: list[StackInfo] = []
    for s in summaries:
        try:
            dep, layer = split_stack_name(s.name)
        except ConfigError:
            continue
        if deployment is not None and dep != deployment:
            continue
        name = s.name.rsplit("/", 1)[-1]
        info = StackInfo(
            name=name,
            deployment=dep,
            layer=layer,
            resources=None,
            last_update=s.last_update.strftime("%Y-%m-%d %H:%M:%S") if s.last_update else "",
            locks=engine.locks(name),
        )
        if detail:
            _read_state(engine, info)
        found.append(info)
    return sorted(found, key=lambda i: (i.deployment, i.layer))


def _read_state(engine: Any, info: StackInfo) -> None:
    """Fill in resource count and pending operations from the stack's exported state."""
    from pulumi import automation as auto

    try:
        ws = engine.workspace()
        deployment = ws.export_stack(info.name).deployment or {}
    except auto.CommandError as exc:
        log.warning("cannot read the state of %s: %s", info.name, exc.__class__.__name__)
        return
    resources = deployment.get("resources") or []
    info.resources = sum(
        1 for r in resources if r.get("custom") and not r["type"].startswith("pulumi:providers:")
    )
    info.pending = [
        (str(p.get("type", "?")), str(p.get("resource", {}).get("urn", "?")))
        for p in deployment.get("pending_operations") or []
    ]


def destroy_order(layers: list[str]) -> list[str]:
    """Layer names in the order to destroy them.

    Registered layers go downstream first (reverse dependency order, optional upstream
    layers included; an upstream that is not among ``layers`` is ignored). Layers the
    registry does not know cannot be placed in the graph: they go first, last-to-first by
    name, since a layer that has outlived the registry is more likely to sit on top of
    the known ones than under them.
    """
    try:
        from stacks.registry import all_layers

        registry = all_layers()
    except (ImportError, InfraGymError) as exc:
        log.warning("the layer registry could not be loaded (%s): ordering by name", exc)
        registry = {}
    known = [n for n in layers if n in registry]
    unknown = sorted((n for n in layers if n not in registry), reverse=True)
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered or name in path:
            return
        layer = registry[name]
        for need in (*layer.upstream, *layer.optional_upstream):
            for other in known:
                if other == need or need in registry[other].provides:
                    visit(other, (*path, name))
        ordered.append(name)

    for name in sorted(known):
        visit(name, ())
    return unknown + list(reversed(ordered))


def destroy_stack(engine: Any, info: StackInfo, force: bool = False, console: Any = None) -> None:
    """Destroy one stack's resources and remove it, clearing a stale lock first.

    Raises:
        StackLockedError: A live (or remote) process holds the lock, and not ``force``.
        EngineError: The destroy failed (engine message kept).
    """
    from pulumi import automation as auto

    from infragym.backends.engine import map_error
    from infragym.backends.progress import EngineProgress

    stack, _ = engine.stack(info.name, _noop, create=False)
    locks = engine.locks(info.name)
    if locks:
        if force or all(lock.stale for lock in locks):
            stack.cancel()
            for lock in locks:
                log.warning("cleared the lock %s", lock.describe())
        else:
            held = "; ".join(lock.describe() for lock in locks)
            raise StackLockedError(
                f"stack {info.name!r} is locked by a running update: {held}. Wait for it, "
                "or pass --force if that process is gone"
            )
    for op, urn in info.pending:
        log.warning(
            "%s was interrupted while %s: check in the cloud console that it does not exist "
            "(it is not in the state, so destroy cannot remove it)",
            urn,
            op,
        )
    progress = EngineProgress(console=console)
    try:
        with progress.operation(f"destroy {info.name}") as on_event:
            stack.destroy(on_event=on_event)
        stack.workspace.remove_stack(info.name)
    except auto.CommandError as exc:
        raise map_error(exc, info.name, "destroy", engine.backend) from None


def _fail(exc: InfraGymError) -> None:
    typer.secho(f"error: {exc}", fg="red", err=True)
    raise typer.Exit(2)


@stacks_app.command("list")
def list_cmd(
    backend: BackendOpt = None,
    deployment: Annotated[
        str | None, typer.Option("--deployment", help="Only this deployment's stacks.")
    ] = None,
) -> None:
    """List the infragym stacks in a state backend, with resource counts and locks."""
    from rich.console import Console
    from rich.table import Table

    engine = None
    try:
        engine = _engine(backend)
        stacks = find_stacks(engine, deployment)
    except InfraGymError as exc:
        _fail(exc)
        return
    finally:
        if engine is not None:
            engine.close()
    console = Console()
    where = engine.backend.display
    if not stacks:
        console.print(f"no infragym stacks in {where}")
        return
    console.print(f"infragym stacks in {where}:")
    table = Table()
    table.add_column("stack", no_wrap=True)
    table.add_column("resources", justify="right")
    table.add_column("last update")
    table.add_column("state")
    for s in stacks:
        notes = []
        for lock in s.locks:
            gone = " (gone)" if lock.stale else ""
            notes.append(f"locked by pid {lock.pid}@{lock.hostname}{gone}")
        if s.pending:
            notes.append(f"{len(s.pending)} interrupted operation(s)")
        table.add_row(
            s.name,
            "?" if s.resources is None else str(s.resources),
            s.last_update,
            ", ".join(notes) or "ok",
        )
    console.print(table)


@stacks_app.command("destroy")
def destroy_cmd(
    deployment: Annotated[str, typer.Argument(help="The deployment whose stacks to destroy.")],
    backend: BackendOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Clear locks even when their holder may be alive.")
    ] = False,
) -> None:
    """Destroy a deployment's stacks (downstream first) and remove them."""
    from rich.console import Console

    console = Console(stderr=True)
    engine = None
    try:
        engine = _engine(backend)
        stacks = {s.layer: s for s in find_stacks(engine, deployment)}
        if not stacks:
            typer.echo(f"no stacks of deployment {deployment!r} in {engine.backend.display}")
            return
        order = destroy_order(list(stacks))
        summary = ", ".join(
            f"{stacks[n].name} ({'?' if stacks[n].resources is None else stacks[n].resources} "
            "resources)"
            for n in order
        )
        if not yes and not typer.confirm(f"Destroy {summary}?"):
            raise typer.Exit(1)
        for name in order:
            destroy_stack(engine, stacks[name], force=force, console=console)
            typer.echo(f"destroyed and removed {stacks[name].name}")
    except InfraGymError as exc:
        _fail(exc)
    finally:
        if engine is not None:
            engine.close()
