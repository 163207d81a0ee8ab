"""The Pulumi engine as infragym drives it: the CLI, stacks, Ctrl-C, and error mapping.

Shared by :class:`~infragym.backends.pulumi.PulumiBackend` and ``infragym stacks``.

- :func:`find_cli` locates a ``pulumi`` binary: ``$PULUMI_CLI``, then ``PATH``, then the
  offline build cached by ``scripts/install-pulumi-cli.sh``
  (``~/.cache/infragym/pulumi-v<sdk version>/``).
- :class:`EngineCommand` runs it. It hands credentials to the process at start (they are
  in no workspace object, so no ``repr`` or log can show them), and runs the engine in
  its own process group so that a Ctrl-C reaches it exactly once, from us: the first
  Ctrl-C asks the engine to stop after its in-flight operations (which leaves a
  consistent state and releases the stack's lock), a second one stops it at once.
- :func:`map_error` turns the Automation API's exceptions into infragym's, keeping the
  engine's message (its error lines and diagnostics) but never a secret.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infragym.backends.state import (
    PROJECT,
    StateBackend,
    list_locks,
    passphrase_env,
    scrub,
)
from infragym.errors import (
    ConfigError,
    EngineError,
    InfraGymError,
    StackLockedError,
    StateBackendError,
)

log = logging.getLogger(__name__)

_MAX_MESSAGE = 6000


def sdk_version() -> str:
    """The installed Pulumi Python SDK's version."""
    return importlib.metadata.version("pulumi")


def find_cli() -> str:
    """The path of the ``pulumi`` CLI to use.

    Raises:
        ConfigError: No CLI is found; the message says how to get one.
    """
    explicit = os.environ.get("PULUMI_CLI")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ConfigError(f"PULUMI_CLI={explicit!r} is not an executable file")
        return os.path.abspath(explicit)
    found = shutil.which("pulumi")
    if found:
        return os.path.abspath(found)
    cache = Path(os.environ.get("INFRAGYM_CACHE", "~/.cache/infragym")).expanduser()
    cached = cache / f"pulumi-v{sdk_version()}" / "pulumi"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    raise ConfigError(
        f"the Pulumi CLI (v{sdk_version()}, the pulumi SDK's version) was not found on "
        f"PATH nor in {cached.parent}: install it from https://www.pulumi.com/docs/install/, "
        "or run `bash scripts/install-pulumi-cli.sh` in a clone of the infragym repository "
        "(it builds the CLI from Go modules, offline), or set PULUMI_CLI to a pulumi binary"
    )


def _command_class() -> type:
    """:class:`EngineCommand`, defined lazily so importing this module stays cheap."""
    global _ENGINE_COMMAND
    if _ENGINE_COMMAND is not None:
        return _ENGINE_COMMAND

    from pulumi.automation import PulumiCommand
    from pulumi.automation._cmd import CommandResult
    from pulumi.automation.errors import create_command_error
    from semver import VersionInfo

    class EngineCommand(PulumiCommand):
        """A :class:`pulumi.automation.PulumiCommand` for one binary (see module doc).

        Commands may run in several threads at once (the pulumi backend's background
        updates): each thread's engine process is tracked, so that :meth:`stop` can ask
        one to stop from another thread (a signal reaches the main thread only).

        Attributes:
            last_pid: PID of the last engine process started.
            interrupted: Whether the last command was interrupted by Ctrl-C.
        """

        def __init__(self, path: str, secret_env: Mapping[str, str] | None = None) -> None:
            # PulumiCommand.__init__ would look for <root>/bin/pulumi; run the binary given.
            self.command = path
            env = {**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"}
            try:
                out = subprocess.check_output([path, "version"], env=env, text=True).strip()
            except (OSError, subprocess.CalledProcessError) as exc:
                raise ConfigError(f"cannot run the Pulumi CLI {path}: {exc}") from None
            try:
                self.version = VersionInfo.parse(out.removeprefix("v"))
            except ValueError:
                raise ConfigError(
                    f"the Pulumi CLI {path} reports version {out!r}; a CLI built without a "
                    "version cannot run inline programs (scripts/install-pulumi-cli.sh sets "
                    "it)"
                ) from None
            self._secret_env = dict(secret_env or {})
            self.last_pid: int | None = None
            self.interrupted = False
            self._procs_lock = threading.Lock()
            self._procs: dict[int, subprocess.Popen[str]] = {}
            self._stopped: set[int] = set()

        def __repr__(self) -> str:
            return f"EngineCommand({self.command!r}, version={self.version})"

        def run(
            self,
            args: list[str],
            cwd: str,
            additional_env: Mapping[str, str],
            on_output: Callable[[str], Any] | None = None,
            on_error: Callable[[str], Any] | None = None,
        ) -> Any:
            """Run one CLI command (as the SDK does), forwarding Ctrl-C to the engine once."""
            if "--non-interactive" not in args:
                args.insert(0, "--non-interactive")
            env = {
                **os.environ,
                **additional_env,
                **self._secret_env,
                "PULUMI_AUTOMATION_API": "true",
                "PULUMI_SKIP_UPDATE_CHECK": "true",
            }
            env["PATH"] = os.pathsep.join([os.path.dirname(self.command), env.get("PATH", "")])
            out_chunks: list[str] = []
            err_chunks: list[str] = []

            def consume(stream: Any, callback: Any, chunks: list[str]) -> None:
                for line in iter(stream.readline, ""):
                    line = line.rstrip()
                    if callback:
                        callback(line)
                    chunks.append(line)
                stream.close()

            interrupted = False
            thread = threading.get_ident()
            with subprocess.Popen(
                [self.command, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,
            ) as proc:
                self.last_pid = proc.pid
                with self._procs_lock:
                    self._procs[thread] = proc
                    self._stopped.discard(thread)
                readers = [
                    threading.Thread(target=consume, args=(proc.stdout, on_output, out_chunks)),
                    threading.Thread(target=consume, args=(proc.stderr, on_error, err_chunks)),
                ]
                for t in readers:
                    t.daemon = True
                    t.start()
                interrupts = 0
                while True:
                    try:
                        proc.wait()
                        break
                    except KeyboardInterrupt:
                        interrupts += 1
                        interrupted = True
                        if interrupts == 1:
                            log.warning(
                                "interrupted: the engine stops after its in-flight operations "
                                "(Ctrl-C again to stop it now)"
                            )
                            proc.send_signal(signal.SIGINT)
                        elif interrupts == 2:
                            log.warning("interrupted again: stopping the engine now")
                            proc.send_signal(signal.SIGINT)
                        else:
                            proc.kill()
                for t in readers:
                    t.join(timeout=30)
                with self._procs_lock:
                    self._procs.pop(thread, None)
                    if thread in self._stopped:
                        self._stopped.discard(thread)
                        interrupted = True
            self.interrupted = interrupted
            result = CommandResult(
                stdout="\n".join(out_chunks), stderr="\n".join(err_chunks), code=proc.returncode
            )
            if interrupted:
                raise KeyboardInterrupt
            if proc.returncode != 0:
                raise create_command_error(result)
            return result

        def running(self, thread: int) -> int | None:
            """The PID of the engine process that ``thread`` runs now, if any."""
            with self._procs_lock:
                proc = self._procs.get(thread)
                return None if proc is None else proc.pid

        def stop(self, thread: int, force: bool = False) -> bool:
            """Ask the engine process that ``thread`` runs to stop, as Ctrl-C would.

            Without ``force``, the engine gets ``SIGINT``: it finishes its in-flight
            resource operations, records them and releases the stack's lock (a second
            call stops it sooner). With ``force``, the engine and the plugins it started
            are killed (:func:`kill_session`), which leaves the lock behind for
            :meth:`Engine.clear_stale_locks`. Either way the command raises
            ``KeyboardInterrupt`` in ``thread``.

            Returns:
                Whether an engine process was running in ``thread``.
            """
            with self._procs_lock:
                proc = self._procs.get(thread)
                if proc is None or proc.poll() is not None:
                    return False
                self._stopped.add(thread)
                try:
                    if force:
                        kill_session(proc.pid)
                    else:
                        proc.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    return False
                return True

    _ENGINE_COMMAND = EngineCommand
    return EngineCommand


_ENGINE_COMMAND: type | None = None


def session_pids(sid: int) -> list[int]:
    """PIDs of the live processes in session ``sid`` (Linux ``/proc``; empty elsewhere)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command (in parentheses, which may hold spaces): state, ppid,
        # pgrp, session, ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            found.append(int(entry))
    return found


def kill_session(pid: int) -> list[int]:
    """``SIGKILL`` an engine started in a session of its own, and every process in it.

    The engine is the session's leader (``start_new_session``); it puts each plugin it
    starts (providers, the dynamic-provider host) in a process group of its own, but in
    its session. Killing the engine's group alone would leave those running, orphaned,
    still doing what they were asked. So every process of the session is killed.

    Returns:
        The PIDs signalled.
    """
    pids = [pid, *(p for p in session_pids(pid) if p != pid)]
    killed = []
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
            killed.append(p)
        except ProcessLookupError:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return killed


def make_command(path: str | None = None, secret_env: Mapping[str, str] | None = None) -> Any:
    """An :class:`EngineCommand` for ``path`` (default: :func:`find_cli`)."""
    return _command_class()(path or find_cli(), secret_env)


class Engine:
    """Opens the stacks of one state backend with one CLI and one work directory.

    Args:
        backend: The state backend.
        passphrase_file: Generated passphrase file used when no passphrase is set.
        env: Extra (non-secret) environment for the engine.
        cli: The ``pulumi`` binary (default: :func:`find_cli`).
        new_passphrase: Generate the passphrase file when missing (False for commands
            that only inspect or remove existing stacks).
    """

    def __init__(
        self,
        backend: StateBackend,
        passphrase_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        cli: str | None = None,
        new_passphrase: bool = True,
    ) -> None:
        self.backend = backend
        self.env: dict[str, str] = {
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            **backend.env(),
            **passphrase_env(passphrase_file, generate=new_passphrase),
            **dict(env or {}),
        }
        self.env.setdefault("PULUMI_PYTHON_CMD", _python())
        self.command = make_command(cli, backend.secret_env())
        self.work_dir = tempfile.mkdtemp(prefix="infragym-pulumi-")

    def options(self) -> Any:
        """``LocalWorkspaceOptions`` for the ``infragym`` project on this backend."""
        from pulumi import automation as auto

        return auto.LocalWorkspaceOptions(
            work_dir=self.work_dir,
            project_settings=auto.ProjectSettings(
                name=PROJECT,
                runtime="python",
                backend=auto.ProjectBackend(self.backend.url),
            ),
            env_vars=dict(self.env),
            pulumi_command=self.command,
        )

    def stack(
        self, name: str, program: Callable[[], None], create: bool = True
    ) -> tuple[Any, bool]:
        """Select stack ``name`` (with an inline program), creating it if missing.

        Returns:
            The stack, and whether it existed before.

        Raises:
            StateBackendError: The stack does not exist and ``create`` is false, or the
                backend refused.
        """
        from pulumi import automation as auto

        try:
            try:
                stack = auto.select_stack(
                    stack_name=name, project_name=PROJECT, program=program, opts=self.options()
                )
                return stack, True
            except auto.StackNotFoundError:
                if not create:
                    raise
            stack = auto.create_stack(
                stack_name=name, project_name=PROJECT, program=program, opts=self.options()
            )
            return stack, False
        except auto.CommandError as exc:
            raise map_error(exc, name, "select", self.backend) from None

    def workspace(self) -> Any:
        """A ``LocalWorkspace`` (for listing and removing stacks)."""
        from pulumi import automation as auto

        opts = self.options()
        return auto.LocalWorkspace(**opts.__dict__)

    def locks(self, stack: str) -> list[Any]:
        """The engine's lock files on ``stack``."""
        return list_locks(self.backend, stack)

    def clear_stale_locks(self, stack: Any) -> list[Any]:
        """Cancel (unlock) ``stack`` when every lock on it belongs to a dead local process.

        Returns:
            The locks that were cleared (empty when none, or when a holder is alive or on
            another host: those are left alone).
        """
        locks = self.locks(stack.name)
        if not locks or not all(lock.stale for lock in locks):
            return []
        stack.cancel()
        for lock in locks:
            log.warning("cleared the stale lock %s", lock.describe())
        return locks

    def close(self) -> None:
        """Remove the work directory."""
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _python() -> str:
    import sys

    return sys.executable


def _engine_message(exc: Exception) -> str:
    """The useful part of a CLI failure: its error lines and diagnostics, scrubbed."""
    text = str(exc)
    # CommandError's text is "\n code: N\n stdout: ...\n stderr: ...".
    code_out, _, err = text.partition("\n stderr: ")
    _, _, out = code_out.partition("\n stdout: ")
    lines: list[str] = []
    if "Diagnostics:" in out:
        diag = out.split("Diagnostics:", 1)[1]
        for stop in ("\nOutputs:", "\nResources:", "\nDuration:"):
            diag = diag.split(stop, 1)[0]
        lines.extend(line.rstrip() for line in diag.strip("\n").splitlines() if line.strip())
    lines.extend(
        line.rstrip()
        for line in err.splitlines()
        if line.strip() and not line.startswith("SDK ") and "supported checksum" not in line
    )
    if not lines:
        lines = [line for line in out.splitlines() if "error" in line.lower()][-20:]
    message = "\n".join(lines).strip() or text.strip()
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "\n[...]"
    return scrub(message)


_BACKEND_MARKERS = (
    "NoSuchBucket",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "could not log in",
    "failed to login",
    "unable to open bucket",
    "incorrect passphrase",
    "passphrase must be set",
    "PULUMI_CONFIG_PASSPHRASE",
    "secrets manager",
)


def map_error(
    exc: Exception, stack: str, action: str, backend: StateBackend | None = None
) -> InfraGymError:
    """An infragym error for an Automation API exception, with the engine's message.

    - ``ConcurrentUpdateError`` → :class:`StackLockedError` naming the lock file(s) and
      their holder (PID, host, time);
    - ``StackNotFoundError`` and failures to reach or decrypt the state →
      :class:`StateBackendError`;
    - any other ``CommandError`` → :class:`EngineError`.

    Secrets (passphrases, tokens, keys) are scrubbed from the message.
    """
    from pulumi import automation as auto

    where = f" in {backend.display}" if backend else ""
    message = _engine_message(exc)
    if isinstance(exc, auto.ConcurrentUpdateError):
        locks: list[str] = []
        if backend is not None:
            try:
                locks = [lock.describe() for lock in list_locks(backend, stack)]
            except InfraGymError:
                locks = []
        held = "; ".join(locks) if locks else message
        return StackLockedError(
            f"stack {stack!r}{where} is locked by another update: {held}. Wait for it to "
            f"finish; if its process is gone, `infragym stacks destroy` (or `pulumi cancel "
            f"-s {stack}`) clears the lock.\n{message}"
        )
    if isinstance(exc, auto.StackNotFoundError):
        return StateBackendError(f"no stack {stack!r}{where}: {message}")
    if isinstance(exc, auto.CommandError):
        if any(marker in message for marker in _BACKEND_MARKERS):
            hint = ""
            if "passphrase" in message.lower():
                hint = (
                    " (the stack's secrets were encrypted with another passphrase: set "
                    "PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE to the one used "
                    "when it was created)"
                )
            return StateBackendError(
                f"pulumi {action} of stack {stack!r}{where} failed on the state backend"
                f"{hint}:\n{message}"
            )
        return EngineError(f"pulumi {action} of stack {stack!r}{where} failed:\n{message}")
    return EngineError(scrub(f"pulumi {action} of stack {stack!r}{where} failed: {exc}"))
