"""The twin's queueing formulas against textbook results and an independent simulation."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from infragym.twin.queueing import Queue, erlang_c, finite_source_response, mean_wait


def erlang_c_textbook(c: int, a: float) -> float:
    """Erlang C from its defining sum of factorials (no recursion shared with the twin)."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def simulate_mmc(
    c: int, mu: float, lam: float, n: int, seed: int, service: str = "exp"
) -> np.ndarray:
    """Response times of a FIFO M/G/c queue by discrete-event simulation."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    services = rng.exponential(1 / mu, n) if service == "exp" else np.full(n, 1 / mu)
    free = [0.0] * c  # when each server becomes free
    heapq.heapify(free)
    out = np.empty(n)
    for i in range(n):
        start = max(arrivals[i], heapq.heappop(free))
        end = start + services[i]
        heapq.heappush(free, end)
        out[i] = end - arrivals[i]
    return out[n // 10 :]  # drop the warm-up


@pytest.mark.parametrize(("c", "a"), [(1, 0.5), (2, 1.5), (4, 3.2), (10, 8.0), (30, 27.0)])
def test_erlang_c_matches_textbook(c, a):
    assert erlang_c(c, a) == pytest.approx(erlang_c_textbook(c, a), rel=1e-9)


def test_mm1_closed_forms():
    # M/M/1: T ~ Exp(mu - lam), so the q-quantile is -ln(1-q)/(mu-lam).
    q = Queue(1, 50.0, 40.0)
    for p in (0.5, 0.95, 0.99):
        assert q.quantile(p) == pytest.approx(-math.log(1 - p) / 10.0, rel=1e-5)
    assert q.mean_response == pytest.approx(1 / 10.0)


def test_md1_mean_wait_is_pollaczek_khinchine():
    mu, lam = 50.0, 40.0
    rho = lam / mu
    assert mean_wait(1, mu, lam, scv=0.0) == pytest.approx(rho / (2 * mu * (1 - rho)))


@pytest.mark.parametrize(("c", "mu", "lam"), [(2, 10.0, 15.0), (4, 10.0, 34.0), (8, 5.0, 30.0)])
def test_mmc_quantiles_match_simulation(c, mu, lam):
    sim = simulate_mmc(c, mu, lam, 200_000, seed=c)
    q = Queue(c, mu, lam)
    assert q.mean_response == pytest.approx(sim.mean(), rel=0.05)
    for p in (0.5, 0.95, 0.99):
        assert q.quantile(p) == pytest.approx(np.quantile(sim, p), rel=0.06)


def test_md1_quantiles_match_simulation():
    sim = simulate_mmc(1, 50.0, 35.0, 200_000, seed=7, service="const")
    q = Queue(1, 50.0, 35.0, scv=0.0)
    for p in (0.5, 0.95, 0.99):
        assert q.quantile(p) == pytest.approx(np.quantile(sim, p), rel=0.10)


def test_unstable_queue_is_rejected():
    with pytest.raises(ValueError, match="unstable"):
        Queue(2, 10.0, 20.0)
    assert mean_wait(2, 10.0, 20.0) == math.inf


def simulate_machine_repairman(
    sources: int, think_s: float, service_s: float, n: int, seed: int
) -> tuple[float, float]:
    """(mean response, throughput) of one FIFO exponential server fed by ``sources`` that
    each think for an exponential ``think_s`` between their requests, by simulation."""
    rng = np.random.default_rng(seed)
    ready = sorted(rng.exponential(think_s, sources).tolist())  # when each sends next
    free = 0.0
    total = 0.0
    for _ in range(n):
        sent = heapq.heappop(ready)
        done = max(sent, free) + rng.exponential(service_s)
        free = done
        total += done - sent
        heapq.heappush(ready, done + rng.exponential(think_s))
    return total / n, n / free


def test_finite_source_response_matches_a_simulation():
    # Mean value analysis is exact for one server: compare with the simulated model.
    response, throughput = simulate_machine_repairman(5, 0.030, 0.008, 300_000, seed=11)
    assert finite_source_response(5, 1, 0.008, throughput) == pytest.approx(response, rel=0.03)


def test_finite_source_response_limits():
    # One source never waits; many light sources are Poisson arrivals: M/M/1.
    assert finite_source_response(1, 1, 0.01, 40.0) == pytest.approx(0.01)
    assert finite_source_response(2000, 1, 0.01, 50.0) == pytest.approx(0.02, rel=0.01)
    with pytest.raises(ValueError, match="throughput"):
        finite_source_response(10, 1, 0.01, 100.0)
