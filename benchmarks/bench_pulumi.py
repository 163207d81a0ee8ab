"""Cost of the pulumi backend's steps, against a raw Automation API ``stack.up()``.

Runs on the dynamic-provider test layers of :mod:`tests.backends.dynlayers` (the real
engine, a ``file://`` state in a temporary directory, no cloud):

- a **no-op step** (no knob changed, or a knob set to the value it has): engine calls
  and time (target: no engine call);
- a **one-knob change** (``test-app``'s ``spec.replicas``, alternating 2 and 3) through
  ``PulumiBackend.apply``, against the same change made by a raw ``stack.up()`` of the
  same layer program on a stack of its own, measured in the same process, interleaved
  (target: overhead <= 10 % on the median).

Needs the Pulumi CLI (``scripts/install-pulumi-cli.sh`` builds or finds it).

    python benchmarks/bench_pulumi.py [--reps N]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def setup_env(tmp: Path) -> None:
    """Put the CLI on PATH and give the engine a private home and a passphrase."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-pulumi-cli.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=True,
    )
    cli_dir = out.stdout.strip().splitlines()[-1]
    os.environ["PATH"] = f"{cli_dir}{os.pathsep}{os.environ['PATH']}"
    os.environ.update(
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_PYTHON_CMD=sys.executable,
        PULUMI_HOME=str(tmp / "pulumi-home"),
        PULUMI_CONFIG_PASSPHRASE="bench-passphrase",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    )
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5, help="one-knob changes per side")
    parser.add_argument("--noop", type=int, default=20, help="no-op steps")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pulumi-") as tmp_name:
        tmp = Path(tmp_name)
        setup_env(tmp)
        from pulumi import automation as auto

        from infragym.backends import Change, LayerSpec
        from infragym.backends.pulumi import PulumiBackend
        from stacks.registry import LayerContext
        from tests.backends import dynlayers as dl

        dl.register_test_layers()
        files = tmp / "files"
        files.mkdir()
        url = f"file://{tmp / 'state'}"
        backend = PulumiBackend("bench", url, step_wait=False, progress=False)
        t0 = time.perf_counter()
        backend.reset(
            [
                LayerSpec("test-base", {"dir": str(files)}),
                LayerSpec("test-app", {"dir": str(files)}),
            ]
        )
        reset_s = time.perf_counter() - t0
        version = backend._engine.command.version
        backend.resources()  # as the env does after reset, to read the knob values

        # The raw reference: the same layer program on its own stack, same upstream values.
        upstream = {k: v.value for k, v in backend._layers["test-base"].outputs.items()}
        replicas = {"value": 1}

        def raw_program() -> None:
            import pulumi

            settings = dl.AppSettings(dir=str(files), replicas=replicas["value"])
            outputs = dl.app_program(LayerContext("raw", settings, upstream))
            for k, v in outputs.items():
                pulumi.export(k, v)

        raw = auto.create_or_select_stack(
            stack_name="raw.test-app",
            project_name="infragym",
            program=raw_program,
            opts=auto.LocalWorkspaceOptions(
                project_settings=auto.ProjectSettings(
                    name="infragym", runtime="python", backend=auto.ProjectBackend(url)
                )
            ),
        )
        raw.up()

        try:
            # No-op steps: nothing changed, and a knob set to the value it has.
            calls0 = backend.engine_calls
            t0 = time.perf_counter()
            for i in range(args.noop):
                changes = [] if i % 2 else [Change(dl.APP_REPLICAS, 1)]
                backend.apply(changes)
                backend.advance(0)
            noop_s = (time.perf_counter() - t0) / args.noop
            noop_calls = backend.engine_calls - calls0

            ours: list[float] = []
            theirs: list[float] = []
            calls0 = backend.engine_calls
            for i in range(args.reps):
                value = 2 + i % 2
                t0 = time.perf_counter()
                result = backend.apply([Change(dl.APP_REPLICAS, value)])
                ours.append(time.perf_counter() - t0)
                assert result.layers_updated == ("test-app",), result
                replicas["value"] = value
                t0 = time.perf_counter()
                raw.up()
                theirs.append(time.perf_counter() - t0)
                assert dl.read_record(files, "raw", "app")["spec"]["replicas"] == value
            change_calls = (backend.engine_calls - calls0) / args.reps
        finally:
            raw.destroy()
            raw.workspace.remove_stack(raw.name)
            backend.close()

    ours_med, raw_med = statistics.median(ours), statistics.median(theirs)
    overhead = (ours_med - raw_med) / raw_med
    print(f"pulumi CLI v{version}, Python SDK {importlib.metadata.version('pulumi')}")
    print(f"reset (2 new stacks, create): {reset_s:.2f} s")
    print(
        f"no-op step: {noop_calls} engine calls in {args.noop} steps, "
        f"{noop_s * 1e3:.3f} ms/step (target: 0 calls)"
    )
    print(
        f"one-knob change: {change_calls:.0f} engine call/step, median {ours_med:.2f} s "
        f"(min {min(ours):.2f}, max {max(ours):.2f}) over {args.reps}"
    )
    print(
        f"raw stack.up() of the same change: median {raw_med:.2f} s "
        f"(min {min(theirs):.2f}, max {max(theirs):.2f})"
    )
    verdict = "ok" if overhead <= 0.10 else "ABOVE TARGET"
    print(f"overhead: {overhead * 100:+.1f} % (target <= 10 %: {verdict})")


if __name__ == "__main__":
    main()
