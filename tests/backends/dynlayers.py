"""Test layers made of Python dynamic-provider resources: the real engine, no cloud.

A :class:`FileRecord` is a resource whose "cloud" is a directory: creating it writes
``<dir>/<name>.json`` holding its inputs, updating rewrites it, deleting removes it, and
a refresh notices when the file was removed behind the engine's back. Tests check the
files to see what the engine really did. Its provider can be told to fail on create
while a flag file exists (``failWhile``: a transient cloud error; an update then fails
too, after ``delay``) or to take its time (``delay`` seconds), for the fault tests.

Two layers, registered by :func:`register_test_layers` (the ``test_layers`` fixture
registers them for a test module and removes them after, so that other tests see the
real registry only):

- ``test-base``: one record ``base`` (type :data:`RECORD_TYPE`) with ``spec.replicas``,
  ``spec.template.containers[0].cpuLimit`` and ``size``; it exports ``base_file``,
  ``base_size`` (from ``size``: a knob on it changes what flows downstream) and
  ``base_secret`` (a secret).
- ``test-app`` (upstream ``test-base``): one record ``app`` with ``spec.replicas`` and
  ``upstreamFile``/``upstreamSize``/``upstreamSecret`` read from ``test-base``.

The engine runs the provider in its own process (``pulumi-resource-pulumi-python``), which
unpickles it with dill. The provider class is pickled *by reference* to this module, so
the provider process must import ``tests.backends.dynlayers``: the tests put the repository
root on ``PYTHONPATH``. The provider keeps no state (everything is in the inputs), so
nothing unpicklable is captured.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)
from pydantic import Field

from infragym.knobs import Choice, IntRange, Knob
from stacks.registry import LAYERS, Layer, LayerContext, LayerSettings, register

RECORD_TYPE = "pulumi-python:dynamic/infragym:FileRecord"
"""Type token of :class:`FileRecord`."""

_REPLACE_KEYS = ("dir", "name")
_IGNORED = ("__provider", "path", "delay")


def _public(props: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if not k.startswith("__") and k != "path"}


class FileProvider(ResourceProvider):
    """CRUD on ``<dir>/<name>.json`` (see the module doc)."""

    def _write(self, props: Mapping[str, Any]) -> str:
        time.sleep(float(props.get("delay") or 0))
        path = os.path.join(props["dir"], f"{props['name']}.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(_public(props), f, sort_keys=True)
        os.replace(tmp, path)
        return path

    def create(self, props: dict[str, Any]) -> CreateResult:
        flag = props.get("failWhile")
        if flag and os.path.exists(flag):
            raise RuntimeError(f"injected failure creating {props['name']!r}")
        path = self._write(props)
        return CreateResult(id_=props["name"], outs={**props, "path": path})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = sorted(
            k for k in set(olds) | set(news) if k not in _IGNORED and olds.get(k) != news.get(k)
        )
        return DiffResult(
            changes=bool(keys),
            replaces=[k for k in keys if k in _REPLACE_KEYS],
            delete_before_replace=True,
        )

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        flag = news.get("failWhile")
        if flag and os.path.exists(flag):
            time.sleep(float(news.get("delay") or 0))
            raise RuntimeError(f"injected failure updating {news['name']!r}")
        path = self._write(news)
        return UpdateResult(outs={**news, "path": path})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        path = os.path.join(props["dir"], f"{props['name']}.json")
        if not os.path.exists(path):
            return ReadResult("", {})
        return ReadResult(id_, props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(props["dir"], f"{props['name']}.json"))


class FileRecord(Resource, module="infragym", name="FileRecord"):
    """A JSON file standing for a cloud resource (see :class:`FileProvider`)."""

    path: pulumi.Output[str]
    size: pulumi.Output[str]

    def __init__(
        self, name: str, props: Mapping[str, Any], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(FileProvider(), name, {"path": None, "size": None, **props}, opts)


class BaseSettings(LayerSettings):
    """Settings of ``test-base``.

    Attributes:
        dir: Where the records' files go.
        replicas: ``spec.replicas`` of the record.
        cpu_limit: ``spec.template.containers[0].cpuLimit``.
        size: Exported as ``base_size`` (flows to ``test-app``).
        delay: Seconds the provider takes per create/update.
        fail_while: Creating or updating the record fails while this file exists.
    """

    dir: str
    replicas: int = Field(1, ge=0)
    cpu_limit: str = "500m"
    size: str = "small"
    delay: float = Field(0.0, ge=0)
    fail_while: str = ""


class AppSettings(LayerSettings):
    """Settings of ``test-app``: ``dir``, ``replicas`` and ``delay`` as for ``test-base``."""

    dir: str
    replicas: int = Field(1, ge=0)
    delay: float = Field(0.0, ge=0)


def base_program(ctx: LayerContext) -> Mapping[str, Any]:
    """One record ``base``; exports its file, its size and a secret."""
    s: BaseSettings = ctx.settings
    props: dict[str, Any] = {
        "dir": s.dir,
        "name": f"{ctx.deployment}-base",
        "spec": {"replicas": s.replicas, "template": {"containers": [{"cpuLimit": s.cpu_limit}]}},
        "size": s.size,
        "delay": s.delay,
    }
    if s.fail_while:
        props["failWhile"] = s.fail_while
    record = FileRecord("base", props)
    return {
        "base_file": record.path,
        "base_size": record.size,
        "base_secret": pulumi.Output.secret(f"s3cret-of-{ctx.deployment}"),
    }


def app_program(ctx: LayerContext) -> Mapping[str, Any]:
    """One record ``app`` reading ``test-base``'s outputs."""
    s: AppSettings = ctx.settings
    record = FileRecord(
        "app",
        {
            "dir": s.dir,
            "name": f"{ctx.deployment}-app",
            "spec": {"replicas": s.replicas},
            "upstreamFile": ctx.need("base_file"),
            "upstreamSize": ctx.need("base_size"),
            "upstreamSecret": ctx.need("base_secret"),
            "delay": s.delay,
        },
    )
    return {"app_file": record.path}


TEST_LAYERS = ("test-base", "test-app")


def register_test_layers() -> None:
    """Register ``test-base`` and ``test-app`` (idempotent)."""
    if "test-base" in LAYERS:
        return
    register(
        Layer(
            name="test-base",
            description="Test layer: one dynamic-provider file record",
            settings=BaseSettings,
            program=base_program,
            outputs=("base_file", "base_size", "base_secret"),
            resources=(RECORD_TYPE,),
        )
    )
    register(
        Layer(
            name="test-app",
            description="Test layer: a record reading test-base's outputs",
            settings=AppSettings,
            program=app_program,
            upstream=("test-base",),
            outputs=("app_file",),
            resources=(RECORD_TYPE,),
        )
    )


def unregister_test_layers() -> None:
    """Remove the test layers from the registry."""
    for name in TEST_LAYERS:
        LAYERS.pop(name, None)


BASE_REPLICAS = Knob(
    "base_replicas", "test-base", RECORD_TYPE, "base", "spec.replicas", IntRange(0, 9)
)
BASE_CPU = Knob(
    "base_cpu",
    "test-base",
    RECORD_TYPE,
    "base",
    "spec.template.containers[0].cpuLimit",
    Choice(("250m", "500m", "1000m")),
)
BASE_SIZE = Knob("base_size", "test-base", RECORD_TYPE, "base", "size", Choice(("small", "large")))
APP_REPLICAS = Knob("app_replicas", "test-app", RECORD_TYPE, "app", "spec.replicas", IntRange(0, 9))


def read_record(directory: str | Path, deployment: str, which: str) -> dict[str, Any] | None:
    """The content of a record's file, or None when it does not exist."""
    path = Path(directory) / f"{deployment}-{which}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.backends.dynlayers STATE_URL DEPLOYMENT DIR DELAY``: one slow ``up``.

    Deploys ``test-base`` (with the provider taking DELAY seconds) through
    :class:`~infragym.backends.pulumi.PulumiBackend` with ``keep=True``, for the tests
    that interrupt, kill or race an update in another process. Prints ``PID <pid>`` first.
    Exits 0 when done, 130 on Ctrl-C, 1 on an infragym error.
    """
    import argparse
    import sys

    from infragym.backends import LayerSpec
    from infragym.backends.pulumi import PulumiBackend
    from infragym.errors import InfraGymError

    parser = argparse.ArgumentParser()
    parser.add_argument("state_url")
    parser.add_argument("deployment")
    parser.add_argument("dir")
    parser.add_argument("delay", type=float)
    args = parser.parse_args(argv)
    # Started from a shell's background job, SIGINT arrives ignored: this run is there to
    # be interrupted, so Ctrl-C must raise KeyboardInterrupt as in a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"PID {os.getpid()}", flush=True)
    register_test_layers()
    backend = PulumiBackend(args.deployment, args.state_url, keep=True, progress=False)
    try:
        backend.reset([LayerSpec("test-base", {"dir": args.dir, "delay": args.delay})])
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        return 130
    except InfraGymError as exc:
        print(f"ERROR {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        backend.close()
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    # Run as a script, this file is ``__main__``, whose classes dill would pickle by
    # value: use the module under its real name.
    from tests.backends.dynlayers import main as _main

    raise SystemExit(_main())
