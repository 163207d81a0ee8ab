"""Speed of ``Schedule.mean_rate`` on a 3600-point trace, against a linear scan.

The twin asks a schedule for its mean rate over every interval it serves (a step of
30 s, or less between events), so a trace scenario's cost per step is this call. The
reference is the scan ``Trace`` did before it was indexed: ``rate_at`` walks the points,
and a looped trace integrates by the midpoint rule (32 ``rate_at`` calls). Both run on
the same random one-point-per-second trace, in the same process, over the same random
30 s windows in a one-hour episode.

    python benchmarks/bench_trace.py [--calls N]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from infragym.apps.workload import Schedule, Trace


class ScanTrace:
    """The linear-scan reference (``Trace`` before it was indexed)."""

    def __init__(self, points: list[tuple[float, float]], loop: bool) -> None:
        self.points, self.loop = points, loop

    def rate_at(self, t: float) -> float:
        if self.loop and len(self.points) > 1:
            span = self.points[-1][0] - self.points[0][0]
            if span > 0:
                t = self.points[0][0] + (t - self.points[0][0]) % span
        rate = self.points[0][1]
        for when, r in self.points:
            if when > t:
                break
            rate = r
        return rate

    def integral(self, t0: float, t1: float) -> float:
        if self.loop:
            h = (t1 - t0) / 32
            return sum(self.rate_at(t0 + (i + 0.5) * h) for i in range(32)) * h
        edges = [t0, *(p[0] for p in self.points if t0 < p[0] < t1), t1]
        return sum(self.rate_at(a) * (b - a) for a, b in itertools.pairwise(edges))

    def mean_rate(self, t0: float, t1: float) -> float:
        return self.integral(t0, t1) / (t1 - t0)


def calls_per_second(mean_rate, windows, budget_s: float = 1.0) -> float:
    done, start = 0, time.perf_counter()
    while True:
        for t0, t1 in windows:
            mean_rate(t0, t1)
        done += len(windows)
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="windows per timing pass")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rates = rng.poisson(60, 3600).astype(float)
    print(f"{'trace (3600 points)':<26}{'indexed calls/s':>16}{'linear scan':>14}{'speed-up':>10}")
    for loop in (False, True):
        points = [(float(t), r) for t, r in enumerate(rates)]
        if loop:
            points.append((3600.0, rates[0]))
        schedule = Schedule(shape=Trace(points=points, loop=loop))
        scan = ScanTrace(points, loop)
        starts = rng.uniform(0, 3570, args.calls)
        windows = [(float(a), float(a) + 30.0) for a in starts]
        for a, b in windows[:20]:
            assert abs(schedule.mean_rate(a, b) - scan.mean_rate(a, b)) < (3.0 if loop else 1e-9)
        fast = calls_per_second(schedule.mean_rate, windows)
        slow = calls_per_second(scan.mean_rate, windows)
        label = "looped" if loop else "not looped"
        print(f"{label:<26}{fast:>16,.0f}{slow:>14,.0f}{fast / slow:>9,.0f}x")


if __name__ == "__main__":
    main()
