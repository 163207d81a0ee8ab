"""The pulumi backend: the layers as real stacks, driven through the Automation API.

Each layer is one stack, ``<deployment>.<layer>`` in project ``infragym``, whose inline
program is the registry's :attr:`~stacks.registry.Layer.program` (DESIGN, decisions 1
and 5). The backend:

- validates every layer's settings, and the credentials its resources need, before any
  engine call;
- passes each layer the plain outputs of its upstream stacks (secret ones stay
  ``Output.secret``), as ``StackReference`` does on the CLI path;
- applies knob values with an SDK-side stack transformation
  (:mod:`infragym.backends.transform`; DESIGN, decision 2);
- keeps, per layer, a digest of its *desired state* (settings, knob values, upstream
  outputs) as last applied, and runs ``up`` only on layers whose digest changed, in
  dependency order. A layer whose upstream outputs changed is thereby updated too, and
  a no-op step costs no engine call;
- refreshes a stack it re-attaches to (one that existed before this backend opened it);
- streams progress with rich (:mod:`infragym.backends.progress`), quiet off a terminal;
- maps engine failures onto :mod:`infragym.errors`, never swallowing them and never
  showing a secret;
- on Ctrl-C during an operation, lets the engine finish its in-flight steps and release
  its lock (see :mod:`infragym.backends.engine`), then re-raises ``KeyboardInterrupt``;
- on :meth:`close`, destroys the stacks in reverse dependency order and removes them,
  unless ``keep=True``.

Actuation (:data:`~infragym.backends.base.Actuation`) is ``immediate`` by default:
:meth:`PulumiBackend.apply` runs the updates before it returns. With ``async`` (real
infrastructure's way, DESIGN "The flow of one step"), ``apply`` sets desired state and
starts ``up`` of each changed layer's stack in a background thread, then returns at
once:

- each layer runs one update at a time; a change to a layer whose ``up`` runs waits in
  :attr:`PulumiBackend.queue` (:class:`~infragym.updates.LayerQueue`), coalesced,
  and starts when that ``up`` completes; an ``up`` that has started runs to completion;
- each ``up`` runs the layer's program with the knob values of *its* update (the values
  of the layer's last completed update, overlaid with the update's changes), never with
  values requested later;
- completions are handled in the calling thread, while :meth:`~PulumiBackend.advance`
  waits (at once) or at the next call: the queue records the update as applied, the
  layer's queued update starts, and layers downstream of one whose outputs changed are
  updated too;
- a failed ``up`` is raised (mapped as in ``immediate`` mode) from the next
  :meth:`~PulumiBackend.advance`, :meth:`~PulumiBackend.apply`,
  :meth:`~PulumiBackend.observe` or :meth:`~PulumiBackend.wait`; the failed update is no
  longer in flight, and the next ``apply`` retries the layer;
- :meth:`~PulumiBackend.close` (and :meth:`~PulumiBackend.reset`) wait for the updates in
  flight, up to ``close_timeout`` seconds, then stop them as Ctrl-C would, then kill them
  and clear their locks with ``pulumi cancel``: nothing is left locked.

Both modes keep :attr:`PulumiBackend.queue`, so that they report the same state
(``info()["updates"]``; times are seconds since the last :meth:`~PulumiBackend.reset`).

Observations come from a metrics source with ``instant(names) -> (values, missing)``,
normally :class:`infragym.prometheus.PrometheusSource`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue
from typing import Any

from infragym.backends.base import (
    ACTUATIONS,
    ApplyResult,
    Backend,
    Change,
    LayerSpec,
    ResourceRecord,
)
from infragym.backends.state import parse_state_url, prepare_backend
from infragym.errors import (
    ActionError,
    ConfigError,
    CredentialsError,
    EngineError,
    InfraGymError,
    MetricsError,
)
from infragym.knobs import Knob, get_path
from infragym.updates import LayerQueue, Update

log = logging.getLogger(__name__)

_NO_DEPLOYMENT = (
    "the pulumi backend has no deployment: call reset() first (the last reset failed, "
    "or there was none)"
)
"""What apply (and observe, after a failed reset) say with no deployment to act on."""
_DEPLOYMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_SECRET_SIG = "4dabf18193072939515e22adb298388d"

CREDENTIALS: dict[str, tuple[str, ...]] = {
    # Type-token prefix → environment variables, any one of which the provider accepts.
    "digitalocean:": ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"),
}
"""Credentials that layers declaring resources of a provider need, checked up front."""


_KnobKey = tuple[str, str, str]
"""A knob override's key: type token, logical name, property path."""


@dataclass
class _LayerState:
    """What the backend knows of one layer's stack.

    Attributes:
        applied: Digest of the desired state of the last successful ``up`` (None: unknown,
            e.g. after a failure, so the next one runs).
        knobs: Knob overrides of the layer's latest started update: those of its last
            completed update overlaid with the changes of the one in flight (``async``), or
            the desired ones (``immediate``).
        applied_knobs: Knob overrides as of the last successful ``up``.
        failed: The last ``up`` failed: the next ``apply`` retries the layer.
        held: Changes that start with the layer's next update (those of a failed or
            interrupted update, and those that were queued behind it).
    """

    name: str
    layer: Any
    settings: Any
    stack: Any = None
    applied: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    knobs: dict[_KnobKey, tuple[Knob, Any]] = field(default_factory=dict)
    applied_knobs: dict[_KnobKey, tuple[Knob, Any]] = field(default_factory=dict)
    records: list[ResourceRecord] | None = None
    declared: frozenset[tuple[str, str]] | None = None
    failed: bool = False
    held: dict[str, Change] = field(default_factory=dict)


@dataclass
class _Run:
    """One background ``up`` of one layer (``async`` actuation).

    The thread only runs the engine and records its result or exception; everything else
    happens in the backend's calling thread, when the run is reported done.
    """

    update: Update
    key: str
    knobs: dict[_KnobKey, tuple[Knob, Any]]
    stack: Any
    program: Callable[[], None]
    program_errors: list[BaseException]
    on_event: Any
    thread: threading.Thread | None = None
    result: Any = None
    error: BaseException | None = None


class PulumiBackend(Backend):
    """Runs layers as Pulumi stacks through the Automation API.

    Args:
        deployment: Names the stacks (``<deployment>.<layer>``) and the cloud resources.
        state_url: State backend: ``file://DIR`` (default ``file://~/.infragym/state``),
            ``s3://BUCKET?region=...`` or ``spaces://BUCKET?region=nyc3``.
        keep: Leave the stacks deployed on :meth:`close`.
        step_wait: Sleep through :meth:`advance` (wall-clock time for the real
            infrastructure to react); ``False`` returns at once (tests, benchmarks).
        metrics: A metrics source with ``instant(names) -> (values, missing)``.
        prometheus_url: Build a :class:`~infragym.prometheus.PrometheusSource` on this URL
            when ``metrics`` is not given.
        window_seconds: The step window of that source.
        passphrase_file: Generated passphrase file used when ``PULUMI_CONFIG_PASSPHRASE``
            is unset (default ``~/.infragym/passphrase``).
        env: Extra environment for the engine (non-secret).
        progress: Show progress; ``None`` means "when stderr is a terminal".
        refresh_on_attach: Refresh a stack that existed before this backend opened it.
        cli: Path of the ``pulumi`` binary (default: ``$PULUMI_CLI``, PATH, or the cached
            offline build).
        actuation: ``immediate`` (default): :meth:`apply` runs the updates before it
            returns. ``async``: it starts them in the background, one per layer at a time
            (see the module doc and :data:`~infragym.backends.base.Actuation`).
        close_timeout: Seconds :meth:`close` and :meth:`reset` wait for updates in flight
            before stopping them (``SIGINT``: the engine finishes its in-flight resource
            operations); after as long again, they are killed and their locks cleared.

    Attributes:
        queue: Desired, in-flight and applied knob values per layer (both actuations).

    Raises:
        ConfigError: A bad deployment name, state URL, actuation or timeout (no engine is
            contacted here).
    """

    _reset_failed = False
    """Whether the last :meth:`reset` failed once it had started deploying."""

    def __init__(
        self,
        deployment: str = "dev",
        state_url: str | None = None,
        keep: bool = False,
        step_wait: bool = True,
        metrics: Any | None = None,
        prometheus_url: str | None = None,
        window_seconds: float = 30.0,
        passphrase_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        progress: bool | None = None,
        refresh_on_attach: bool = True,
        cli: str | None = None,
        actuation: str = "immediate",
        close_timeout: float = 600.0,
    ) -> None:
        if not _DEPLOYMENT.match(deployment or ""):
            raise ConfigError(
                f"invalid deployment name {deployment!r}: use letters, digits, '-' and '_' "
                "(no '.', which separates it from the layer in stack names)"
            )
        if not isinstance(actuation, str) or actuation not in ACTUATIONS:
            from infragym.catalog import unknown_choice

            raise ConfigError(unknown_choice("actuation", actuation, ACTUATIONS))
        if (
            isinstance(close_timeout, bool)
            or not isinstance(close_timeout, int | float)
            or not (math.isfinite(close_timeout) and close_timeout > 0)
        ):
            raise ConfigError(
                f"close_timeout must be a number of seconds > 0, got {close_timeout!r}"
            )
        self.deployment = deployment
        self.state = parse_state_url(state_url)
        self.keep = keep
        self.step_wait = step_wait
        self._metrics = metrics
        self._prometheus_url = prometheus_url
        self._cluster_access: Any = None
        self._window_seconds = window_seconds
        self._passphrase_file = passphrase_file
        self._env = dict(env or {})
        self._progress_enabled = progress
        self._progress: Any = None
        self.refresh_on_attach = refresh_on_attach
        self._cli = cli
        self._engine: Any = None
        self._layers: dict[str, _LayerState] = {}
        self._order: list[str] = []
        self.engine_calls = 0
        self.seed: int | None = None
        self.actuation = actuation
        self.close_timeout = float(close_timeout)
        self.queue = LayerQueue()
        self._t0 = time.monotonic()
        self._runs: dict[str, _Run] = {}
        self._done: SimpleQueue[str] = SimpleQueue()
        self._failures: list[InfraGymError] = []
        self._halting = False

    # ------------------------------------------------------------------ contract

    def reset(self, layers: Sequence[LayerSpec], seed: int | None = None) -> None:
        """Deploy or reconfigure ``layers``: knob values go back to the settings' own.

        Updates still in flight (``async``) are waited for first (see ``close_timeout``);
        changes queued behind them, and failures not yet raised, are dropped. The
        :attr:`queue` starts afresh.

        Raises:
            ConfigError: An unknown layer, invalid settings, or a missing upstream layer
                (before any engine call).
            CredentialsError: A layer needs a credential that is not set (likewise).
            EngineError: The engine failed (its message kept).
        """
        from stacks.registry import dependency_order, get_layer

        specs = {s.name: s for s in layers}
        if len(specs) != len(layers):
            raise ConfigError(f"duplicate layers in {[s.name for s in layers]}")
        parsed = {}
        for name, spec in specs.items():
            layer = get_layer(name)
            parsed[name] = (layer, layer.parse_settings(spec.settings))
        order = dependency_order(specs)
        check_credentials(parsed[n][0] for n in order)
        self._drain("reset")
        self.seed = seed
        self.queue = LayerQueue()
        self._t0 = time.monotonic()

        for name in order:
            layer, settings = parsed[name]
            ls = self._layers.get(name)
            if ls is None:
                ls = self._layers[name] = _LayerState(name, layer, settings)
            if ls.settings != settings:
                ls.declared = None  # other settings may declare other resources
            ls.settings = settings
            ls.knobs.clear()
            ls.failed = False
            ls.held = {}
        self._order = order
        self._reset_failed = True  # until every layer is up
        try:
            engine = self._engine_ready()
            for name in order:
                ls = self._layers[name]
                self._attach(ls, engine)
                key = self._desired_key(ls)
                if key != ls.applied:
                    self._up(ls, key)
        except BaseException:
            self._order = []  # no deployment to step on: apply and observe say so
            raise
        self._reset_failed = False

    def apply(self, changes: Sequence[Change]) -> ApplyResult:
        """Set knob values as desired state; ``up`` only the layers whose desired state changed.

        ``immediate``: the updates run before this returns. ``async``: the updates of
        layers without one in flight start in the background, the changes to the others
        wait in :attr:`queue`; ``layers_queued`` names the latter. Either way a layer whose
        last update failed is retried.

        Raises:
            ActionError: A value outside its knob's domain.
            ConfigError: A knob on a layer that is not deployed, or on a resource the
                layer does not declare (before any engine call).
            EngineError: The engine failed (its message kept); with ``async``, a background
                update that failed since the last call (this call then does nothing).
        """
        t0 = time.monotonic()
        calls0 = self.engine_calls
        if not self._order:
            raise ConfigError(_NO_DEPLOYMENT)
        self._raise_failures()
        for change in changes:
            self._check_change(change)
        if self.actuation == "async":
            updated, queued = self._apply_async(changes)
        else:
            updated, queued = self._apply_now(changes), ()
        return ApplyResult(
            layers_updated=updated,
            engine_calls=self.engine_calls - calls0,
            seconds=time.monotonic() - t0,
            layers_queued=queued,
        )

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of wall-clock time pass (unless ``step_wait=False``).

        With ``async``, updates that complete meanwhile are handled at once (their
        layers' queued updates start); without ``step_wait``, those already done are.

        Raises:
            ConfigError: ``seconds`` is negative or NaN.
            EngineError: A background update failed (raised as soon as it is seen).
        """
        if seconds < 0 or math.isnan(seconds):
            raise ConfigError(f"cannot advance by {seconds} seconds")
        wait = seconds if self.step_wait else 0.0
        if self.actuation != "async":
            if wait > 0:
                time.sleep(wait)
            return
        self._raise_failures()
        deadline = time.monotonic() + wait
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self._pump(remaining):
                    self._raise_failures()
        except KeyboardInterrupt:
            self._interrupt_runs()
            raise
        self._raise_failures()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no update is in flight (queued ones start and complete too).

        Args:
            timeout: At most this many seconds (None: as long as it takes).

        Returns:
            Whether no update is in flight (False: the timeout passed first).

        Raises:
            EngineError: A background update failed (raised as soon as it is seen).
        """
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        self._raise_failures()
        try:
            while self._runs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self._pump(min(remaining, 60.0)):
                    self._raise_failures()
        except KeyboardInterrupt:
            self._interrupt_runs()
            raise
        return not self._runs

    def observe(self, metric_names: Sequence[str]) -> dict[str, float]:
        """The named metrics: from Prometheus, and ``cost_hourly`` from the resource graph.

        Cost is priced from the deployed resources exactly as the sim prices its graph
        (:mod:`infragym.twin.cost`), so both backends report the same figure.

        Raises:
            MetricsError: No metrics source is configured, or it failed.
            EngineError: A background update failed since the last call.
        """
        from infragym.twin.cost import hourly_cost

        if self._reset_failed:
            raise ConfigError(_NO_DEPLOYMENT)
        self._raise_failures()
        names = list(metric_names)
        measured = [n for n in names if n != "cost_hourly"]
        values: dict[str, float] = {}
        if measured:
            source = self._metrics_source()
            measures = getattr(source, "measures", None)  # a source without it answers all
            own = [n for n in measured if n in _BOOTING and measures and not measures(n)]
            asked = [n for n in measured if n not in own]
            if own and "nodes_ready" not in asked:
                asked.append("nodes_ready")
            values, _missing = source.instant(asked)  # never empty: nodes_ready for own
            if own:
                values.update(self._booting(values["nodes_ready"]))
        if "cost_hourly" in names:
            values["cost_hourly"] = hourly_cost(self.resources())
        return {name: float(values[name]) for name in names}

    def _booting(self, nodes_ready: float) -> dict[str, float]:
        """``nodes_booting`` and ``next_node_ready_s`` where the metrics source has no
        view of them (DigitalOcean: a droplet is invisible to Kubernetes until it registers).

        The nodes asked for are the DOKS node pools' counts as deployed, or as the pool
        updates in flight set them (a size change brings up a new pool beside the old
        one); those not Ready (``nodes_ready``) are booting. The next
        one is expected :attr:`TwinParams.node_boot_s` (DigitalOcean's measured boot time)
        after the earliest of those updates started; 0 when none is in flight (the update
        has returned, so its nodes are registering).
        """
        from infragym.twin.cost import pool_node_count
        from infragym.twin.model import TwinParams

        counts = {}
        for record in self.resources():
            count = pool_node_count(record)
            if count is not None:
                counts[(record.type, record.name)] = count
        started, replaced = [], set()
        for update in self.queue.in_flight.values():
            for knob, value in update.changes:
                key = (knob.type, knob.resource)
                if key not in counts:
                    continue
                if knob.path.endswith("nodeCount"):
                    counts[key] = int(value)
                elif knob.path.endswith("size"):
                    replaced.add(key)  # a new pool boots beside the old, Ready one
                else:
                    continue
                started.append(update.started_at)
        asked = sum(counts.values()) + sum(counts[key] for key in replaced)
        booting = max(asked - nodes_ready, 0.0)
        if not booting:
            return {"nodes_booting": 0.0, "next_node_ready_s": 0.0}
        boot, now = TwinParams().node_boot_s, self._now()
        left = min((max(t + boot - now, 0.0) for t in started), default=0.0)
        return {"nodes_booting": booting, "next_node_ready_s": left}

    def resources(self) -> list[ResourceRecord]:
        """The custom resources of every deployed layer, from the stacks' exported state.

        With ``async``, a layer whose update is in flight shows its state as of the last
        checkpoint the engine wrote.
        """
        self._pump_done()
        out: list[ResourceRecord] = []
        for name in self._order:
            ls = self._layers[name]
            if ls.records is None:
                ls.records = self._export_records(ls)
                ls.declared = frozenset((r.type, r.name) for r in ls.records)
            out.extend(ls.records)
        return out

    def close(self) -> None:
        """Destroy and remove the stacks in reverse dependency order (unless ``keep``).

        Updates in flight are waited for first, up to ``close_timeout`` seconds; then they
        are stopped as Ctrl-C would, and after as long again killed, with their locks
        cleared (``pulumi cancel``). Queued changes are dropped, and failures of
        background updates not yet raised are logged.

        Raises:
            EngineError: A destroy failed; the others were still attempted, and the
                message names the stacks left behind.
        """
        if self._engine is None:
            return
        try:
            self._drain("close")
            if self.keep:
                names = [ls.stack.name for ls in self._layers.values() if ls.stack is not None]
                if names:
                    log.info(
                        "kept stacks %s in %s; remove them with `infragym stacks destroy %s "
                        "--backend %s`",
                        ", ".join(names),
                        self.state.display,
                        self.deployment,
                        self.state.display,
                    )
                return
            failures: list[str] = []
            for name in reversed(self._destroy_order()):
                ls = self._layers[name]
                if ls.stack is None:
                    continue
                try:
                    self._destroy(ls)
                except InfraGymError as exc:
                    failures.append(f"{ls.stack.name}: {exc}")
            if failures:
                raise EngineError(
                    "could not destroy every stack; run `infragym stacks destroy "
                    f"{self.deployment} --backend {self.state.display}` to retry:\n"
                    + "\n".join(failures)
                )
        finally:
            self._engine.close()
            self._engine = None
            self._layers.clear()
            self._order = []
            self.queue = LayerQueue()
            if self._cluster_access is not None:
                self._cluster_access.close()  # removes the credential files
                self._cluster_access, self._metrics = None, None

    def info(self) -> dict[str, Any]:
        """Engine calls so far, the deployment, the state backend and the updates.

        ``updates`` is :meth:`LayerQueue.state() <infragym.updates.LayerQueue.state>`:
        per layer with an update in flight, its changes, when it started (seconds since
        the last :meth:`reset`) and what waits for it.
        """
        self._pump_done()
        return {
            "engine_calls": self.engine_calls,
            "deployment": self.deployment,
            "state_backend": self.state.display,
            "actuation": self.actuation,
            "updates": self.queue.state(),
        }

    # ------------------------------------------------------------------ updates

    def _now(self) -> float:
        """Seconds since the last :meth:`reset` (the queue's clock)."""
        return time.monotonic() - self._t0

    def _same_as_applied(self, ls: _LayerState, change: Change) -> bool:
        """Whether ``change`` leaves the (idle) layer's knob where it is."""
        k = change.knob
        key = (k.type, k.resource, k.path)
        if key in ls.knobs:
            return ls.knobs[key][1] == change.value
        # The settings already give this value: an override would change the digest but
        # not the resource, and cost a no-op ``up``.
        return _deployed_equals(ls.records, k, change.value)

    def _requests(self, changes: Sequence[Change]) -> list[Change]:
        """The changes to put to the queue: held ones of idle layers, then the new ones.

        A change that leaves an idle layer's knob where it is starts no update: it is
        recorded as requested and applied at once.
        """
        requests: list[Change] = []
        for name in self._order:
            ls = self._layers[name]
            if ls.held and name not in self.queue.in_flight:
                requests.extend(ls.held.values())
                ls.held = {}
        for change in changes:
            k = change.knob
            ls = self._layers[k.layer]
            idle = k.layer not in self.queue.in_flight and not ls.failed
            if idle and self._same_as_applied(ls, change):
                self.queue.deployed({k.name: change.value})
                continue
            requests.append(change)
        return requests

    def _apply_now(self, changes: Sequence[Change]) -> tuple[str, ...]:
        """``immediate``: bring the layers to the desired state; the queue records it."""
        before = {name: dict(self._layers[name].knobs) for name in self._order}
        requests = self._requests(changes)
        for k, value in requests:
            self._layers[k.layer].knobs[(k.type, k.resource, k.path)] = (k, value)
        now = self._now()
        started = self.queue.request(requests, now)
        updated: list[str] = []
        failure: BaseException | None = None
        try:
            for name in self._order:
                ls = self._layers[name]
                key = self._desired_key(ls)
                if key != ls.applied:
                    self._up(ls, key)
                    updated.append(name)
                ls.failed = False
        except BaseException as exc:
            failure = exc
            if isinstance(exc, ConfigError):
                # A knob the program rejects would fail every later update: drop this
                # apply's values. (After an engine failure they stay, so that a later
                # apply retries.)
                for name, knobs in before.items():
                    self._layers[name].knobs = knobs
            raise
        finally:
            for update in started:
                ls = self._layers[update.layer]
                if ls.applied is not None and ls.applied == self._desired_key(ls):
                    self.queue.complete(update.layer, now)
                else:
                    self._fail_update(ls, update, failure)
        return tuple(updated)

    def _apply_async(self, changes: Sequence[Change]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``async``: start the updates of idle layers, queue the others' changes."""
        now = self._now()
        updates = self.queue.request(self._requests(changes), now)
        for name in self._order:
            # A failed layer with nothing held is retried as it is.
            if self._layers[name].failed and name not in self.queue.in_flight:
                update = Update(name, (), now)
                self.queue.in_flight[name] = update
                updates.append(update)
        updated = [u.layer for u in updates if self._launch(u)]
        updated.extend(self._launch_stale(now))
        layers = dict.fromkeys(c.knob.layer for c in changes)
        queued = tuple(name for name in layers if name in self.queue.queued)
        return tuple(updated), queued

    def _launch(self, update: Update) -> bool:
        """Start the background ``up`` of ``update`` (in flight in the queue).

        Returns:
            Whether an ``up`` started (an update that changes nothing completes at once).
        """
        ls = self._layers[update.layer]
        for k, value in update.changes:
            ls.knobs[(k.type, k.resource, k.path)] = (k, value)
        ls.failed = False
        key = self._desired_key(ls)
        if key == ls.applied:
            ls.applied_knobs = dict(ls.knobs)
            nxt = self.queue.complete(update.layer, self._now())
            return self._launch(nxt) if nxt is not None else False
        program, errors = self._program(ls)
        on_event = self._progress.on_event if self._progress.enabled else None
        run = _Run(update, key, dict(ls.knobs), ls.stack, program, errors, on_event)
        run.thread = threading.Thread(
            target=self._work, args=(run,), name=f"infragym-up-{ls.stack.name}"
        )
        self._runs[update.layer] = run
        self.engine_calls += 1
        run.thread.start()
        return True

    def _launch_stale(self, now: float) -> list[str]:
        """Start an update of each idle layer whose upstream outputs changed meanwhile."""
        started: list[str] = []
        if self._halting:
            return started
        for name in self._order:
            ls = self._layers[name]
            if name in self.queue.in_flight or ls.failed or ls.stack is None:
                continue
            if self._desired_key(ls) != ls.applied:
                update = Update(name, (), now)
                self.queue.in_flight[name] = update
                if self._launch(update):
                    started.append(name)
        return started

    def _work(self, run: _Run) -> None:
        """The body of a background ``up``'s thread: run it, record how it ended."""
        try:
            run.result = run.stack.up(program=run.program, on_event=run.on_event, color="never")
        except BaseException as exc:  # handed to the calling thread, which maps or raises it
            run.error = exc
        finally:
            self._done.put(run.update.layer)

    def _pump(self, timeout: float) -> bool:
        """Handle one finished background ``up``, waiting up to ``timeout`` seconds for it.

        Returns:
            Whether one was handled.
        """
        try:
            layer = self._done.get(timeout=timeout) if timeout > 0 else self._done.get_nowait()
        except Empty:
            return False
        self._complete(layer)
        return True

    def _pump_done(self) -> None:
        """Handle the background ``up``\\ s that have finished (no waiting)."""
        for _ in range(len(self._runs) * 4 + 1):
            if not self._pump(0):
                return

    def _raise_failures(self) -> None:
        """Handle finished ``up``\\ s; raise the failures of background ones not yet raised."""
        self._pump_done()
        if not self._failures:
            return
        failures, self._failures = self._failures, []
        if len(failures) == 1:
            raise failures[0]
        kind = type(failures[0])
        if not all(type(f) is kind for f in failures):
            kind = EngineError
        raise kind(
            f"{len(failures)} background updates failed:\n" + "\n".join(str(f) for f in failures)
        )

    def _complete(self, layer: str) -> None:
        """Handle the end of ``layer``'s background ``up`` (in the calling thread)."""
        run = self._runs.pop(layer, None)
        ls = self._layers.get(layer)
        if run is None or ls is None:  # pragma: no cover - an update left by close()
            return
        if run.thread is not None:
            run.thread.join(timeout=30)  # it has reported: it is ending
        now = self._now()
        if run.error is None:
            ls.outputs = dict(run.result.outputs)
            ls.applied = run.key
            ls.applied_knobs = run.knobs
            ls.records = None
            if self._halting:
                ls.held = dict(self.queue.queued.pop(layer, {}))
            nxt = self.queue.complete(layer, now)
            if nxt is not None:
                self._launch(nxt)
            self._launch_stale(now)
            return
        ls.applied = None
        ls.records = None
        if isinstance(run.error, KeyboardInterrupt):
            self._after_interrupt(ls, "up")
            self._fail_update(ls, run.update, run.error)
            return
        from infragym.backends.engine import map_error

        error: InfraGymError
        if run.program_errors and isinstance(run.program_errors[0], InfraGymError):
            error = run.program_errors[0]
        elif isinstance(run.error, InfraGymError):
            error = run.error
        else:
            error = map_error(run.error, ls.stack.name, "up", self.state)  # type: ignore[arg-type]
        if isinstance(error, ConfigError):
            ls.knobs = dict(ls.applied_knobs)  # the rejected values are dropped
        self._fail_update(ls, run.update, error)
        self._failures.append(error)

    def _fail_update(self, ls: _LayerState, update: Update, error: BaseException | None) -> None:
        """Take a failed update out of flight; hold its changes (and the queued ones).

        After a :class:`ConfigError` (a knob the program rejects), the update's values are
        dropped, and its knobs are requested as applied again.
        """
        self.queue.in_flight.pop(update.layer, None)
        waiting = self.queue.queued.pop(update.layer, {})
        ls.failed = True
        if isinstance(error, ConfigError):
            held: dict[str, Change] = {}
            for k, _value in update.changes:
                if k.name in waiting:
                    continue
                if k.name in self.queue.applied:
                    self.queue.requested[k.name] = self.queue.applied[k.name]
                else:
                    self.queue.requested.pop(k.name, None)
        else:
            held = {c.knob.name: c for c in update.changes}
        held.update(waiting)
        held.update(ls.held)
        ls.held = held

    def _signal_runs(self, force: bool) -> None:
        """Ask every background ``up`` to stop (``force``: kill it); see ``EngineCommand.stop``."""
        command = self._engine.command
        for run in list(self._runs.values()):
            if run.thread is not None and run.thread.ident is not None:
                command.stop(run.thread.ident, force=force)

    def _settle(self, timeout: float) -> bool:
        """Handle background ``up``\\ s as they end, for up to ``timeout`` seconds.

        Returns:
            Whether none is left in flight.
        """
        deadline = time.monotonic() + timeout
        while self._runs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._pump(remaining)
        return True

    def _interrupt_runs(self) -> None:
        """After Ctrl-C: stop the background ``up``\\ s as Ctrl-C stops a foreground one.

        Each engine gets ``SIGINT`` (it finishes its in-flight resource operations and
        releases its lock); a second Ctrl-C sends it another (stop now), a third kills it.
        The stopped updates are out of flight, their changes held for the next ``apply``.
        """
        if not self._runs:
            return
        log.warning(
            "interrupted: %d background update(s) stop after their in-flight operations "
            "(Ctrl-C again to stop them now)",
            len(self._runs),
        )
        self._halting = True
        presses = 1
        try:
            self._signal_runs(force=False)
            while self._runs:
                try:
                    if not self._settle(self.close_timeout):
                        self._signal_runs(force=True)
                        self._settle(60.0)
                        break
                except KeyboardInterrupt:
                    presses += 1
                    log.warning("interrupted again: stopping the background updates now")
                    self._signal_runs(force=presses > 2)
        finally:
            self._halting = False

    def _drain(self, why: str) -> None:
        """Before ``reset`` or ``close``: let the ``up``\\ s in flight end; start no more.

        Waits ``close_timeout`` seconds, then stops them (``SIGINT``), then after as long
        again kills them; a killed engine's lock is cleared (``pulumi cancel``) when its
        end is handled. Queued changes are dropped; failures not yet raised are logged.
        """
        self._pump_done()
        for layer in list(self.queue.queued):
            self.queue.queued.pop(layer, None)
        if self._runs:
            self._halting = True
            try:
                if not self._settle(self.close_timeout):
                    log.warning(
                        "%s: stopping %d update(s) still running after %.0f s: %s",
                        why,
                        len(self._runs),
                        self.close_timeout,
                        ", ".join(sorted(self._runs)),
                    )
                    self._signal_runs(force=False)
                    if not self._settle(self.close_timeout):
                        self._signal_runs(force=True)
                        self._settle(60.0)
            except KeyboardInterrupt:
                self._interrupt_runs()
                raise
            finally:
                self._halting = False
            if self._runs:  # pragma: no cover - a killed engine always ends
                log.error("%s: updates of %s did not end", why, ", ".join(sorted(self._runs)))
        for error in self._failures:
            log.warning("%s: a background update had failed: %s", why, error)
        self._failures.clear()
        for ls in self._layers.values():
            ls.held = {}

    # ------------------------------------------------------------------ engine

    def _engine_ready(self) -> Any:
        """The :class:`~infragym.backends.engine.Engine`, preparing the backend once."""
        if self._engine is None:
            from infragym.backends.engine import Engine
            from infragym.backends.progress import EngineProgress

            prepare_backend(self.state)
            self._engine = Engine(self.state, self._passphrase_file, self._env, self._cli)
            self._progress = EngineProgress(enabled=self._progress_enabled)
        return self._engine

    def _stack_name(self, layer: str) -> str:
        from stacks.registry import stack_name

        return stack_name(self.deployment, layer)

    def _attach(self, ls: _LayerState, engine: Any) -> None:
        """Open the layer's stack; refresh it when it existed before."""
        if ls.stack is not None:
            return
        stack, existed = engine.stack(self._stack_name(ls.name), _no_program)
        ls.stack = stack
        if existed and self.refresh_on_attach:
            self._run(ls, "refresh", lambda on_event: stack.refresh(on_event=on_event))
            ls.records = None

    def _run(
        self,
        ls: _LayerState,
        action: str,
        op: Callable[[Any], Any],
        program_errors: Sequence[BaseException] = (),
    ) -> Any:
        """Run one engine operation on the layer's stack, counting and mapping it.

        ``program_errors`` is where the operation's program records its exception (an
        infragym error there is raised rather than the engine's report of it).
        """
        from pulumi import automation as auto

        from infragym.backends.engine import map_error

        self.engine_calls += 1
        try:
            with self._progress.operation(f"{action} {ls.stack.name}") as on_event:
                return op(on_event)
        except KeyboardInterrupt:
            ls.applied = None
            ls.records = None
            self._after_interrupt(ls, action)
            raise
        except auto.CommandError as exc:
            ls.applied = None
            ls.records = None
            if program_errors and isinstance(program_errors[0], InfraGymError):
                raise program_errors[0] from None
            raise map_error(exc, ls.stack.name, action, self.state) from None

    def _after_interrupt(self, ls: _LayerState, action: str) -> None:
        """After Ctrl-C: release a lock the stopped engine left, and say how to clean up."""
        try:
            cleared = self._engine.clear_stale_locks(ls.stack)
        except Exception as exc:  # the interrupt matters more than this cleanup
            cleared = []
            log.debug("could not check the locks of %s: %s", ls.stack.name, exc)
        log.warning(
            "%s of %s interrupted%s; its resources are as the engine left them. List or "
            "remove leftovers with `infragym stacks list --backend %s` and `infragym stacks "
            "destroy %s --backend %s`",
            action,
            ls.stack.name,
            " (its stale lock was cleared)" if cleared else "",
            self.state.display,
            self.deployment,
            self.state.display,
        )

    def _up(self, ls: _LayerState, key: str) -> None:
        """``up`` the layer with its current settings, knobs and upstream outputs."""
        program, errors = self._program(ls)

        def op(on_event: Any) -> Any:
            return ls.stack.up(program=program, on_event=on_event, color="never")

        result = self._run(ls, "up", op, errors)
        ls.outputs = dict(result.outputs)
        ls.applied = key
        ls.applied_knobs = dict(ls.knobs)
        ls.records = None

    def _destroy(self, ls: _LayerState) -> None:
        """Destroy the layer's resources and remove its stack."""
        from pulumi import automation as auto

        from infragym.backends.engine import map_error

        self._run(ls, "destroy", lambda on_event: ls.stack.destroy(on_event=on_event))
        try:
            ls.stack.workspace.remove_stack(ls.stack.name)
        except auto.CommandError as exc:
            raise map_error(exc, ls.stack.name, "stack rm", self.state) from None
        ls.stack = None
        ls.applied = None
        ls.outputs = {}

    def _destroy_order(self) -> list[str]:
        """Every layer this backend touched, upstream first."""
        from stacks.registry import dependency_order

        names = list(self._layers)
        try:
            return dependency_order(names)
        except ConfigError:
            # Layers from several resets may not form a closed set: keep the active order
            # and put the others before it, so that they are destroyed first.
            rest = [n for n in names if n not in self._order]
            return rest + [n for n in self._order if n in names]

    # ------------------------------------------------------------------ desired state

    def _upstream(self, ls: _LayerState) -> dict[str, Any]:
        """Output name → ``OutputValue`` from the layer's upstream stacks."""
        from stacks.registry import upstream_layers

        merged: dict[str, Any] = {}
        for up in upstream_layers(ls.layer, self._order):
            merged.update(self._layers[up].outputs)
        return merged

    def _desired_key(self, ls: _LayerState) -> str:
        """A digest of everything the layer's ``up`` depends on (kept in memory only)."""
        upstream = {k: [v.value, bool(v.secret)] for k, v in self._upstream(ls).items()}
        knobs = sorted(
            [list(key), json.dumps(value, sort_keys=True, default=str)]
            for key, (_knob, value) in ls.knobs.items()
        )
        doc = {
            "settings": ls.settings.model_dump(mode="json"),
            "knobs": knobs,
            "upstream": upstream,
        }
        text = json.dumps(doc, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _program(self, ls: _LayerState) -> tuple[Callable[[], None], list[BaseException]]:
        """The inline program: the layer's program under the knob transformation.

        Everything it uses (settings, knob values, upstream outputs) is taken now, so that
        a background ``up`` runs with the values of its own update.

        Returns:
            The program, and the list where it records the exception it raises.
        """
        from infragym.backends.transform import Override, transformation
        from stacks.registry import LayerContext

        overrides = [
            Override(k.type, k.resource, k.path, value, k.name) for k, value in ls.knobs.values()
        ]
        upstream = self._upstream(ls)
        deployment = self.deployment
        settings = ls.settings
        layer_program = ls.layer.program
        errors: list[BaseException] = []

        def program() -> None:
            import pulumi

            try:
                knobs = transformation(overrides)
                if overrides:
                    pulumi.runtime.register_stack_transformation(knobs)
                values = {
                    k: pulumi.Output.secret(v.value) if v.secret else v.value
                    for k, v in upstream.items()
                }
                ctx = LayerContext(deployment=deployment, settings=settings, upstream=values)
                for key, value in dict(layer_program(ctx) or {}).items():
                    pulumi.export(key, value)
                knobs.check()
            except Exception as exc:
                errors.append(exc)
                raise

        return program, errors

    def _check_change(self, change: Change) -> None:
        k = change.knob
        if k.layer not in self._order:
            raise ConfigError(
                f"knob {k.name!r} is on layer {k.layer!r}, which is not deployed "
                f"(deployed: {self._order})"
            )
        declared = self._layers[k.layer].layer.resources
        if declared and k.type not in declared:
            raise ConfigError(
                f"knob {k.name!r}: layer {k.layer!r} declares no {k.type} resources "
                f"(it declares {list(declared)})"
            )
        values = k.values
        if values and change.value not in values:
            raise ActionError(
                f"knob {k.name!r}: value {change.value!r} is not in its domain {list(values)}"
            )
        declared_now = self._layers[k.layer].declared
        if declared_now is not None and (k.type, k.resource) not in declared_now:
            raise ConfigError(f"knob {k.name!r}: layer {k.layer!r} has no {k.type} {k.resource!r}")

    # ------------------------------------------------------------------ state reading

    def _export_records(self, ls: _LayerState) -> list[ResourceRecord]:
        from pulumi import automation as auto

        from infragym.backends.engine import map_error

        try:
            exported = ls.stack.export_stack()
        except auto.CommandError as exc:
            raise map_error(exc, ls.stack.name, "stack export", self.state) from None
        return records_from_state(ls.name, exported.deployment or {})

    def _metrics_source(self) -> Any:
        if self._metrics is None and self._prometheus_url:
            from infragym.prometheus import PrometheusSource

            self._metrics = PrometheusSource(self._prometheus_url, self._window_seconds)
        if self._metrics is None:
            # The deployment's own Prometheus, through the API server's service proxy.
            # Stack outputs are OutputValue(value, secret); the kubeconfig stays in memory.
            outputs = {
                k: getattr(v, "value", v)
                for ls in self._layers.values()
                for k, v in ls.outputs.items()
            }
            if outputs.get("kubeconfig") and outputs.get("prometheus_url"):
                from infragym.backends.cluster_access import prometheus_via_api_server

                self._metrics, self._cluster_access = prometheus_via_api_server(
                    outputs["kubeconfig"], outputs["prometheus_url"], self._window_seconds
                )
        if self._metrics is None:
            raise MetricsError(
                "the pulumi backend has no metrics source: deploy the k8s-prometheus layer "
                "(reached through the API server), or pass backend_options="
                "{'prometheus_url': 'http://...'} (or metrics=<a source with instant()>)"
            )
        return self._metrics


_BOOTING = ("nodes_booting", "next_node_ready_s")
"""Metrics of nodes asked for and not Ready yet, which Prometheus cannot see."""


def _no_program() -> None:
    """Placeholder program for opening a stack (each operation passes the real one)."""


def check_credentials(layers: Any) -> None:
    """Raise :class:`CredentialsError` when a layer's provider credential is unset.

    A layer needs the credential of every provider whose resources it declares (in
    :attr:`~stacks.registry.Layer.resources`), for example ``DIGITALOCEAN_TOKEN`` for
    ``digitalocean:`` types. Checked before any engine call.
    """
    for layer in layers:
        for prefix, names in CREDENTIALS.items():
            if any(t.startswith(prefix) for t in layer.resources) and not any(
                os.environ.get(n) for n in names
            ):
                raise CredentialsError(
                    f"layer {layer.name!r} creates {prefix.rstrip(':')} resources and needs "
                    f"{names[0]} to be set (a DigitalOcean API token with write scope)"
                )


def _unsecret(value: Any) -> Any:
    """State values with secrets replaced by ``"[secret]"`` (records are not secret)."""
    if isinstance(value, dict):
        if _SECRET_SIG in value:
            return "[secret]"
        return {k: _unsecret(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsecret(v) for v in value]
    return value


def records_from_state(layer: str, deployment: Mapping[str, Any]) -> list[ResourceRecord]:
    """Custom resources of an exported stack state, as :class:`ResourceRecord`."""
    out = []
    for res in deployment.get("resources") or []:
        rtype = res.get("type", "")
        if not res.get("custom") or rtype.startswith("pulumi:providers:"):
            continue
        if res.get("delete"):
            continue
        inputs = {k: v for k, v in (res.get("inputs") or {}).items() if not k.startswith("__")}
        out.append(
            ResourceRecord(
                layer=layer,
                type=rtype,
                name=res["urn"].rsplit("::", 1)[-1],
                inputs=_unsecret(inputs),
            )
        )
    return out


def _deployed_equals(records: Sequence[ResourceRecord] | None, knob: Knob, value: Any) -> bool:
    """Whether the deployed ``records`` (if known) already hold ``value`` for ``knob``."""
    if records is None:
        return False
    try:
        current = knob_value(records, knob)
    except ConfigError:
        return False
    if isinstance(current, int | float) and isinstance(value, int | float):
        return float(current) == float(value)
    return current == value


def knob_value(records: Sequence[ResourceRecord], knob: Knob) -> Any:
    """The deployed value of ``knob`` in ``records``.

    Raises:
        ConfigError: The resource or path is not in the records.
    """
    for r in records:
        if r.layer == knob.layer and r.type == knob.type and r.name == knob.resource:
            return get_path(r.inputs, knob.path)
    raise ConfigError(f"knob {knob.name!r}: no {knob.type} {knob.resource!r} is deployed")


__all__ = ["CREDENTIALS", "PulumiBackend", "check_credentials", "knob_value", "records_from_state"]
