"""``Trace``: indexed queries agree with a brute-force reading of the points."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from infragym.apps.workload import Schedule, Trace


def reference_rate(points: list[tuple[float, float]], loop: bool, t: float) -> float:
    """The rate at ``t`` by a linear scan (the definition: the last point at or before
    ``t`` holds, the first before it; looped every ``last t - first t``)."""
    first, last = points[0][0], points[-1][0]
    if loop and len(points) > 1 and last > first:
        t = first + (t - first) % (last - first)
    rate = points[0][1]
    for when, r in points:
        if when > t:
            break
        rate = r
    return rate


def reference_integral(points, loop: bool, t0: float, t1: float) -> float:
    """Requests in ``[t0, t1)``: cut at every point time (every period's copy when
    looped) and sum the rate held in each piece times its width."""
    times = np.array([p[0] for p in points])
    first, span = times[0], times[-1] - times[0]
    if loop and len(points) > 1 and span > 0:
        k0, k1 = math.floor((t0 - first) / span) - 1, math.floor((t1 - first) / span) + 1
        cuts = np.concatenate([times + k * span for k in range(k0, k1 + 1)])
    else:
        cuts = times
    edges = np.unique(np.concatenate([[t0, t1], cuts[(cuts > t0) & (cuts < t1)]]))
    return sum(
        reference_rate(points, loop, (a + b) / 2) * (b - a) for a, b in itertools.pairwise(edges)
    )


def random_points(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    gaps = rng.choice([0.0, 0.5, 1.0, 7.25, 30.0], size=n - 1)  # 0: repeated times
    times = rng.uniform(-50, 50) + np.concatenate([[0.0], gaps]).cumsum()
    rates = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0, 300, n).round(2))
    return [(float(t), float(r)) for t, r in zip(times, rates, strict=True)]


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 40, 200])
def test_queries_match_the_brute_force_reference(loop, n):
    rng = np.random.default_rng(n + 1000 * loop)
    for _ in range(5):
        points = random_points(rng, n)
        trace = Trace(points=points, loop=loop)
        lo, hi = points[0][0] - 100, points[-1][0] + 400
        queries = [*rng.uniform(lo, hi, 60), *(p[0] for p in points), lo, hi]
        for t in queries:
            assert trace.rate_at(t) == reference_rate(points, loop, t), t
        for _ in range(40):
            t0, t1 = rng.uniform(lo, hi, 2)
            if rng.random() < 0.3:  # also exactly on points
                t0 = points[int(rng.integers(n))][0]
            t0, t1 = sorted((t0, t1))
            expected = reference_integral(points, loop, t0, t1)
            assert trace.integral(t0, t1) == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_looped_integral_over_whole_periods_is_exact():
    trace = Trace(points=[(0.0, 10.0), (1.0, 20.0), (3.0, 0.0)], loop=True)  # 50 per period
    assert trace.integral(0.0, 3.0) == 50.0
    assert trace.integral(-300.0, 300.0) == 200 * 50.0
    assert trace.integral(0.5, 3.5) == 50.0
    assert Schedule(shape=trace).mean_rate(0.0, 30.0) == pytest.approx(50.0 / 3.0)


def test_json_and_equality_ignore_the_index():
    points = [(0.0, 1.0), (2.0, 3.0), (5.0, 0.0)]
    queried, fresh = Trace(points=points, loop=True), Trace(points=points, loop=True)
    before = Schedule(shape=queried).model_dump_json()
    queried.rate_at(1.0)
    assert queried == fresh and fresh == queried
    schedule = Schedule(shape=queried)
    assert schedule.model_dump_json() == before
    assert Schedule.model_validate_json(before) == schedule
    assert before == (
        '{"shape":{"kind":"trace","points":[[0.0,1.0],[2.0,3.0],[5.0,0.0]],"loop":true},'
        '"duration":null,"arrivals":"poisson","timeout_s":5.0}'
    )


def test_a_copy_with_other_points_reindexes():
    trace = Trace(points=[(0.0, 1.0), (10.0, 2.0)])
    assert trace.integral(0.0, 10.0) == 10.0
    other = trace.model_copy(update={"points": [(0.0, 5.0), (10.0, 2.0)]})
    assert other.integral(0.0, 10.0) == 50.0
    assert trace.integral(0.0, 10.0) == 10.0
