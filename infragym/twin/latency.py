"""The latency of one heater pod: what the compiled core asks Python for.

The core serves the usual heater pod (one worker, exponential work: M/M/1) and saturated
pods in closed form itself. For the others (several workers, or work that is not
exponential, or a pod whose requests wait for the database) it calls :func:`pod_latency`,
the M/G/c model of :mod:`infragym.twin.queueing`, once per distinct pod and load: the
memo below makes a steady step cost a lookup.
"""

from __future__ import annotations

import math

from infragym.twin.queueing import Queue

EXP_QUANTILES = tuple(-math.log(1.0 - q) for q in (0.5, 0.95, 0.99))
"""The p50, p95 and p99 of an exponential distribution of rate 1 (the core's M/M/1)."""

_MEMO: dict[tuple[int, float, float, float, float], tuple[float, float, float, float]] = {}
"""Shared by all twins: (c, mu, lam, scv, timeout) → (p50, p95, p99, failed share)."""
_MEMO_SIZE = 16384


def pod_latency(
    c: int, mu: float, lam: float, scv: float, timeout: float
) -> tuple[float, float, float, float]:
    """(p50, p95, p99, failed share) of a pod of ``c`` workers serving at ``mu`` each.

    Args:
        c: Worker processes (servers).
        mu: Service rate of one worker (requests/s).
        lam: Arrival rate at the pod (requests/s).
        scv: Squared coefficient of variation of the service time.
        timeout: Seconds a request may wait before the heater fails it (503).

    A saturated pod keeps its queue full to the timeout and sheds the excess; otherwise
    the response time is the M/G/c queue's, capped at the timeout plus one service, and
    the failed share is the chance of waiting longer than the timeout.
    """
    key = (c, mu, lam, scv, timeout)
    hit = _MEMO.get(key)
    if hit is not None:
        return hit
    cap = c * mu
    if lam >= cap * 0.999:
        # Saturated: the queue stays full to the timeout; the excess is shed (503).
        full = timeout + 1.0 / mu
        out = (full, full, full, 1.0 - cap * 0.999 / lam)
    elif c == 1 and scv == 1.0:
        # M/M/1: the response time is Exp(mu - lam), and an arrival waits with probability rho.
        rate = mu - lam
        ceiling = timeout + 1.0 / mu
        out = (
            min(EXP_QUANTILES[0] / rate, ceiling),
            min(EXP_QUANTILES[1] / rate, ceiling),
            min(EXP_QUANTILES[2] / rate, ceiling),
            lam / mu * math.exp(-rate * timeout),
        )
    else:
        q = Queue(c, mu, lam, scv)
        fail = q.wait_p * math.exp(-q.theta * timeout)
        ceiling = timeout + 1.0 / mu
        out = (
            min(q.quantile(0.5), ceiling),
            min(q.quantile(0.95), ceiling),
            min(q.quantile(0.99), ceiling),
            fail,
        )
    if len(_MEMO) > _MEMO_SIZE:
        _MEMO.clear()
    _MEMO[key] = out
    return out
