"""Fixtures for the pulumi backend tests: the real Pulumi CLI, its environment, moto S3.

- ``pulumi_cli_dir`` runs ``scripts/install-pulumi-cli.sh`` once per session (it reuses
  the cached offline build, or builds it: 5-15 minutes the first time). Without a CLI and
  without Go the engine tests skip, unless ``CI`` is set: there they fail.
- ``pulumi_env`` puts the CLI (and the ``pulumi-resource-pulumi-python`` shim that runs
  Python dynamic providers) on ``PATH`` for one test module, with
  ``PULUMI_SKIP_UPDATE_CHECK``, ``PULUMI_PYTHON_CMD`` (this interpreter), a temporary
  ``PULUMI_HOME``, a test passphrase, and the repository root on ``PYTHONPATH`` so the
  provider process can import :mod:`tests.backends.dynlayers`.
- ``test_layers`` registers the dynamic-provider test layers for one module.
- ``moto_s3`` serves S3 from moto's threaded server on 127.0.0.1 (a free port), with
  dummy AWS credentials in the environment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_PASSPHRASE = "infragym-test-passphrase-7f3a"
"""The passphrase the engine tests encrypt secrets with (tests check it never leaks)."""

AWS_TEST_SECRET = "moto-test-secret-key-9c1e"
"""The dummy secret key handed to moto (tests check it never leaks)."""


@pytest.fixture(scope="session")
def pulumi_cli_dir() -> Path:
    """The directory holding the ``pulumi`` CLI and the dynamic-provider shim."""
    script = REPO_ROOT / "scripts" / "install-pulumi-cli.sh"
    try:
        out = subprocess.run(
            ["bash", str(script)],
            env={**os.environ, "PYTHON": sys.executable, "PULUMI_SKIP_UPDATE_CHECK": "true"},
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/install-pulumi-cli.sh took over an hour", pytrace=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not (Path(lines[-1]) / "pulumi").exists():
        msg = f"no Pulumi CLI (scripts/install-pulumi-cli.sh failed):\n{out.stderr[-2000:]}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return Path(lines[-1])


@pytest.fixture(scope="module")
def pulumi_env(pulumi_cli_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The engine's environment for one test module; yields the module's temp dir."""
    base = tmp_path_factory.mktemp("pulumi")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{pulumi_cli_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        mp.setenv("PULUMI_SKIP_UPDATE_CHECK", "true")
        mp.setenv("PULUMI_PYTHON_CMD", sys.executable)
        mp.setenv("PULUMI_HOME", str(base / "pulumi-home"))
        mp.setenv("PULUMI_CONFIG_PASSPHRASE", TEST_PASSPHRASE)
        pythonpath = os.environ.get("PYTHONPATH")
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO_ROOT), pythonpath) if p))
        for name in (
            "PULUMI_BACKEND_URL",
            "PULUMI_ACCESS_TOKEN",
            "PULUMI_CONFIG_PASSPHRASE_FILE",
            "PULUMI_CLI",
            "INFRAGYM_STATE_URL",
        ):
            mp.delenv(name, raising=False)
        yield base


@pytest.fixture(scope="module")
def test_layers() -> Iterator[None]:
    """``test-base`` and ``test-app`` in the layer registry for one module, then removed."""
    from tests.backends.dynlayers import register_test_layers, unregister_test_layers

    register_test_layers()
    try:
        yield
    finally:
        unregister_test_layers()


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """Dummy AWS credentials (moto accepts any), and no profile or real endpoint."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", AWS_TEST_SECRET)
        mp.setenv("AWS_REGION", "us-east-1")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        yield


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 on 127.0.0.1; yields ``host:port``."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_s3(moto_server: str, aws_env: None) -> str:
    """``host:port`` of moto's S3, with the dummy credentials set."""
    return moto_server


def s3_url(endpoint: str, bucket: str) -> str:
    """The state URL of ``bucket`` on moto."""
    return (
        f"s3://{bucket}?region=us-east-1&endpoint={endpoint}&s3ForcePathStyle=true&disableSSL=true"
    )


def marked_pids(mark: str) -> list[int]:
    """PIDs of processes whose environment carries ``INFRAGYM_TEST_MARK=<mark>``.

    Tests give the processes they start a unique mark, so that after killing a process
    they can find (and stop) its children left behind, by PID.
    """
    needle = f"INFRAGYM_TEST_MARK={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_marked(mark: str) -> list[int]:
    """SIGKILL every process carrying ``mark`` (see :func:`marked_pids`); returns them."""
    pids = marked_pids(mark)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
