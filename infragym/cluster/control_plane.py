"""A local Kubernetes control plane on 127.0.0.1 whose nodes KWOK simulates.

:class:`LocalCluster` runs, as processes of its own, the binaries that
``scripts/install-kubernetes.sh`` builds from Go modules:

====================  ===============================================================
etcd                  TLS with client certificates, on a loopback port
kube-apiserver        127.0.0.1 only, ``--anonymous-auth=false``, RBAC
kube-controller-      its own client certificate; the node-lifecycle controller stays
manager               on (it lifts the ``not-ready`` taint once KWOK reports Ready)
kube-scheduler        the real default scheduler, its own client certificate
kwok                  manages the Nodes annotated ``kwok.x-k8s.io/node: fake`` and their
                      pods (see :mod:`infragym.cluster.stages`); no containers run
====================  ===============================================================

Everything lives in one directory (default ``~/.infragym/cluster``): the PKI, etcd's
data, one log per component, ``state.json`` (ports and PIDs) and ``kubeconfig`` (mode
0600, an admin client certificate embedded). Processes are started in their own session
and stopped by the PIDs in ``state.json``, each checked to still be the binary that was
started (so a reused PID is never signalled). ``down`` keeps the directory, so a later
``up`` brings back the same cluster (same CA, ports and objects); ``fresh=True`` wipes it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infragym.cluster import stages
from infragym.cluster.api import ApiClient
from infragym.cluster.pki import CLIENTS, Pki, make_pki
from infragym.errors import ClusterError

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
"""The binaries ``scripts/install-kubernetes.sh`` builds that every cluster runs."""

COMPONENTS = (*BINARIES, "node-pools")
"""The control plane's processes, in start order (``node-pools``: the Python controller of
:mod:`infragym.cluster.node_pools`)."""

KUBE_STATE_METRICS = "kube-state-metrics"
"""Started after the control plane when its binary was built (serves on 127.0.0.1)."""

DEFAULT_DIR = Path("~/.infragym/cluster")
"""Where ``infragym cluster up`` keeps the cluster unless told otherwise."""

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
_HOST = "127.0.0.1"
_LOG_TAIL_LINES = 25
_PORT_ATTEMPTS = 3


def cache_root() -> Path:
    """``$INFRAGYM_CACHE`` or ``~/.cache/infragym`` (where the install scripts build)."""
    return Path(os.environ.get("INFRAGYM_CACHE") or "~/.cache/infragym").expanduser()


def find_bin_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The directory with the control plane's binaries.

    Looks at ``explicit``, then ``$INFRAGYM_K8S_DIR``, then the newest
    ``<cache>/k8s-*`` directory built by ``scripts/install-kubernetes.sh``.

    Raises:
        ClusterError: No directory has every binary of :data:`BINARIES`.
    """
    given = explicit or os.environ.get("INFRAGYM_K8S_DIR")
    candidates = (
        [Path(given).expanduser()]
        if given
        else sorted(cache_root().glob("k8s-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    )
    for d in candidates:
        if all(os.access(d / c, os.X_OK) for c in BINARIES):
            return d
    where = candidates[0] if given else cache_root() / "k8s-*"
    missing = [c for c in BINARIES if not (candidates and os.access(candidates[0] / c, os.X_OK))]
    raise ClusterError(
        f"the local Kubernetes binaries are not built ({', '.join(missing)} missing in "
        f"{where}); run `bash scripts/install-kubernetes.sh` (builds them from Go modules "
        "and caches them, about 15 minutes the first time)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind((_HOST, 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
        return True


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_doc(server: str, pki: Pki, stem: str, embed: bool = True) -> dict[str, Any]:
    """A kubeconfig for client identity ``stem`` (see :data:`~infragym.cluster.pki.CLIENTS`)."""
    user = CLIENTS[stem][0]
    if embed:
        cluster = {"server": server, "certificate-authority-data": _b64(pki.ca)}
        creds = {
            "client-certificate-data": _b64(pki.cert(stem)),
            "client-key-data": _b64(pki.key(stem)),
        }
    else:
        cluster = {"server": server, "certificate-authority": str(pki.ca)}
        creds = {"client-certificate": str(pki.cert(stem)), "client-key": str(pki.key(stem))}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "infragym-local", "cluster": cluster}],
        "users": [{"name": user, "user": creds}],
        "contexts": [
            {"name": "infragym-local", "context": {"cluster": "infragym-local", "user": user}}
        ],
        "current-context": "infragym-local",
    }


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _alive(pid: int, binary: str) -> bool:
    """Whether ``pid`` runs ``binary`` (and is not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap our own child
        return False
    cmd = _proc_cmdline(pid)
    return bool(cmd) and cmd[0] == binary


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class ClusterStatus:
    """What :meth:`LocalCluster.status` reports.

    Attributes:
        directory: The cluster's directory.
        running: Every component runs and the API server answers ``/readyz``.
        components: Component → ``"running (pid N)"`` or ``"stopped"``.
        server: The API server URL (once the cluster has been started).
        kubeconfig: The kubeconfig path (once written).
        nodes_ready: Ready nodes, when the API server answers.
        nodes: All nodes, when the API server answers.
        kube_state_metrics_url: Where kube-state-metrics serves its series, when it runs.
    """

    directory: Path
    running: bool
    components: dict[str, str] = field(default_factory=dict)
    server: str | None = None
    kubeconfig: Path | None = None
    nodes_ready: int | None = None
    nodes: int | None = None
    kube_state_metrics_url: str | None = None


class LocalCluster:
    """A local control plane in ``directory``.

    Args:
        directory: Where its PKI, data, logs, state and kubeconfig live.
        bin_dir: The binaries (default: :func:`find_bin_dir`).

    Example::

        cluster = LocalCluster("/tmp/c1")
        cluster.up()
        print(cluster.kubeconfig_path.read_text())
        cluster.down()
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.dir = Path(directory or DEFAULT_DIR).expanduser().resolve()
        self._bin_dir = Path(bin_dir).expanduser() if bin_dir else None
        self._procs: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------------ paths

    @property
    def state_path(self) -> Path:
        """``state.json``: ports, PIDs, binaries."""
        return self.dir / "state.json"

    @property
    def kubeconfig_path(self) -> Path:
        """The admin kubeconfig (mode 0600)."""
        return self.dir / "kubeconfig"

    @property
    def pki(self) -> Pki:
        """The cluster's PKI files."""
        return Pki(self.dir / "pki")

    def log_path(self, component: str) -> Path:
        """The log file of ``component``."""
        return self.dir / "logs" / f"{component}.log"

    def bin_dir(self) -> Path:
        """The binaries' directory (found once)."""
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        _write_private(tmp, json.dumps(state, indent=2))
        tmp.replace(self.state_path)

    @property
    def server(self) -> str:
        """The API server URL.

        Raises:
            ClusterError: The cluster was never started in this directory.
        """
        port = self._state().get("ports", {}).get("apiserver")
        if not port:
            raise ClusterError(f"no cluster has been started in {self.dir} (`infragym cluster up`)")
        return f"https://{_HOST}:{port}"

    def kubeconfig(self) -> str:
        """The admin kubeconfig's text (it holds a client key: keep it private).

        Raises:
            ClusterError: The cluster was never started in this directory.
        """
        try:
            return self.kubeconfig_path.read_text()
        except OSError:
            raise ClusterError(
                f"no kubeconfig in {self.dir}: start the cluster with `infragym cluster up`"
            ) from None

    def client(self, stem: str = "admin", timeout: float = 10.0) -> ApiClient:
        """An API client as identity ``stem`` (default: the admin)."""
        pki = self.pki
        return ApiClient(self.server, pki.ca, pki.cert(stem), pki.key(stem), timeout=timeout)

    # ------------------------------------------------------------------ status

    def _running(self, state: dict[str, Any]) -> dict[str, int]:
        out = {}
        for name, proc in (state.get("processes") or {}).items():
            if _alive(int(proc["pid"]), proc["binary"]):
                out[name] = int(proc["pid"])
        return out

    def _readyz(self, timeout: float = 2.0) -> bool:
        try:
            return self.client(timeout=timeout).request("GET", "/readyz") == "ok"
        except ClusterError:
            return False

    def status(self) -> ClusterStatus:
        """Which components run, whether the API server is ready, and the nodes."""
        state = self._state()
        running = self._running(state)
        comps = {
            c: f"running (pid {running[c]})" if c in running else "stopped" for c in COMPONENTS
        }
        st = ClusterStatus(self.dir, False, comps)
        if state.get("ports"):
            st.server = self.server
        if self.kubeconfig_path.exists():
            st.kubeconfig = self.kubeconfig_path
        port = (state.get("ports") or {}).get(KUBE_STATE_METRICS)
        if KUBE_STATE_METRICS in running and port:
            st.kube_state_metrics_url = f"http://{_HOST}:{port}/metrics"
        if all(c in running for c in COMPONENTS) and self._readyz():
            st.running = True
            with contextlib.suppress(ClusterError):
                nodes = self.client(timeout=5).list("nodes")
                st.nodes = len(nodes)
                st.nodes_ready = sum(node_ready(n) for n in nodes)
        return st

    # ------------------------------------------------------------------ up / down

    def up(self, timeout: float = 90.0, fresh: bool = False) -> ClusterStatus:
        """Start the control plane (or find it running) and wait until it serves.

        Args:
            timeout: Seconds for the whole start-up.
            fresh: Wipe the directory first (new CA, ports and an empty etcd).

        Raises:
            ClusterError: A binary is missing, or a component exited or did not become
                ready in time; the message names it and shows the end of its log. What
                had started is stopped again.
        """
        bin_dir = self.bin_dir()
        state = self._state()
        if not fresh and state and self.status().running:
            return self.status()
        self.down()  # whatever is left of an earlier start
        if fresh and self.dir.exists():
            shutil.rmtree(self.dir)
        for attempt in range(_PORT_ATTEMPTS):
            try:
                return self._up(bin_dir, timeout)
            except ClusterError as exc:
                # A port found free was taken by another process before the component
                # bound it: try again on fresh ports (the kubeconfig is rewritten).
                if "address already in use" not in str(exc) or attempt == _PORT_ATTEMPTS - 1:
                    raise
                state = self._state()
                state["ports"] = {}
                self._save(state)
        raise AssertionError("unreachable")

    def _up(self, bin_dir: Path, timeout: float) -> ClusterStatus:
        state = self._state()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        (self.dir / "logs").mkdir(exist_ok=True)
        if not self.pki.ca.exists():
            make_pki(self.pki.dir)
        ports = dict(state.get("ports") or {})
        for name in (
            "etcd",
            "etcd-peer",
            "apiserver",
            "controller-manager",
            "scheduler",
            "kwok",
            KUBE_STATE_METRICS,
            "kube-state-metrics-telemetry",
        ):
            if not ports.get(name) or not _port_free(int(ports[name])):
                ports[name] = free_port()
        state = {"ports": ports, "bin_dir": str(bin_dir), "processes": {}}
        self._save(state)
        server = f"https://{_HOST}:{ports['apiserver']}"
        for stem in ("kube-controller-manager", "kube-scheduler", "kwok", "kube-state-metrics"):
            _write_private(
                self.dir / f"{stem}.kubeconfig",
                yaml.safe_dump(kubeconfig_doc(server, self.pki, stem, embed=False)),
            )
        _write_private(
            self.kubeconfig_path, yaml.safe_dump(kubeconfig_doc(server, self.pki, "admin"))
        )
        (self.dir / "kwok.yaml").write_text(stages.kwok_config(bin_dir))

        deadline = time.monotonic() + timeout
        try:
            self._start(state, "etcd", self._etcd_args(ports))
            self._wait(state, "etcd", self._etcd_healthy, deadline)
            self._start(state, "kube-apiserver", self._apiserver_args(ports))
            self._wait(state, "kube-apiserver", self._readyz, deadline)
            self._start(state, "kube-controller-manager", self._kcm_args(ports))
            self._start(state, "kube-scheduler", self._scheduler_args(ports))
            self._start(state, "kwok", self._kwok_args(ports))
            self._wait(state, "kube-scheduler", lambda: self._healthz(ports["scheduler"]), deadline)
            self._wait(state, "kwok", lambda: self._healthz(ports["kwok"], tls=False), deadline)
            # The service-account controller has run once the default namespace has its
            # ServiceAccount; pods are admitted only then.
            self._wait(
                state,
                "kube-controller-manager",
                lambda: (
                    self._healthz(ports["controller-manager"])
                    and self.client().get("serviceaccounts", "default", "default")
                ),
                deadline,
            )
            pki = self.pki
            self._start(
                state,
                "node-pools",
                [
                    "-m",
                    "infragym.cluster.node_pools",
                    f"--server={server}",
                    f"--ca={pki.ca}",
                    f"--cert={pki.cert('node-pools')}",
                    f"--key={pki.key('node-pools')}",
                ],
                binary=sys.executable,
            )
            self._wait(state, "node-pools", self._pools_served, deadline)
            if os.access(bin_dir / KUBE_STATE_METRICS, os.X_OK):
                self._start(state, KUBE_STATE_METRICS, self._ksm_args(ports))
                url = f"http://{_HOST}:{ports[KUBE_STATE_METRICS]}/metrics"
                self._wait(state, KUBE_STATE_METRICS, lambda: _http_ok(url), deadline)
        except BaseException:
            self.down()
            raise
        return self.status()

    def down(self, timeout: float = 15.0) -> list[str]:
        """Stop every component this directory's ``state.json`` lists, by PID.

        Each PID is signalled only while it still runs the binary that was started
        (SIGTERM, then SIGKILL after ``timeout`` seconds). Data and PKI are kept.

        Returns:
            The components that were running and are now stopped.
        """
        state = self._state()
        procs = state.get("processes") or {}
        stopped = []
        for name in (KUBE_STATE_METRICS, *reversed(COMPONENTS)):
            proc = procs.get(name)
            if not proc:
                continue
            pid, binary = int(proc["pid"]), proc["binary"]
            popen = self._procs.pop(name, None)
            if popen is not None and popen.pid == pid:
                # Our own child: its Popen is the truth (no PID reuse while unreaped).
                if popen.poll() is None:
                    popen.terminate()
                    try:
                        popen.wait(timeout=timeout)
                    except subprocess.TimeoutExpired:
                        popen.kill()
                        popen.wait(timeout=5)
                    stopped.append(name)
            elif _alive(pid, binary):
                self._terminate(pid, binary, timeout)
                stopped.append(name)
        if state:
            state["processes"] = {}
            self._save(state)
        return stopped

    @staticmethod
    def _terminate(pid: int, binary: str, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        while time.monotonic() < end and _alive(pid, binary):
            time.sleep(0.1)
        if _alive(pid, binary):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            end = time.monotonic() + 5
            while time.monotonic() < end and _alive(pid, binary):
                time.sleep(0.05)

    def _start(
        self, state: dict[str, Any], name: str, args: list[str], binary: str | None = None
    ) -> None:
        env = None
        if binary == sys.executable:  # the controller: the infragym this process runs
            here = str(Path(__file__).resolve().parents[2])
            paths = [here, os.environ.get("PYTHONPATH", "")]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        binary = binary or str(Path(state["bin_dir"]) / name)
        log = self.log_path(name)
        with open(log, "ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
            out.flush()
            popen = subprocess.Popen(
                [binary, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
                start_new_session=True,
            )
        self._procs[name] = popen
        state["processes"][name] = {"pid": popen.pid, "binary": binary, "log": str(log)}
        self._save(state)

    def _wait(self, state: dict[str, Any], name: str, ready: Any, deadline: float) -> None:
        """Wait for ``ready()`` while every started component keeps running."""
        while True:
            for comp, proc in state["processes"].items():
                popen = self._procs.get(comp)
                if popen is not None:  # our child: its exit status is the truth
                    code = popen.poll()
                    dead = code is not None
                else:
                    code, dead = None, not _alive(int(proc["pid"]), proc["binary"])
                if dead:
                    raise ClusterError(self._died(comp, code))
            with contextlib.suppress(ClusterError):
                if ready():
                    return
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{name} did not become ready in time; its log is {self.log_path(name)}:\n"
                    + log_tail(self.log_path(name))
                )
            time.sleep(0.1)

    def _died(self, comp: str, code: int | None) -> str:
        how = f"exited with code {code}" if code is not None else "stopped"
        return (
            f"the local cluster's {comp} {how} during start-up; its log is "
            f"{self.log_path(comp)}:\n{log_tail(self.log_path(comp))}"
        )

    # ------------------------------------------------------------------ readiness

    def _etcd_healthy(self) -> bool:
        pki = self.pki
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(
            str(pki.cert("apiserver-etcd-client")), str(pki.key("apiserver-etcd-client"))
        )
        port = self._state()["ports"]["etcd"]
        try:
            with urllib.request.urlopen(
                f"https://{_HOST}:{port}/health", timeout=2, context=ctx
            ) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def _pools_served(self) -> bool:
        """Whether the node-pool controller's CustomResourceDefinition is served."""
        from infragym.cluster.node_pools import _pools_path

        return self.client().request("GET", _pools_path()) is not None

    @staticmethod
    def _healthz(port: int, tls: bool = True) -> bool:
        """A component's own ``/healthz`` (always allowed without credentials)."""
        ctx = None
        if tls:  # self-signed serving certificates of their own, on loopback
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        scheme = "https" if tls else "http"
        try:
            with urllib.request.urlopen(
                f"{scheme}://{_HOST}:{port}/healthz", timeout=2, context=ctx
            ) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    # ------------------------------------------------------------------ arguments

    def _etcd_args(self, ports: dict[str, int]) -> list[str]:
        pki = self.pki
        client = f"https://{_HOST}:{ports['etcd']}"
        peer = f"http://{_HOST}:{ports['etcd-peer']}"
        return [
            "--name=infragym",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=infragym={peer}",
            f"--cert-file={pki.cert('etcd-server')}",
            f"--key-file={pki.key('etcd-server')}",
            f"--trusted-ca-file={pki.ca}",
            "--client-cert-auth=true",
            "--auto-compaction-retention=1",
            "--quota-backend-bytes=2147483648",
            "--unsafe-no-fsync=true",  # a throwaway local cluster: speed over durability
            "--log-level=warn",
        ]

    def _apiserver_args(self, ports: dict[str, int]) -> list[str]:
        pki = self.pki
        return [
            f"--etcd-servers=https://{_HOST}:{ports['etcd']}",
            f"--etcd-cafile={pki.ca}",
            f"--etcd-certfile={pki.cert('apiserver-etcd-client')}",
            f"--etcd-keyfile={pki.key('apiserver-etcd-client')}",
            f"--bind-address={_HOST}",
            f"--advertise-address={_HOST}",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki.cert('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={pki.ca}",
            f"--service-account-key-file={pki.cert('service-account')}",
            f"--service-account-signing-key-file={pki.key('service-account')}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            f"--cert-dir={pki.dir}",
            "--v=1",
        ]

    def _kcm_args(self, ports: dict[str, int]) -> list[str]:
        pki = self.pki
        kc = self.dir / "kube-controller-manager.kubeconfig"
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--bind-address={_HOST}",
            f"--secure-port={ports['controller-manager']}",
            f"--cert-dir={self.dir / 'pki' / 'kcm-serving'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.key('service-account')}",
            f"--root-ca-file={pki.ca}",
            f"--cluster-signing-cert-file={pki.ca}",
            f"--cluster-signing-key-file={pki.key('ca')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
            "--v=1",
        ]

    def _scheduler_args(self, ports: dict[str, int]) -> list[str]:
        kc = self.dir / "kube-scheduler.kubeconfig"
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            f"--bind-address={_HOST}",
            f"--secure-port={ports['scheduler']}",
            f"--cert-dir={self.dir / 'pki' / 'scheduler-serving'}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
            "--v=1",
        ]

    def _ksm_args(self, ports: dict[str, int]) -> list[str]:
        return [
            f"--kubeconfig={self.dir / 'kube-state-metrics.kubeconfig'}",
            f"--host={_HOST}",
            f"--port={ports[KUBE_STATE_METRICS]}",
            f"--telemetry-host={_HOST}",
            f"--telemetry-port={ports['kube-state-metrics-telemetry']}",
        ]

    def _kwok_args(self, ports: dict[str, int]) -> list[str]:
        return [
            f"--kubeconfig={self.dir / 'kwok.kubeconfig'}",
            f"--config={self.dir / 'kwok.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={stages.MANAGED_ANNOTATION}=fake",
            f"--server-address={_HOST}:{ports['kwok']}",
            "--node-lease-duration-seconds=40",
            f"--cidr={POD_CIDR}",
            "--node-ip=10.0.0.1",
        ]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


def node_ready(node: dict[str, Any]) -> bool:
    """Whether a Node object's Ready condition is True."""
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False
