"""Faults with the real engine: a failing provider, a locked stack, a killed process, Ctrl-C.

- A create that fails gives a clear :class:`~infragym.errors.EngineError` carrying the
  provider's message; the state is left consistent (no lock, no pending operation, no
  half-created resource), and a later ``reset`` recovers once the cause is gone.
- An update running in another process holds the stack's lock: a concurrent update gets
  :class:`~infragym.errors.StackLockedError` naming the lock file and its holder.
- That process is then killed (``SIGKILL``, with the engine it started) in the middle of
  its ``up``: ``infragym stacks list`` shows the stack, its dead lock and the interrupted
  create, and ``infragym stacks destroy`` clears the lock and removes it.
- Ctrl-C (``SIGINT``) during an ``up`` lets the engine finish its in-flight step and
  release its lock; the process exits 130, and the state is clean for ``destroy``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infragym.backends import Change, LayerSpec
from infragym.backends.engine import Engine
from infragym.backends.pulumi import PulumiBackend
from infragym.backends.state import list_locks, parse_state_url
from infragym.cli_stacks import find_stacks, stacks_app
from infragym.errors import ConfigError, EngineError, StackLockedError
from tests.backends import dynlayers as dl
from tests.backends.conftest import TEST_PASSPHRASE, kill_marked
from tests.procs import ManagedProcess, start_process, stop_process

pytestmark = [pytest.mark.engine, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def state(pulumi_env: Path, test_layers: None) -> tuple[str, Path]:
    """The module's state URL and records directory."""
    files = pulumi_env / "files"
    files.mkdir()
    return f"file://{pulumi_env / 'state'}", files


def _stack_info(url: str, deployment: str):
    engine = Engine(parse_state_url(url))
    try:
        (info,) = find_stacks(engine, deployment)
        return info
    finally:
        engine.close()


def _wait_for_lock(url: str, stack: str, proc: ManagedProcess, timeout: float = 90.0) -> list:
    backend = parse_state_url(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        locks = list_locks(backend, stack)
        if locks:
            return locks
        if proc.poll() is not None:
            pytest.fail(f"the update ended before taking its lock\n{proc.describe()}")
        time.sleep(0.2)
    pytest.fail(f"no lock on {stack} after {timeout} s\n{proc.describe()}")


def _start_slow_up(url: str, deployment: str, files: Path, delay: float, mark: str):
    return start_process(
        ["-m", "tests.backends.dynlayers", url, deployment, str(files), str(delay)],
        env={"INFRAGYM_TEST_MARK": mark},
    )


# ------------------------------------------------------------------ failing provider


def test_failing_create_is_clear_leaves_state_consistent_and_recovers(
    state: tuple[str, Path],
) -> None:
    url, files = state
    flag = files / "cloud-is-down"
    flag.touch()
    b = PulumiBackend("flt", url, step_wait=False, progress=False)
    specs = [LayerSpec("test-base", {"dir": str(files), "fail_while": str(flag)})]
    try:
        with pytest.raises(EngineError) as err:
            b.reset(specs)
        message = str(err.value)
        assert "injected failure creating 'flt-base'" in message
        assert "flt.test-base" in message and TEST_PASSPHRASE not in message
        info = _stack_info(url, "flt")
        assert (info.resources, info.pending, info.locks) == (0, [], [])
        assert dl.read_record(files, "flt", "base") is None

        flag.unlink()  # the cloud is back
        # A reset that failed leaves no deployment to step on: reset again.
        with pytest.raises(ConfigError, match="has no deployment"):
            b.apply([])
        calls = b.engine_calls
        b.reset(specs)
        assert b.engine_calls == calls + 1  # the stack is attached already: no refresh
        assert dl.read_record(files, "flt", "base") is not None
        assert b.apply([Change(dl.BASE_REPLICAS, 2)]).engine_calls == 1
        assert dl.read_record(files, "flt", "base")["spec"]["replicas"] == 2
    finally:
        b.close()
    assert dl.read_record(files, "flt", "base") is None


# ------------------------------------------------------------------ lock, kill -9


@pytest.fixture(scope="module")
def slow_up(state: tuple[str, Path]) -> Iterator[tuple[ManagedProcess, list, str]]:
    """Another process running a slow ``up`` of ``lck.test-base``, holding its lock."""
    url, files = state
    mark = uuid.uuid4().hex
    proc = _start_slow_up(url, "lck", files, 120.0, mark)
    try:
        locks = _wait_for_lock(url, "lck.test-base", proc)
        yield proc, locks, mark
    finally:
        stop_process(proc)
        kill_marked(mark)


def test_locked_stack_is_a_clear_error_naming_the_lock(
    state: tuple[str, Path], slow_up: tuple[ManagedProcess, list, str]
) -> None:
    url, files = state
    _proc, locks, _mark = slow_up
    b = PulumiBackend("lck", url, keep=True, step_wait=False, progress=False)
    try:
        with pytest.raises(StackLockedError) as err:
            b.reset([LayerSpec("test-base", {"dir": str(files)})])
    finally:
        b.close()
    message = str(err.value)
    assert "lck.test-base" in message and "locked by another update" in message
    assert locks[0].key in message and f"pid {locks[0].pid}" in message


def test_process_killed_during_up_is_listed_and_destroyed(
    state: tuple[str, Path],
    slow_up: tuple[ManagedProcess, list, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, files = state
    proc, locks, mark = slow_up
    # Kill the driver and the engine it started, by PID, as a crash would.
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for lock in locks:  # the engine's PID is in its lock
        with contextlib.suppress(ProcessLookupError):
            os.kill(lock.pid, signal.SIGKILL)
    kill_marked(mark)  # the provider process the engine left behind

    runner = CliRunner(env={"COLUMNS": "200"})
    out = runner.invoke(stacks_app, ["list", "--backend", url, "--deployment", "lck"])
    assert out.exit_code == 0, out.output
    assert "lck.test-base" in out.output
    assert f"locked by pid {locks[0].pid}" in out.output and "(gone)" in out.output
    assert "1 interrupted operation" in out.output

    # Without --yes it asks first; "no" leaves the stack alone.
    out = runner.invoke(stacks_app, ["destroy", "lck", "--backend", url], input="n\n")
    assert out.exit_code == 1 and "Destroy lck.test-base (0 resources)?" in out.output
    assert "lck" in {i.deployment for i in [_stack_info(url, "lck")]}

    with caplog.at_level(logging.WARNING):
        out = runner.invoke(stacks_app, ["destroy", "lck", "--backend", url, "--yes"])
    assert out.exit_code == 0, out.output
    assert "destroyed and removed lck.test-base" in out.output
    assert "cleared the lock" in caplog.text and "interrupted while creating" in caplog.text
    out = runner.invoke(stacks_app, ["list", "--backend", url, "--deployment", "lck"])
    assert "no infragym stacks" in out.output
    assert dl.read_record(files, "lck", "base") is None


# ------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_during_up_lets_the_engine_stop_cleanly(state: tuple[str, Path]) -> None:
    url, files = state
    mark = uuid.uuid4().hex
    proc = _start_slow_up(url, "int", files, 6.0, mark)
    try:
        _wait_for_lock(url, "int.test-base", proc)
        time.sleep(1.0)  # the create is in flight (the provider sleeps 6 s)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 130, proc.describe()
        out, _err = proc.output()
        assert "INTERRUPTED" in out
    finally:
        stop_process(proc)
        kill_marked(mark)
    info = _stack_info(url, "int")
    # The engine finished the in-flight create, recorded it, and released its lock.
    assert (info.locks, info.pending, info.resources) == ([], [], 1)
    assert dl.read_record(files, "int", "base") is not None
    out = CliRunner().invoke(stacks_app, ["destroy", "int", "--backend", url, "--yes"])
    assert out.exit_code == 0, out.output
    assert dl.read_record(files, "int", "base") is None
