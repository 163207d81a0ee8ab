"""Heater pods that query PostgreSQL: the twin against a discrete-event simulation.

The reference is a simulation of the real arrangement, not of the twin's formulas: each
pod is one FIFO worker that burns its CPU time, then sends its query to the database (a
FIFO queue of its own) and waits for the answer before taking the next request.
"""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np
import pytest

from infragym.apps.workload import CpuWork, constant
from infragym.twin.model import TwinParams
from infragym.twin.twin import Twin
from tests.twin.graphs import HELM_RELEASE, web_app


def simulate_pods_and_database(
    pods: int, lam: float, cpu_s: float, query_s: float, n: int, seed: int
) -> np.ndarray:
    """Response times of ``pods`` one-worker pods sharing one single-core database.

    Poisson arrivals at ``lam``, each sent to a pod at random (kube-proxy); exponential
    CPU time (mean ``cpu_s``) and query time (mean ``query_s``).
    """
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    target = rng.integers(pods, size=n)
    cpu = rng.exponential(cpu_s, n)
    query = rng.exponential(query_s, n)
    events: list[tuple[float, int, str, int]] = []  # (time, order, kind, request)
    order = 0

    def push(time: float, kind: str, request: int) -> None:
        nonlocal order
        heapq.heappush(events, (time, order, kind, request))
        order += 1

    for i in range(n):
        push(float(arrivals[i]), "arrive", i)
    pod_queue: list[deque[int]] = [deque() for _ in range(pods)]
    pod_busy = [False] * pods
    db_queue: deque[int] = deque()
    db_busy = False
    done = np.empty(n)

    def start_pod(p: int, now: float) -> None:
        if pod_queue[p] and not pod_busy[p]:
            request = pod_queue[p].popleft()
            pod_busy[p] = True
            push(now + cpu[request], "burnt", request)

    while events:
        now, _, kind, request = heapq.heappop(events)
        if kind == "arrive":
            pod_queue[target[request]].append(request)
            start_pod(target[request], now)
        elif kind == "burnt":  # the query goes to the database
            db_queue.append(request)
        else:  # "answered": the database is free, the pod's worker too
            db_busy = False
            done[request] = now
            pod_busy[target[request]] = False
            start_pod(target[request], now)
        if db_queue and not db_busy:
            db_busy = True
            nxt = db_queue.popleft()
            push(now + query[nxt], "answered", nxt)
    return (done - arrivals)[n // 10 :]  # drop the warm-up


def _twin(replicas: int, rate: float, cpu_ms: float, db_cpu: str, query_ms: float) -> Twin:
    work = CpuWork(mean_ms=cpu_ms, db_query="SELECT 1", timeout_s=30.0)
    graph = web_app(
        replicas=replicas,
        work=work,
        schedule=constant(rate),
        node_size="s-8vcpu-16gb",
        database_cpu=db_cpu,
    )
    return Twin(graph, params=TwinParams(noise=False, db_query_ms=query_ms))


def test_latency_matches_a_simulation_of_pods_and_database():
    # 4 pods at 30 req/s each, 10 ms of CPU; the database at 120 queries/s of 4 ms (48 %).
    twin = _twin(replicas=4, rate=120.0, cpu_ms=10.0, db_cpu="1", query_ms=4.0)
    m = twin.advance(30.0)
    sim = np.sort(simulate_pods_and_database(4, 120.0, 0.010, 0.004, 200_000, seed=7))
    for q, name in ((0.5, "latency_p50"), (0.95, "latency_p95"), (0.99, "latency_p99")):
        assert m[name] == pytest.approx(float(sim[int(q * len(sim))]), rel=0.15), name
    assert m["error_ratio"] == pytest.approx(0.0, abs=1e-3)


def test_database_adds_its_response_time():
    # The same pods without the database's response time in the way are faster.
    with_db = _twin(replicas=4, rate=120.0, cpu_ms=10.0, db_cpu="1", query_ms=4.0)
    work = CpuWork(mean_ms=10.0, timeout_s=30.0)  # no db_query: the heater never queries
    without = Twin(
        web_app(replicas=4, work=work, schedule=constant(120.0), node_size="s-8vcpu-16gb"),
        params=TwinParams(noise=False),
    )
    assert with_db.advance(30.0)["latency_p50"] > 1.5 * without.advance(30.0)["latency_p50"]


def test_an_overloaded_database_caps_throughput():
    # 250m of CPU at 2 ms a query: 125 queries/s, whatever the pods could do.
    twin = _twin(replicas=8, rate=200.0, cpu_ms=5.0, db_cpu="250m", query_ms=2.0)
    m = twin.advance(30.0)
    assert m["error_ratio"] == pytest.approx(1.0 - 125.0 / 200.0, rel=0.03)
    assert m["request_rate"] == pytest.approx(200.0, rel=0.01)
    # The database, not the pods' CPU, is the limit: busy CPU is 125 req/s x 5 ms.
    assert m["cpu_utilisation_requests"] == pytest.approx(125.0 * 0.005 / (8 * 0.25), rel=0.03)


def test_overload_is_solved_for_each_set_of_pods():
    # Same database, same load, pods of different speeds: each run passes what the
    # database does (the memo of database response times must not mix them up).
    for cpu_ms in (5.0, 10.0):
        twin = _twin(replicas=8, rate=200.0, cpu_ms=cpu_ms, db_cpu="250m", query_ms=2.0)
        assert twin.advance(30.0)["error_ratio"] == pytest.approx(1.0 - 125.0 / 200.0, rel=0.03)


def test_release_is_modelled_and_heater_without_dsn_does_not_query():
    twin = _twin(replicas=2, rate=20.0, cpu_ms=10.0, db_cpu="500m", query_ms=4.0)
    assert twin.database is not None and twin.database.cores == 0.5
    assert not any(u.startswith(HELM_RELEASE) for u in twin.unmodelled)
    heater = next(w for w in twin.workloads.values() if w.role == "heater")
    assert heater.uses_database
    # A change to the release (a knob on its CPU) re-reads it.
    twin.set_property(HELM_RELEASE, "postgresql", "values.primary.resources.limits.cpu", "2")
    assert twin.database.cores == 2.0
    # A work with a query but no DSN given to the container: no queries.
    plain = Twin(
        web_app(work=CpuWork(mean_ms=10.0, db_query="SELECT 1")), params=TwinParams(noise=False)
    )
    assert plain.database is None
    assert not next(w for w in plain.workloads.values() if w.role == "heater").uses_database


def test_database_pod_takes_node_room_and_queries_fail_while_it_is_pending():
    # Its 100m request is on a node, like any pod's.
    twin = _twin(replicas=2, rate=20.0, cpu_ms=10.0, db_cpu="1", query_ms=4.0)
    (db_pod,) = [p for p in twin.pods() if p.workload.role == "database"]
    assert db_pod.node is not None and db_pod.ready(twin.t)
    assert db_pod.node.cpu_requested >= 0.1
    # A primary that fits no node (8 cores requested on 8-vCPU nodes) stays Pending, and
    # every request that needs it fails.
    graph = web_app(
        replicas=2,
        work=CpuWork(mean_ms=10.0, db_query="SELECT 1", timeout_s=30.0),
        schedule=constant(20.0),
        node_size="s-8vcpu-16gb",
        database_cpu="8",
        database_request="8",
    )
    twin = Twin(graph, params=TwinParams(noise=False))
    m = twin.advance(30.0)
    assert m["pods_pending"] == 1.0
    assert m["error_ratio"] == pytest.approx(1.0)
