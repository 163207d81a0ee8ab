"""Run layer programs under Pulumi's mock runtime and collect the resource graph.

This is how the sim backend (and every component test) turns the real Pulumi programs
into data: each layer's program runs in-process under ``pulumi.runtime.set_mocks``, the
mock monitor records every resource registration (type token, logical name, inputs,
parent, which inputs were secret), and the layer's outputs are resolved to plain values
and handed to the downstream layers, as ``StackReference`` would on the CLI path.

One mock run per layer mirrors the pulumi backend's one stack per layer. Facts this
relies on (checked with pulumi 3.272):

- mock inputs arrive as camelCase dicts and numbers as floats;
- a mock must return the outputs later resources read (a kubeconfig, an endpoint), so
  :class:`GraphMocks` fills in plausible values for the types that need them;
- ``pulumi.runtime.settings.ROOT`` must be reset and ``set_mocks`` called again before
  each run; runs must not share a thread concurrently (use processes for parallelism).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infragym.backends.base import LayerSpec, ResourceRecord

FAKE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://mock.k8s.invalid", certificate-authority-data: ""}
  name: mock
contexts:
- context: {cluster: mock, user: mock}
  name: mock
current-context: mock
users:
- name: mock
  user: {token: mock-token}
"""


@dataclass
class RecordedResource:
    """A resource as the mock monitor saw it (richer than :class:`ResourceRecord`).

    Attributes:
        type: Pulumi type token.
        name: Logical name.
        inputs: Inputs, camelCase, secrets unwrapped.
        parent_urn: URN of the parent resource ("" for the stack).
        urn: This resource's URN.
        custom: True for provider-managed resources, False for components.
        secret_inputs: Top-level input names whose value was a secret.
        provider: Provider reference string, if any.
    """

    type: str
    name: str
    inputs: dict[str, Any]
    parent_urn: str
    urn: str
    custom: bool
    secret_inputs: frozenset[str] = frozenset()
    provider: str = ""

    @property
    def parent_type(self) -> str:
        """Type token of the parent ("" when parented to the stack)."""
        if not self.parent_urn:
            return ""
        qualified = self.parent_urn.split("::")[2]
        return qualified.split("$")[-1]


@dataclass
class LayerRun:
    """The outcome of running one layer program under mocks."""

    layer: str
    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: frozenset[str] = frozenset()

    def by_type(self, type_token: str) -> list[RecordedResource]:
        """Resources of one type, in registration order."""
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> RecordedResource:
        """The single resource of ``type_token`` (and ``name``), or AssertionError."""
        found = [r for r in self.by_type(type_token) if name is None or r.name == name]
        if len(found) != 1:
            have = [(r.type, r.name) for r in self.resources]
            raise AssertionError(
                f"expected one {type_token} {name or ''}, found {len(found)} in {have}"
            )
        return found[0]


def _mock_outputs(type_token: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Outputs the real provider would add that downstream code reads."""
    extra: dict[str, Any] = {}
    if type_token == "digitalocean:index/kubernetesCluster:KubernetesCluster":
        extra = {
            "endpoint": f"https://{name}.k8s.ondigitalocean.invalid",
            "kubeConfigs": [{"rawConfig": FAKE_KUBECONFIG, "token": "mock-token"}],
            "clusterSubnet": "10.244.0.0/16",
            "urn": f"do:kubernetes:{name}-id",
        }
        pool = dict(inputs.get("nodePool") or {})
        pool.setdefault("id", f"{name}-default-pool-id")
        extra["nodePool"] = pool
    elif type_token == "digitalocean:index/droplet:Droplet":
        extra = {
            "ipv4Address": "203.0.113.10",
            "ipv4AddressPrivate": "10.10.0.10",
            "urn": f"do:droplet:{name}-id",
        }
    elif type_token.startswith("digitalocean:"):
        extra = {"urn": f"do:{type_token.rsplit(':', 1)[-1].lower()}:{name}-id"}
    return {**inputs, **extra}


def _unwrap_secrets(value: Any) -> tuple[Any, bool]:
    """Replace Pulumi's wrapped-secret dicts by their values; report if any was found."""
    from pulumi.runtime import rpc

    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            inner, _ = _unwrap_secrets(value.get("value"))
            return inner, True
        found = False
        out = {}
        for k, v in value.items():
            out[k], s = _unwrap_secrets(v)
            found = found or s
        return out, found
    if isinstance(value, list):
        found = False
        items = []
        for v in value:
            u, s = _unwrap_secrets(v)
            items.append(u)
            found = found or s
        return items, found
    return value, False


def run_layer(
    layer_name: str,
    settings: Mapping[str, Any] | Any,
    upstream: Mapping[str, Any] | None = None,
    deployment: str = "sim",
) -> LayerRun:
    """Run one registered layer's program under mocks.

    Args:
        layer_name: Registry name of the layer.
        settings: Raw settings (validated here) or a settings model instance.
        upstream: Plain upstream output values, by output name.
        deployment: Deployment name passed to the program.

    Returns:
        The recorded resources and the layer's resolved outputs.
    """
    import pulumi
    from pulumi.runtime import mocks as pmocks
    from pulumi.runtime import rpc
    from pulumi.runtime import settings as psettings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from stacks.registry import LayerContext, get_layer

    layer = get_layer(layer_name)
    parsed = layer.parse_settings(settings)
    run = LayerRun(layer=layer_name)

    class Recorder(pmocks.MockMonitor):
        def RegisterResource(self, request):
            if request.type != "pulumi:pulumi:Stack":
                raw = rpc.deserialize_properties(request.object, keep_unknowns=True)
                secret = frozenset(k for k, v in raw.items() if _unwrap_secrets(v)[1])
                inputs, _ = _unwrap_secrets(raw)
                run.resources.append(
                    RecordedResource(
                        type=request.type,
                        name=request.name,
                        inputs=inputs,
                        parent_urn=request.parent,
                        urn=self.make_urn(request.parent, request.type, request.name),
                        custom=bool(request.custom),
                        secret_inputs=secret,
                        provider=request.provider,
                    )
                )
            return super().RegisterResource(request)

    class GraphMocks(pmocks.Mocks):
        def new_resource(self, args: pmocks.MockResourceArgs):
            inputs, _ = _unwrap_secrets(dict(args.inputs))
            return f"{args.name}-id", _mock_outputs(args.typ, args.name, inputs)

        def call(self, args: pmocks.MockCallArgs):
            return {}

    resolved: dict[str, Any] = {}
    secret_names: set[str] = set()

    def body() -> None:
        ctx = LayerContext(deployment=deployment, settings=parsed, upstream=dict(upstream or {}))
        outputs = dict(layer.program(ctx))
        for key, value in outputs.items():
            out = pulumi.Output.from_input(value)
            if _sync_await(out.is_secret()):
                secret_names.add(key)
            resolved[key] = _sync_await(out.future())

    def run_program() -> None:
        psettings.ROOT.set(None)
        pmocks.set_mocks(
            GraphMocks(),
            project="infragym",
            stack=f"{deployment}.{layer_name}",
            preview=False,
            monitor=Recorder(GraphMocks()),
        )
        psettings.SETTINGS.rpc_manager.clear()
        psettings.SETTINGS.outputs.clear()
        _sync_await(run_pulumi_func(body))

    _in_private_loop(run_program)
    run.outputs = resolved
    run.secret_outputs = frozenset(secret_names)
    return run


def _in_private_loop(run: Callable[[], None]) -> None:
    """Call ``run`` with a new asyncio event loop as this thread's, then close that loop.

    The mock runtime does its RPCs in the event loop's default executor, a thread pool.
    Left alive, that pool is what a ``fork`` (``gym.vector.AsyncVectorEnv``'s default
    start method on Linux) cannot copy: the child inherits a pool that believes its
    threads idle, hands them the next mock run's RPCs, and waits forever. So each run
    gets a loop of its own, whose threads are joined and whose loop is closed before this
    returns; a process may then fork at any time between runs. (Inside a running loop,
    the run uses that loop, as before.)
    """
    import asyncio
    import warnings

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # called from async code: no other loop may run in this thread
        run()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            previous: asyncio.AbstractEventLoop | None = asyncio.get_event_loop()
        except RuntimeError:
            previous = None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        run()
    finally:
        try:
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            asyncio.set_event_loop(previous)


def run_layers(
    specs: Sequence[LayerSpec],
    deployment: str = "sim",
    cache: MutableMapping[str, LayerRun] | None = None,
) -> tuple[list[ResourceRecord], dict[str, LayerRun]]:
    """Run several layers in dependency order, passing each one's outputs downstream.

    With a ``cache``, a layer whose settings and upstream outputs were seen before is not
    run again (a program is a pure function of them), so changing the last layer's
    settings reruns only that layer.

    Returns:
        The custom resources of all layers as :class:`ResourceRecord` (components are
        structure, not infrastructure, and are left out), and each layer's run.
    """
    from stacks.registry import dependency_order, get_layer, upstream_layers

    by_name = {s.name: s for s in specs}
    order = dependency_order(by_name)
    runs: dict[str, LayerRun] = {}
    for name in order:
        upstream: dict[str, Any] = {}
        for up in upstream_layers(get_layer(name), order):
            upstream.update(runs[up].outputs)
        key = _plain_json([deployment, name, by_name[name].settings, upstream])
        run = cache.get(key) if cache is not None else None
        if run is None:
            run = run_layer(name, by_name[name].settings, upstream, deployment)
            if cache is not None:
                cache[key] = run
        runs[name] = run
    records = [
        ResourceRecord(layer=name, type=r.type, name=r.name, inputs=r.inputs)
        for name in order
        for r in runs[name].resources
        if r.custom and not r.type.startswith("pulumi:providers:")
    ]
    return records, runs


def _plain(value: Any) -> Any:
    """JSON-able form of settings values for cache keys; secrets by their SHA-256 only."""
    if hasattr(value, "get_secret_value"):
        return "sha256:" + hashlib.sha256(str(value.get_secret_value()).encode()).hexdigest()
    if hasattr(value, "model_dump"):
        return value.model_dump()  # python mode keeps SecretStr objects, hashed above
    return str(value)


def _plain_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_plain)


def graph_key(specs: Sequence[LayerSpec], deployment: str) -> str:
    """A cache key for a set of layer specs (programs are pure functions of settings)."""
    return _plain_json([deployment, [(s.name, s.settings) for s in specs]])
