"""Helpers for tests that run real programs on loopback: ports, start, readiness, stop.

Every process is started here and stopped here by its own PID (terminate, then kill
after a timeout), never by name. Output goes to temporary files rather than pipes, so a
chatty process can never block on a full pipe; read it with
:meth:`ManagedProcess.output` (for example to show it when a test fails).

Example::

    from tests.procs import free_port, run_app

    port = free_port()
    with run_app(["-m", "infragym.apps.heater", "--host", "127.0.0.1", "--port", str(port)],
                 ready_url=f"http://127.0.0.1:{port}/healthz") as heater:
        ...
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the working directory of started processes by default."""


class ManagedProcess(subprocess.Popen):
    """A :class:`subprocess.Popen` whose stdout and stderr go to temporary files.

    Attributes:
        stdout_path: File receiving the process's stdout.
        stderr_path: File receiving the process's stderr.
    """

    stdout_path: Path
    stderr_path: Path

    def output(self) -> tuple[str, str]:
        """The process's stdout and stderr so far."""
        return (
            self.stdout_path.read_text(errors="replace"),
            self.stderr_path.read_text(errors="replace"),
        )

    def describe(self, tail: int = 4000) -> str:
        """PID, exit code and the end of both outputs, for assertion messages."""
        out, err = self.output()
        return (
            f"pid={self.pid} returncode={self.poll()}\n"
            f"--- stdout ---\n{out[-tail:]}\n--- stderr ---\n{err[-tail:]}"
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_process(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    python: bool = True,
    cwd: str | Path | None = None,
) -> ManagedProcess:
    """Start a process with its output in temporary files.

    Args:
        args: With ``python=True``, the arguments after the interpreter (for example
            ``["-m", "infragym.apps.heater", "--port", "8080"]``), run with
            ``sys.executable``; with ``python=False``, the whole command line.
        env: Variables added to (and overriding) this process's environment.
        python: Whether ``args`` are arguments of this Python interpreter.
        cwd: Working directory; the repository root by default, so ``-m infragym...``
            imports this checkout.

    Returns:
        The running process; stop it with :func:`stop_process`.
    """
    argv = [sys.executable, *args] if python else list(args)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    out = tempfile.NamedTemporaryFile(prefix="proc-", suffix=".out", delete=False)  # noqa: SIM115
    err = tempfile.NamedTemporaryFile(prefix="proc-", suffix=".err", delete=False)  # noqa: SIM115
    try:
        proc = ManagedProcess(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=full_env,
            cwd=str(cwd or REPO_ROOT),
        )
    finally:
        out.close()  # the child holds its own descriptors
        err.close()
    proc.stdout_path = Path(out.name)
    proc.stderr_path = Path(err.name)
    return proc


def wait_http_ok(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200.

    Args:
        url: A loopback URL.
        timeout: Seconds to wait at most.
        proc: When given, fail at once if this process exits while waiting.

    Raises:
        TimeoutError: If ``url`` did not answer 200 in time.
        RuntimeError: If ``proc`` exited first.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            detail = proc.describe() if isinstance(proc, ManagedProcess) else ""
            raise RuntimeError(f"process exited before {url} was ready\n{detail}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
                last = resp.status
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout} s (last: {last!r})")


def wait_stdout_line(proc: ManagedProcess, prefix: str = "", timeout: float = 15.0) -> str:
    """Wait until ``proc`` has written a whole stdout line starting with ``prefix``.

    Returns:
        The first such line, without its newline.

    Raises:
        TimeoutError: If no such line appeared in time (or the process exited without).
    """
    deadline = time.monotonic() + timeout
    while True:
        exited = proc.poll() is not None  # read after checking, so no final line is missed
        for line in proc.stdout_path.read_text(errors="replace").splitlines(keepends=True):
            if line.endswith("\n") and line.startswith(prefix):
                return line.rstrip("\n")
        if exited or time.monotonic() > deadline:
            why = "exited" if exited else f"timed out after {timeout} s"
            raise TimeoutError(f"no stdout line starting {prefix!r}: {why}\n{proc.describe()}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> int | None:
    """Stop a process this test started: SIGTERM by PID, then SIGKILL after ``timeout``.

    Returns:
        The exit code.
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


def fetch(url: str, timeout: float = 5.0) -> str:
    """GET a loopback URL and return the body as text (raises on non-2xx)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


@contextlib.contextmanager
def run_app(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    ready_url: str | None = None,
    ready_timeout: float = 15.0,
    python: bool = True,
    keep_logs: bool = False,
) -> Iterator[ManagedProcess]:
    """Run a process for the duration of a ``with`` block.

    Args:
        args: As for :func:`start_process`.
        env: As for :func:`start_process`.
        ready_url: When given, wait until it answers 200 before entering the block.
        ready_timeout: Seconds to wait for ``ready_url``.
        python: As for :func:`start_process`.
        keep_logs: Keep the output files after the block (they are deleted otherwise).

    Yields:
        The running process. It is stopped on exit from the block, even on error.
    """
    proc = start_process(args, env, python=python)
    try:
        if ready_url is not None:
            wait_http_ok(ready_url, ready_timeout, proc)
        yield proc
    finally:
        stop_process(proc)
        if not keep_logs:
            for path in (proc.stdout_path, proc.stderr_path):
                path.unlink(missing_ok=True)
