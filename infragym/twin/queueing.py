"""Closed-form queueing used by the twin: Erlang C, M/G/c waiting times and latency quantiles.

The twin is analytic: per step it treats each group of identical servers as a queue in
steady state at the step's mean arrival rate, rather than simulating requests one by one.
That is what makes it run at millions of simulated seconds per wall second.

Model (checked against queueing theory in ``tests/twin/test_queueing.py``):

- ``c`` servers of rate ``mu`` (requests/s each), Poisson arrivals of rate ``lam``.
- Probability of waiting: Erlang C, ``C(c, a)`` with ``a = lam / mu``.
- Waiting time: with probability ``1 - C`` zero, otherwise exponential with rate
  ``theta = (c*mu - lam) * 2 / (1 + scv)``; the ``2/(1+scv)`` factor is the
  Allen-Cunneen correction for a service time with squared coefficient of variation
  ``scv`` (exact for M/M/c, where ``scv = 1``).
- Response time ``T = W + S``; quantiles are solved from the survival function of that sum
  (exact for exponential and constant service).

A queue whose customers wait for their answer before sending again (a database serving a
fixed number of worker processes) is a closed queue instead: see
:func:`finite_source_response`.

The compiled core calls :class:`Queue` (through :mod:`infragym.twin.latency`) for pods
that are neither M/M/1 nor saturated; :func:`finite_source_response` and
:func:`where_falls_to` it runs itself, ported with the same operations in the same order
(the database). Here they are the reference the tests check against simulations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

_INF = float("inf")


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with offered load ``a`` (< c).

    Uses the numerically stable Erlang B recursion, then converts B to C.
    """
    if a <= 0.0:
        return 0.0
    if a >= c:
        return 1.0
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    rho = a / c
    return b / (1.0 - rho + rho * b)


def mean_wait(c: int, mu: float, lam: float, scv: float = 1.0) -> float:
    """Mean time in queue (excluding service) of an M/G/c queue; ``inf`` when unstable."""
    if lam <= 0.0:
        return 0.0
    if lam >= c * mu:
        return _INF
    return erlang_c(c, lam / mu) / (c * mu - lam) * (1.0 + scv) / 2.0


def finite_source_response(
    sources: int, servers: int, service_s: float, throughput: float
) -> float:
    """Mean response time of a queue fed by ``sources`` that each wait for their answer.

    The machine-repairman model: each source sends a request, waits for it, then "thinks"
    for an exponential time before the next. Few sources cannot build the queue Poisson
    arrivals would (with one source nobody ever waits), so an open M/M/c overstates it.
    Mean value analysis gives the exact response for one server; several servers use
    Seidmann's approximation (one server ``servers`` times faster, plus the rest of the
    service time as a pure delay). The think time is solved for from ``throughput``.

    Args:
        sources: Sources (worker processes) that use the queue.
        servers: Servers of the queue.
        service_s: Mean service time of one request (exponential).
        throughput: Requests/s the sources send in all.

    Raises:
        ValueError: ``throughput`` is at or above the most the queue can pass.
    """
    queued = service_s / servers
    delay = service_s - queued

    def solve(think: float) -> tuple[float, float]:  # (response, throughput)
        waiting = response = rate = 0.0
        for n in range(1, sources + 1):
            response = queued * (1.0 + waiting)
            rate = n / (think + delay + response)
            waiting = rate * response
        return response + delay, rate

    if throughput <= 0.0:
        return service_s
    most = solve(0.0)[1]
    if throughput >= most:
        raise ValueError(f"throughput {throughput} >= the most {sources} sources pass ({most})")
    return solve(where_falls_to(lambda think: solve(think)[1], throughput, 0.0, service_s))[0]


def where_falls_to(f: Callable[[float], float], target: float, low: float, step: float) -> float:
    """The ``x >= low`` where a decreasing ``f`` falls to ``target`` (``f(low) > target``).

    Brackets by doubling ``step``, then bisects 30 times (to a billionth of the bracket).
    """
    high = low + step
    while f(high) > target:
        low, high = high, high + 2.0 * (high - low)
    for _ in range(30):
        mid = (low + high) / 2.0
        low, high = (mid, high) if f(mid) > target else (low, mid)
    return high


class Queue:
    """One M/G/c queue in steady state, with the per-step quantities precomputed.

    Args:
        c: Number of servers.
        mu: Service rate of one server (requests/s).
        lam: Arrival rate (requests/s); must be below ``c * mu``.
        scv: Squared coefficient of variation of the service time (0 = constant,
            1 = exponential).
    """

    __slots__ = ("c", "lam", "mu", "scv", "theta", "wait_p")

    def __init__(self, c: int, mu: float, lam: float, scv: float = 1.0) -> None:
        if lam >= c * mu:
            raise ValueError(f"unstable queue: lam={lam} >= c*mu={c * mu}")
        self.c, self.mu, self.lam, self.scv = c, mu, lam, scv
        self.wait_p = erlang_c(c, lam / mu) if lam > 0.0 else 0.0
        self.theta = (c * mu - lam) * 2.0 / (1.0 + scv)

    @property
    def mean_response(self) -> float:
        """Mean response time E[W] + E[S]."""
        return self.wait_p / self.theta + 1.0 / self.mu

    def survival(self, t: float) -> float:
        """P(T > t) for the response time T = W + S."""
        if t <= 0.0:
            return 1.0
        mu, theta, p = self.mu, self.theta, self.wait_p
        if self.scv <= 0.0:
            d = 1.0 / mu
            return 1.0 if t < d else p * math.exp(-theta * (t - d))
        e_mu = math.exp(-mu * t)
        if p <= 0.0:
            return e_mu
        if abs(theta - mu) < 1e-9 * mu:
            waited = e_mu * (1.0 + mu * t)
        else:
            waited = (theta * e_mu - mu * math.exp(-theta * t)) / (theta - mu)
        return (1.0 - p) * e_mu + p * waited

    def _density(self, t: float) -> float:
        mu, theta, p = self.mu, self.theta, self.wait_p
        e_mu = math.exp(-mu * t)
        if abs(theta - mu) < 1e-9 * mu:
            waited = mu * mu * t * e_mu
        else:
            waited = theta * mu * (e_mu - math.exp(-theta * t)) / (theta - mu)
        return (1.0 - p) * mu * e_mu + p * waited

    def quantile(self, q: float) -> float:
        """The ``q``-quantile of the response time.

        Closed form for constant service; otherwise Newton's method on ``log P(T > t)``,
        which is nearly linear in ``t``, started from the larger of the two exponential
        tails and kept inside a bracket (converges in a handful of iterations).
        """
        target = 1.0 - q
        mu, theta, p = self.mu, self.theta, self.wait_p
        if self.scv <= 0.0:
            d = 1.0 / mu
            return d if p <= target else d + math.log(p / target) / theta
        if self.c == 1 and self.scv == 1.0:
            return -math.log(target) / (mu - self.lam)  # M/M/1: T ~ Exp(mu - lam)
        log_target = math.log(target)
        # P(S + W > t) <= P(S > t/2) + P(W > t/2) bounds the quantile from above.
        lo, hi = 0.0, -2.0 * math.log(target / 2.0) / min(mu, theta)
        # Start on the asymptote A*exp(-rate*t) of the slower exponential tail.
        if p <= 0.0:
            amp, rate = 1.0, mu
        elif theta < mu:
            amp, rate = p * mu / (mu - theta), theta
        elif theta > mu:
            amp, rate = (1.0 - p) + p * theta / (theta - mu), mu
        else:
            amp, rate = 1.0 + p, mu * 0.8
        t = min(max((math.log(amp) - log_target) / rate, lo), hi)
        for _ in range(20):
            s = self.survival(t)
            if s > target:
                lo = t
            else:
                hi = t
            f = self._density(t)
            step = (math.log(s) - log_target) * s / f if f > 0.0 and s > 0.0 else hi - lo
            nt = t + step
            if not lo < nt < hi:
                nt = 0.5 * (lo + hi)
            if abs(nt - t) <= 1e-7 * (1.0 + t):
                return nt
            t = nt
        return t
