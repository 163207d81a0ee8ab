"""What the apps do, as data: the heater's work per request and the siege-engine's schedule.

These models are the one description of the workload that every part reads:

- the real apps (``heater``, ``siege_engine``) take them as JSON in an environment
  variable (:data:`HEATER_WORK_ENV`, :data:`SIEGE_SCHEDULE_ENV`) or on the command line;
- the k8s layers put that JSON into the containers' environment;
- the digital twin reads it back from the Deployment's inputs in the resource graph.

So a schedule the twin simulates is byte for byte the schedule the real load generator
runs.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

HEATER_WORK_ENV = "HEATER_WORK"
"""Environment variable holding a :class:`CpuWork` as JSON."""

HEATER_DB_DSN_ENV = "HEATER_DB_DSN"
"""Environment variable holding the PostgreSQL DSN for :attr:`CpuWork.db_query`."""

SIEGE_SCHEDULE_ENV = "SIEGE_SCHEDULE"
"""Environment variable holding a :class:`Schedule` as JSON."""

SIEGE_TARGET_ENV = "SIEGE_TARGET"
"""Environment variable holding the URL the siege-engine sends requests to."""

HEATER_PORT = 8080
SIEGE_METRICS_PORT = 8089

_BUCKET_MANTISSAS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)

LATENCY_BUCKETS: tuple[float, ...] = tuple(
    round(m * 10.0**e, 6) for e in range(-3, 2) for m in _BUCKET_MANTISSAS if m * 10.0**e <= 30
)
"""Upper bounds (seconds) of the latency histograms both apps export, 1 ms to 30 s.

Ten buckets per decade (at most a 4/3 step) keep ``histogram_quantile``'s in-bucket
interpolation error small over the whole range an SLO can sit in. One tuple, so the
heater's and the siege-engine's histograms (and any model of them) share their ``le``.
"""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CpuWork(_Model):
    """CPU time the heater burns per request.

    Attributes:
        mean_ms: Mean CPU milliseconds per request.
        distribution: ``constant``, ``exponential`` or ``lognormal``.
        cv: Coefficient of variation for ``lognormal`` (``exponential`` has 1,
            ``constant`` 0).
        timeout_s: Requests waiting longer than this in the server are answered 503 (kept
            below the siege-engine's client timeout, so an overloaded pod sheds load with
            fast 503s instead of serving requests the client has given up on).
        workers: Worker processes per pod, fed from one FIFO queue in the heater: a pod
            is an M/G/c queue with ``c = workers``.
        db_query: Optional SQL run per request when a database DSN is configured.
    """

    mean_ms: float = Field(20.0, gt=0, le=60_000)
    distribution: Literal["constant", "exponential", "lognormal"] = "exponential"
    cv: float = Field(1.0, ge=0, le=10)
    timeout_s: float = Field(2.0, gt=0)
    workers: int = Field(1, ge=1, le=64)
    db_query: str | None = None

    @property
    def scv(self) -> float:
        """Squared coefficient of variation of the service time (queueing models use it)."""
        return {"constant": 0.0, "exponential": 1.0}.get(self.distribution, self.cv**2)

    def sample_ms(self, rng) -> float:  # rng: numpy Generator or random.Random
        """Draw one request's CPU milliseconds."""
        if self.distribution == "constant":
            return self.mean_ms
        if self.distribution == "exponential":
            return (
                float(rng.exponential(self.mean_ms))
                if hasattr(rng, "exponential")
                else (rng.expovariate(1.0 / self.mean_ms))
            )
        sigma2 = math.log1p(self.cv**2)
        mu = math.log(self.mean_ms) - sigma2 / 2
        if hasattr(rng, "lognormal"):
            return float(rng.lognormal(mu, math.sqrt(sigma2)))
        return rng.lognormvariate(mu, math.sqrt(sigma2))


class Constant(_Model):
    """A constant rate."""

    kind: Literal["constant"] = "constant"
    rate: float = Field(ge=0)

    def rate_at(self, t: float) -> float:
        return self.rate

    def integral(self, t0: float, t1: float) -> float:
        """Requests scheduled in ``[t0, t1)``."""
        return self.rate * (t1 - t0)


class Ramp(_Model):
    """A linear ramp from ``start`` to ``end`` requests/s over ``duration`` seconds, then held."""

    kind: Literal["ramp"] = "ramp"
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    duration: float = Field(gt=0)

    def rate_at(self, t: float) -> float:
        f = min(max(t / self.duration, 0.0), 1.0)
        return self.start + (self.end - self.start) * f

    def integral(self, t0: float, t1: float) -> float:
        """Requests scheduled in ``[t0, t1)`` (the ramp is piecewise linear: exact)."""
        cut = min(max(self.duration, t0), t1)
        ramp = (self.rate_at(t0) + self.rate_at(cut)) / 2 * (cut - t0)
        return ramp + self.end * (t1 - cut)


class Step(_Model):
    """Rates held for ``step_seconds`` each, in turn; the last is held (or cycled)."""

    kind: Literal["step"] = "step"
    rates: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    step_seconds: float = Field(gt=0)
    cycle: bool = False

    def rate_at(self, t: float) -> float:
        i = int(max(t, 0.0) // self.step_seconds)
        i = i % len(self.rates) if self.cycle else min(i, len(self.rates) - 1)
        return self.rates[i]

    def integral(self, t0: float, t1: float) -> float:
        """Requests scheduled in ``[t0, t1)`` (exact: piecewise constant)."""
        edges = [t0]
        k = math.floor(max(t0, 0.0) / self.step_seconds) + 1
        while k * self.step_seconds < t1:
            edges.append(k * self.step_seconds)
            k += 1
        edges.append(t1)
        return sum(self.rate_at(a) * (b - a) for a, b in itertools.pairwise(edges))


class Diurnal(_Model):
    """A daily sine: ``base + amplitude * sin(2π (t + phase) / period)``, floored at 0."""

    kind: Literal["diurnal"] = "diurnal"
    base: float = Field(ge=0)
    amplitude: float = Field(ge=0)
    period: float = Field(86_400.0, gt=0)
    phase: float = 0.0

    def rate_at(self, t: float) -> float:
        return max(
            0.0, self.base + self.amplitude * math.sin(2 * math.pi * (t + self.phase) / self.period)
        )

    def integral(self, t0: float, t1: float) -> float:
        """Requests scheduled in ``[t0, t1)`` (exact while the sine stays above 0)."""
        if self.amplitude > self.base:
            return _midpoint(self.rate_at, t0, t1)
        w = 2 * math.pi / self.period
        return self.base * (t1 - t0) + self.amplitude / w * (
            math.cos(w * (t0 + self.phase)) - math.cos(w * (t1 + self.phase))
        )


class Spikes(_Model):
    """A base rate with a spike of ``spike_rate`` for ``spike_seconds`` every ``every`` seconds."""

    kind: Literal["spikes"] = "spikes"
    base: float = Field(ge=0)
    spike_rate: float = Field(ge=0)
    every: float = Field(gt=0)
    spike_seconds: float = Field(gt=0)
    offset: float = Field(0.0, ge=0)

    def rate_at(self, t: float) -> float:
        if t < self.offset:
            return self.base
        return self.spike_rate if (t - self.offset) % self.every < self.spike_seconds else self.base

    def integral(self, t0: float, t1: float) -> float:
        """Requests scheduled in ``[t0, t1)`` (exact: sums the spike overlaps)."""
        total = self.base * (t1 - t0)
        extra = self.spike_rate - self.base
        k = max(0, math.floor((max(t0, self.offset) - self.offset) / self.every))
        while True:
            start = self.offset + k * self.every
            if start >= t1:
                break
            overlap = min(t1, start + self.spike_seconds) - max(t0, start)
            if overlap > 0:
                total += extra * overlap
            k += 1
        return total


class _TraceIndex:
    """A :class:`Trace`'s points as sorted lists plus the cumulative integral at each point.

    Derived from the points once, so that :meth:`Trace.rate_at` and
    :meth:`Trace.integral` answer with one ``bisect`` each (O(log n)) instead of a scan.
    ``source`` is the points list it was built from: a copy with other points
    (``model_copy(update=...)``) sees the mismatch and builds its own.
    """

    __slots__ = ("cum", "per_period", "period", "rates", "size", "source", "times")

    def __init__(self, points: list[tuple[float, float]], loop: bool) -> None:
        self.source = points
        self.size = len(points)
        self.times = [float(p[0]) for p in points]
        self.rates = [float(p[1]) for p in points]
        cum = [0.0]
        for i in range(1, len(points)):
            cum.append(cum[-1] + self.rates[i - 1] * (self.times[i] - self.times[i - 1]))
        self.cum = cum
        span = self.times[-1] - self.times[0]
        self.period = span if loop and len(points) > 1 and span > 0 else 0.0
        self.per_period = cum[-1]

    def __eq__(self, other: object) -> bool:
        # Derived data (or not built yet: None): never makes two traces with equal points
        # compare unequal, as pydantic compares private attributes too.
        return other is None or isinstance(other, _TraceIndex)

    __hash__ = None  # type: ignore[assignment]

    def held(self, t: float) -> float:
        """The rate held at ``t`` (the last point at or before ``t``; the first before it)."""
        i = bisect.bisect_right(self.times, t) - 1
        return self.rates[i] if i >= 0 else self.rates[0]

    def cumulative(self, t: float) -> float:
        """Requests from the first point's time to ``t`` (negative before it), unlooped."""
        i = bisect.bisect_right(self.times, t) - 1
        if i < 0:
            return self.rates[0] * (t - self.times[0])
        return self.cum[i] + self.rates[i] * (t - self.times[i])

    def looped(self, t: float) -> float:
        """:meth:`cumulative` with the points repeated every :attr:`period` seconds."""
        if not self.period:
            return self.cumulative(t)
        k, r = divmod(t - self.times[0], self.period)
        return k * self.per_period + self.cumulative(self.times[0] + r)


class Trace(_Model):
    """A recorded rate trace: ``(t, rate)`` points, held from each point to the next.

    Before the first point the first rate holds, after the last the last one. With
    ``loop``, the points repeat every ``last t - first t`` seconds (so the last point
    only closes the period; its rate is never held). Queries take O(log n): the points
    are indexed once, in a private attribute that JSON and equality ignore. Treat
    ``points`` as immutable once built.

    Build one from a CSV file with :meth:`from_csv`.
    """

    kind: Literal["trace"] = "trace"
    points: list[tuple[float, float]] = Field(min_length=1)
    loop: bool = False
    _index: _TraceIndex | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _sorted(self) -> Trace:
        times = [p[0] for p in self.points]
        if times != sorted(times) or any(r < 0 for _, r in self.points):
            raise ValueError("trace points must be sorted by time and have rates >= 0")
        return self

    @classmethod
    def from_csv(cls, path: str | Path, loop: bool = False) -> Trace:
        """Read a trace from a CSV file with columns ``t`` (seconds) and ``rate`` (requests/s)."""
        with open(path, newline="") as f:
            rows = [(float(r["t"]), float(r["rate"])) for r in csv.DictReader(f)]
        return cls(points=rows, loop=loop)

    def _indexed(self) -> _TraceIndex:
        index = self._index
        if index is None or index.source is not self.points or index.size != len(self.points):
            index = self._index = _TraceIndex(self.points, self.loop)
        return index

    def rate_at(self, t: float) -> float:
        index = self._indexed()
        if index.period:
            t = index.times[0] + (t - index.times[0]) % index.period
        return index.held(t)

    def integral(self, t0: float, t1: float) -> float:
        """Requests scheduled in ``[t0, t1)`` (exact, looped or not)."""
        index = self._indexed()
        return index.looped(t1) - index.looped(t0)


ScheduleShape = Annotated[
    Constant | Ramp | Step | Diurnal | Spikes | Trace, Field(discriminator="kind")
]


class Schedule(_Model):
    """An open-loop arrival schedule: a rate shape, a duration and the arrival process.

    Attributes:
        shape: The rate shape (constant, ramp, step, diurnal, spikes or trace).
        duration: Seconds to run; ``None`` runs until stopped.
        arrivals: ``poisson`` (exponential gaps) or ``uniform`` (even gaps).
        timeout_s: Client timeout per request; a request taking longer counts as failed.
    """

    shape: ScheduleShape
    duration: float | None = Field(None, gt=0)
    arrivals: Literal["poisson", "uniform"] = "poisson"
    timeout_s: float = Field(5.0, gt=0)

    def rate_at(self, t: float) -> float:
        """Requests per second scheduled at ``t`` seconds after the start."""
        if self.duration is not None and t >= self.duration:
            return 0.0
        return self.shape.rate_at(t)

    def mean_rate(self, t0: float, t1: float) -> float:
        """Mean scheduled rate over ``[t0, t1)``: exact for every shape but diurnal curves
        clipped at zero (midpoint rule there)."""
        if t1 <= t0:
            return self.rate_at(t0)
        if self.duration is not None:
            if t0 >= self.duration:
                return 0.0
            end = min(t1, self.duration)
        else:
            end = t1
        integral = getattr(self.shape, "integral", None)
        total = integral(t0, end) if integral else _midpoint(self.shape.rate_at, t0, end)
        return total / (t1 - t0)


def _midpoint(rate_at, t0: float, t1: float, samples: int = 32) -> float:
    """Integral of ``rate_at`` over ``[t0, t1)`` by the midpoint rule."""
    h = (t1 - t0) / samples
    return sum(rate_at(t0 + (i + 0.5) * h) for i in range(samples)) * h


def constant(rate: float, **kw) -> Schedule:
    """Shorthand for a constant-rate :class:`Schedule`."""
    return Schedule(shape=Constant(rate=rate), **kw)
