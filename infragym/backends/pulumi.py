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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infragym.backends.base import ApplyResult, Backend, Change, LayerSpec, ResourceRecord
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

log = logging.getLogger(__name__)

_NO_DEPLOYMENT = (
    "the pulumi backend has no deployment: call reset() first (the last reset failed, "
    "or there was none)"
)
_DEPLOYMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_SECRET_SIG = "4dabf18193072939515e22adb298388d"

CREDENTIALS: dict[str, tuple[str, ...]] = {
    # Type-token prefix → environment variables, any one of which the provider accepts.
    "digitalocean:": ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"),
}
"""Credentials that layers declaring resources of a provider need, checked up front."""


@dataclass
class _LayerState:
    """What the backend knows of one layer's stack."""

    name: str
    layer: Any
    settings: Any
    stack: Any = None
    applied: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    knobs: dict[tuple[str, str, str], tuple[Knob, Any]] = field(default_factory=dict)
    records: list[ResourceRecord] | None = None
    declared: frozenset[tuple[str, str]] | None = None


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

    Raises:
        ConfigError: A bad deployment name or state URL (no engine is contacted here).
    """

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
    ) -> None:
        if not _DEPLOYMENT.match(deployment or ""):
            raise ConfigError(
                f"invalid deployment name {deployment!r}: use letters, digits, '-' and '_' "
                "(no '.', which separates it from the layer in stack names)"
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
        self._program_error: BaseException | None = None
        self.engine_calls = 0
        self.seed: int | None = None

    # ------------------------------------------------------------------ contract

    def reset(self, layers: Sequence[LayerSpec], seed: int | None = None) -> None:
        """Deploy or reconfigure ``layers``: knob values go back to the settings' own.

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
        self.seed = seed

        for name in order:
            layer, settings = parsed[name]
            ls = self._layers.get(name)
            if ls is None:
                ls = self._layers[name] = _LayerState(name, layer, settings)
            if ls.settings != settings:
                ls.declared = None  # other settings may declare other resources
            ls.settings = settings
            ls.knobs.clear()
        self._order = order
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

    def apply(self, changes: Sequence[Change]) -> ApplyResult:
        """Set knob values; ``up`` only the layers whose desired state changed.

        Raises:
            ActionError: A value outside its knob's domain.
            ConfigError: A knob on a layer that is not deployed, or on a resource the
                layer does not declare (before any engine call).
            EngineError: The engine failed (its message kept).
        """
        t0 = time.monotonic()
        calls0 = self.engine_calls
        if not self._order:
            raise ConfigError(_NO_DEPLOYMENT)
        for change in changes:
            self._check_change(change)
        before = {name: dict(self._layers[name].knobs) for name in self._order}
        for change in changes:
            k = change.knob
            ls = self._layers[k.layer]
            key = (k.type, k.resource, k.path)
            if key not in ls.knobs and _deployed_equals(ls.records, k, change.value):
                # The settings already give this value: an override would change the
                # digest but not the resource, and cost a no-op ``up``.
                continue
            ls.knobs[key] = (k, change.value)
        updated: list[str] = []
        try:
            for name in self._order:
                ls = self._layers[name]
                key = self._desired_key(ls)
                if key != ls.applied:
                    self._up(ls, key)
                    updated.append(name)
        except ConfigError:
            # A knob the program rejects would fail every later update: drop this apply's
            # values. (After an engine failure they stay, so that a later apply retries.)
            for name, knobs in before.items():
                self._layers[name].knobs = knobs
            raise
        return ApplyResult(
            layers_updated=tuple(updated),
            engine_calls=self.engine_calls - calls0,
            seconds=time.monotonic() - t0,
        )

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of wall-clock time pass (unless ``step_wait=False``)."""
        if seconds < 0 or math.isnan(seconds):
            raise ConfigError(f"cannot advance by {seconds} seconds")
        if self.step_wait and seconds > 0:
            time.sleep(seconds)

    def observe(self, metric_names: Sequence[str]) -> dict[str, float]:
        """The named metrics: from Prometheus, and ``cost_hourly`` from the resource graph.

        Cost is priced from the deployed resources exactly as the sim prices its graph
        (:mod:`infragym.twin.cost`), so both backends report the same figure.

        Raises:
            MetricsError: No metrics source is configured, or it failed.
        """
        from infragym.twin.cost import hourly_cost

        if not self._order:
            raise ConfigError(_NO_DEPLOYMENT)
        names = list(metric_names)
        measured = [n for n in names if n != "cost_hourly"]
        values: dict[str, float] = {}
        if measured:
            values, _missing = self._metrics_source().instant(measured)
        if "cost_hourly" in names:
            values["cost_hourly"] = hourly_cost(self.resources())
        return {name: float(values[name]) for name in names}

    def resources(self) -> list[ResourceRecord]:
        """The custom resources of every deployed layer, from the stacks' exported state."""
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

        Raises:
            EngineError: A destroy failed; the others were still attempted, and the
                message names the stacks left behind.
        """
        if self._engine is None:
            return
        try:
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
            if self._cluster_access is not None:
                self._cluster_access.close()  # removes the credential files
                self._cluster_access, self._metrics = None, None

    def info(self) -> dict[str, Any]:
        """Engine calls so far, the deployment and the state backend."""
        return {
            "engine_calls": self.engine_calls,
            "deployment": self.deployment,
            "state_backend": self.state.display,
        }

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

    def _run(self, ls: _LayerState, action: str, op: Callable[[Any], Any]) -> Any:
        """Run one engine operation on the layer's stack, counting and mapping it."""
        from pulumi import automation as auto

        from infragym.backends.engine import map_error

        self._program_error = None
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
            if isinstance(self._program_error, InfraGymError):
                raise self._program_error from None
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
        program = self._program(ls)

        def op(on_event: Any) -> Any:
            return ls.stack.up(program=program, on_event=on_event, color="never")

        result = self._run(ls, "up", op)
        ls.outputs = dict(result.outputs)
        ls.applied = key
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

    def _program(self, ls: _LayerState) -> Callable[[], None]:
        """The inline program: the layer's program under the knob transformation."""
        from infragym.backends.transform import Override, transformation
        from stacks.registry import LayerContext

        overrides = [
            Override(k.type, k.resource, k.path, value, k.name) for k, value in ls.knobs.values()
        ]
        upstream = self._upstream(ls)
        deployment = self.deployment

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
                ctx = LayerContext(deployment=deployment, settings=ls.settings, upstream=values)
                for key, value in dict(ls.layer.program(ctx) or {}).items():
                    pulumi.export(key, value)
                knobs.check()
            except Exception as exc:
                self._program_error = exc
                raise

        return program

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
