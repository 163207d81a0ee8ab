"""Progress of engine operations, streamed with rich from the Automation API's events.

An ``up`` on a real cloud takes minutes; the user should see which resources are being
created and which failed. :class:`EngineProgress` turns the engine's structured events
(``on_event``) into a spinner naming the operation in flight and one line per finished
resource step, warnings and errors. It is quiet when stderr is not a terminal (CI, logs,
tests), where it passes no ``on_event`` at all, so the engine is not asked for events.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

_SYMBOLS = {
    "create": ("+", "green"),
    "create-replacement": ("+", "green"),
    "update": ("~", "yellow"),
    "delete": ("-", "red"),
    "delete-replaced": ("-", "red"),
    "replace": ("+-", "magenta"),
    "refresh": ("~", "cyan"),
    "read": (">", "cyan"),
    "import": ("=", "cyan"),
}


def _short(urn: str) -> str:
    """``type name`` from a URN (``urn:pulumi:stack::project::type::name``)."""
    parts = urn.split("::")
    if len(parts) < 4:
        return urn
    return f"{parts[2].split('$')[-1]} {parts[3]}"


class EngineProgress:
    """Renders engine events of one operation at a time.

    Args:
        console: The rich console (default: one on stderr).
        enabled: Show progress; ``None`` means "when the console is a terminal".
    """

    def __init__(self, console: Any | None = None, enabled: bool | None = None) -> None:
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console
        self.enabled = console.is_terminal if enabled is None else enabled
        self._status: Any = None
        self._lock = threading.Lock()
        self._in_flight: dict[str, str] = {}
        self._title = ""

    @contextlib.contextmanager
    def operation(self, title: str) -> Iterator[Callable[[Any], None] | None]:
        """Show ``title`` with a spinner; yields the ``on_event`` callback (or None)."""
        if not self.enabled:
            yield None
            return
        self._title = title
        self._in_flight.clear()
        with self.console.status(title) as status:
            self._status = status
            try:
                yield self.on_event
            finally:
                self._status = None

    def on_event(self, event: Any) -> None:
        """Handle one ``EngineEvent`` (called from the SDK's event thread)."""
        # Progress must never break an update.
        with self._lock, contextlib.suppress(Exception):
            self._handle(event)

    def _handle(self, event: Any) -> None:
        from rich.markup import escape

        if event.resource_pre_event is not None:
            meta = event.resource_pre_event.metadata
            op = str(getattr(meta.op, "value", meta.op))
            if op != "same":
                self._in_flight[meta.urn] = op
        elif event.res_outputs_event is not None:
            meta = event.res_outputs_event.metadata
            op = str(getattr(meta.op, "value", meta.op))
            self._in_flight.pop(meta.urn, None)
            if op != "same":
                symbol, color = _SYMBOLS.get(op, ("*", "white"))
                self.console.print(f"  [{color}]{symbol}[/] {_short(meta.urn)} [dim]{op}d[/]")
        elif event.res_op_failed_event is not None:
            meta = event.res_op_failed_event.metadata
            self._in_flight.pop(meta.urn, None)
            self.console.print(f"  [red]✗[/] {_short(meta.urn)} failed")
        elif event.diagnostic_event is not None:
            diag = event.diagnostic_event
            if diag.severity in ("error", "warning") and not diag.ephemeral:
                color = "red" if diag.severity == "error" else "yellow"
                where = f"{_short(diag.urn)}: " if diag.urn else ""
                text = escape(f"{where}{diag.message.strip()}")
                self.console.print(f"  [{color}]{diag.severity}[/] {text}", highlight=False)
        elif event.summary_event is not None:
            changes = {k: v for k, v in (event.summary_event.resource_changes or {}).items() if v}
            text = ", ".join(f"{v} {k}" for k, v in changes.items()) or "no changes"
            self.console.print(f"  [dim]{self._title}: {text}[/]")
        if self._status is not None:
            doing = ", ".join(f"{op} {_short(u)}" for u, op in list(self._in_flight.items())[:3])
            self._status.update(f"{self._title}" + (f": {doing}" if doing else ""))
