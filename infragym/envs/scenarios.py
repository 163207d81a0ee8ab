"""Load scenarios: the siege-engine schedule an episode runs, drawn from ``np_random``.

A scenario is a function ``(np_random, episode_seconds, split) -> Schedule``. Add your
own with :func:`register_scenario`; look one up with :func:`get`, which checks the split.

**Grids.** Each built-in family draws its parameters from a small grid rather than a
continuum (about 110 variants in ``train``). Each variant's schedule is built once and
shared by its episodes (schedules are immutable), and the sim backend keeps a twin per
variant it has seen (256 at most), so a reset of a known variant builds nothing. The
schedule is a layer setting (on real infrastructure it is what the siege-engine runs),
but it only puts its JSON into the siege-engine's Deployment, so the sim backend caches
the resource graph less the schedule: a new variant runs no layer program. The twin's
arrival noise still makes every episode different.

**Splits.** Every family has ``train``, ``validation`` and ``test`` variants, with
disjoint parameters, so that ``test`` measures generalisation within a family rather
than recall of the variants trained on:

- Synthetic families (``constant``, ``diurnal``, ``spikes``, ``ramp``): ``train`` is the
  original grid, drawn the same way, so seeded ``train`` episodes are unchanged. The
  held-out values lie *between* the train values (midpoints of the level and, for
  ``diurnal``, of the phase; new ``(start, end)`` pairs for ``ramp``), inside the train
  range, so held-out episodes interpolate rather than extrapolate. Those combinations
  are dealt to ``validation`` and ``test`` like a checkerboard (even index sum to
  ``validation``, odd to ``test``), so both cover the whole range.
- Trace families (``trace-conv``, ``trace-code``): disjoint time segments of the
  recorded hour: ``train`` the first 60 %, ``validation`` the next 20 %, ``test`` the
  last 20 % (see :data:`TRACE_SEGMENTS`), contiguous, as in forecasting, so ``test`` is
  the part of the day a policy has not seen.

**Trace replay.** The Azure LLM inference traces of 2023 (per-second request counts in
``infragym/data/traces``, CC-BY 4.0; see the README there) are replayed as a looped
:class:`~infragym.apps.workload.Trace` of one point per second:

- An episode (3600 s by default) is longer than any segment (700-2100 s), so the
  segment is *looped*, rotated to start at one of 8 evenly spaced offsets. Looping keeps
  every second of the recording as it was, so burstiness at every timescale survives and
  is the same in every split. Time dilation would instead stretch a 10 s burst into a
  50 s one in the short held-out segments but only 17 s in ``train``, a shift between
  splits and a burst easier to scale for than the recorded one.
- The rate is scaled so that the segment's mean is one of a few target means:
  multiplying counts by a factor keeps the shape, and multiplies the index of
  dispersion (variance / mean of counts) by the factor, so scaled traces stay at least
  as bursty as recorded. The targets keep peaks servable by the largest configuration
  (30 pods at 1 CPU, about 1500 requests/s at 20 ms each): ``trace-conv`` (30 s peaks
  about 1.5x its mean, 1 s peaks 3.2x) at 40-120 requests/s, ``trace-code`` (30 s peaks
  5-7.5x, 10 s peaks up to 14x) at 20-80 requests/s.

A train schedule has about 2100 points, about 30 kB of JSON: well within what the real
siege-engine reads from an environment variable. See ``docs/scenarios.md``.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import re
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Literal

import numpy as np

from infragym.apps.workload import Constant, Diurnal, Ramp, Schedule, Spikes, Trace
from infragym.catalog import unknown_choice
from infragym.errors import ConfigError

Split = Literal["train", "validation", "test"]
"""Which part of a scenario family's variants to draw from."""

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""The valid splits, in order."""

Scenario = Callable[[np.random.Generator, float, Split], Schedule]
"""``(np_random, episode_seconds, split) -> Schedule``."""

SYNTHETIC: tuple[str, ...] = ("constant", "diurnal", "spikes", "ramp")
"""The synthetic built-in families (the scenarios of ``SimpleK8sWebApp-v0``)."""

TRACES: tuple[str, ...] = ("trace-conv", "trace-code")
"""The built-in families replaying recorded traffic."""


def _pick(rng: np.random.Generator, values: Sequence) -> object:
    return values[int(rng.integers(len(values)))]


def _checkerboard(*axes: Sequence) -> dict[str, tuple[tuple, ...]]:
    """Deal the combinations of ``axes`` to validation (even index sum) and test (odd)."""
    dealt: dict[str, list[tuple]] = {"validation": [], "test": []}
    for combo in itertools.product(*(tuple(enumerate(a)) for a in axes)):
        split = "validation" if sum(i for i, _ in combo) % 2 == 0 else "test"
        dealt[split].append(tuple(v for _, v in combo))
    return {k: tuple(v) for k, v in dealt.items()}


def _draw(rng: np.random.Generator, split: str, train: Sequence[Sequence], held_out) -> tuple:
    """One parameter tuple: ``train`` one axis at a time, otherwise one held-out tuple."""
    if split == "train":
        return tuple(_pick(rng, axis) for axis in train)
    return _pick(rng, held_out[split])  # type: ignore[return-value]


_CONSTANT_TRAIN = ((30.0, 60.0, 90.0, 120.0, 150.0),)
_CONSTANT_HELD_OUT = _checkerboard((45.0, 75.0, 105.0, 135.0))

_DIURNAL_TRAIN = ((40.0, 60.0, 80.0, 100.0), (0.0, 0.25, 0.5, 0.75))
_DIURNAL_HELD_OUT = _checkerboard((50.0, 70.0, 90.0), (0.125, 0.375, 0.625, 0.875))

_SPIKES_TRAIN = ((30.0, 50.0, 70.0), (3.0, 4.0), (300.0, 600.0))
_SPIKES_HELD_OUT = _checkerboard((40.0, 60.0), (3.0, 4.0), (300.0, 600.0))

_RAMP_TRAIN = (((20.0, 120.0), (20.0, 180.0), (50.0, 200.0), (150.0, 30.0)),)
_RAMP_HELD_OUT = _checkerboard(((35.0, 150.0), (35.0, 190.0), (120.0, 30.0), (180.0, 50.0)))


_VARIANTS: dict[tuple, Schedule] = {}
"""The synthetic families' schedules, by shape and parameters (see :func:`_variant`)."""

_VARIANTS_SIZE = 4096
"""Schedules :data:`_VARIANTS` keeps before it starts over."""


def _variant(shape: type, **params: float) -> Schedule:
    """``Schedule(shape=shape(**params))``, built once per shape and parameters.

    An episode of a variant gets the schedule object of the earlier ones: schedules are
    immutable, and the sim backend and the reset info memoise their dumps per object
    (:mod:`infragym.apps.dumps`). Parameters are told apart by ``repr`` too, so that
    ``-0.0`` and ``0.0`` (equal, and with one hash) keep schedules of their own.
    """
    key = (shape, *((name, value, repr(value)) for name, value in params.items()))
    schedule = _VARIANTS.get(key)
    if schedule is None:
        if len(_VARIANTS) >= _VARIANTS_SIZE:
            _VARIANTS.clear()
        schedule = _VARIANTS[key] = Schedule(shape=shape(**params))
    return schedule


def constant(rng: np.random.Generator, episode_s: float, split: Split = "train") -> Schedule:
    """A steady rate: 30-150 requests/s in steps of 30 (train), or the values between."""
    (rate,) = _draw(rng, split, _CONSTANT_TRAIN, _CONSTANT_HELD_OUT)
    return _variant(Constant, rate=rate)


def diurnal(rng: np.random.Generator, episode_s: float, split: Split = "train") -> Schedule:
    """A day compressed into one episode: a sine of ±60 % around 40-100 requests/s."""
    base, phase = _draw(rng, split, _DIURNAL_TRAIN, _DIURNAL_HELD_OUT)
    return _variant(
        Diurnal, base=base, amplitude=0.6 * base, period=episode_s, phase=phase * episode_s
    )


def spikes(rng: np.random.Generator, episode_s: float, split: Split = "train") -> Schedule:
    """A base rate of 30-70 requests/s with one-minute spikes of 3-4x every 5 or 10 minutes."""
    base, factor, every = _draw(rng, split, _SPIKES_TRAIN, _SPIKES_HELD_OUT)
    return _variant(
        Spikes, base=base, spike_rate=base * factor, every=every, spike_seconds=60.0, offset=120.0
    )


def ramp(rng: np.random.Generator, episode_s: float, split: Split = "train") -> Schedule:
    """A linear ramp over the episode (mostly up, sometimes down)."""
    ((start, end),) = _draw(rng, split, _RAMP_TRAIN, _RAMP_HELD_OUT)
    return _variant(Ramp, start=start, end=end, duration=episode_s)


# ------------------------------------------------------------------------ traces

TRACE_FILES: dict[str, str] = {
    "trace-conv": "azure_llm_2023_conv.csv",
    "trace-code": "azure_llm_2023_code.csv",
}
"""Scenario name → per-second counts in ``infragym/data/traces``."""

TRACE_SEGMENTS: dict[str, tuple[float, float]] = {
    "train": (0.0, 0.6),
    "validation": (0.6, 0.8),
    "test": (0.8, 1.0),
}
"""Split → the fractions of the trace's seconds it replays, ``[start, end)``, rounded
down to whole seconds: ``trace-conv`` (3503 s) seconds 0-2100, 2101-2801 and 2802-3502;
``trace-code`` (3437 s) 0-2061, 2062-2748 and 2749-3436."""

TRACE_MEANS: dict[str, tuple[float, ...]] = {
    "trace-conv": (40.0, 60.0, 80.0, 100.0, 120.0),
    "trace-code": (20.0, 40.0, 60.0, 80.0),
}
"""Scenario name → the mean rates (requests/s) a segment is scaled to, one drawn."""

TRACE_OFFSETS = 8
"""How many evenly spaced start offsets into its segment an episode can begin at."""


@functools.cache
def trace_counts(name: str) -> np.ndarray:
    """The per-second request counts of a built-in trace scenario (read-only array)."""
    if name not in TRACE_FILES:
        raise ConfigError(unknown_choice("trace", name, TRACE_FILES))
    text = resources.files("infragym").joinpath("data", "traces", TRACE_FILES[name]).read_text()
    counts = np.array([int(line) for line in text.split()[1:]], dtype=np.int64)
    counts.setflags(write=False)
    return counts


def trace_segment(name: str, split: Split) -> tuple[int, int]:
    """The seconds ``[start, end)`` of trace scenario ``name`` that ``split`` replays."""
    n = len(trace_counts(name))
    lo, hi = TRACE_SEGMENTS[split]
    return int(lo * n), int(hi * n)


def _replay(name: str, rng: np.random.Generator, split: Split) -> Schedule:
    target = float(_pick(rng, TRACE_MEANS[name]))
    return trace_variant(name, split, target, int(rng.integers(TRACE_OFFSETS)))


@functools.lru_cache(maxsize=512)
def trace_variant(name: str, split: Split, target: float, offset_index: int) -> Schedule:
    """The looped trace schedule of one variant: ``split``'s segment of trace scenario
    ``name``, scaled to a mean of ``target`` requests/s and rotated to start at offset
    ``offset_index`` of :data:`TRACE_OFFSETS`.

    Built once per variant (there are at most 40 per split and family) and shared by
    every episode that draws it: building one (about 2,100 points, validated by the
    :class:`Trace` model) costs about as much as the rest of a reset. Schedules are
    immutable (frozen models; treat ``points`` as read-only), so sharing is safe.
    """
    start, end = trace_segment(name, split)
    segment = trace_counts(name)[start:end]
    offset = (offset_index * len(segment)) // TRACE_OFFSETS
    rates = np.round(np.roll(segment, -offset) * (target / segment.mean()), 2)
    if not (rates >= 0).all():  # what Trace's validator checks, at numpy's speed
        raise ConfigError(f"trace {name!r} has a negative rate")
    points = [(float(t), float(r)) for t, r in enumerate(rates.tolist())]
    points.append((float(len(rates)), float(rates[0])))  # closes the loop's period
    # The points are what Trace's validation would make of them (float pairs, sorted by
    # time by construction, rates checked above): built without it, which costs more
    # than the rest of building the variant.
    return Schedule(shape=Trace.model_construct(points=points, loop=True))


def trace_conv(rng: np.random.Generator, episode_s: float, split: Split = "train") -> Schedule:
    """Azure LLM conversation traffic (5.5 requests/s recorded, mildly bursty), scaled to
    a mean of 40-120 requests/s and looped from one of 8 offsets into the split's segment."""
    return _replay("trace-conv", rng, split)


def trace_code(rng: np.random.Generator, episode_s: float, split: Split = "train") -> Schedule:
    """Azure LLM code-completion traffic (2.6 requests/s recorded, very bursty: 10 s
    windows reach 14x the mean), scaled to a mean of 20-80 requests/s and looped from one
    of 8 offsets into the split's segment."""
    return _replay("trace-code", rng, split)


# ---------------------------------------------------------------------- registry

SCENARIOS: dict[str, Scenario] = {
    "constant": constant,
    "diurnal": diurnal,
    "spikes": spikes,
    "ramp": ramp,
    "trace-conv": trace_conv,
    "trace-code": trace_code,
}
"""Every registered scenario, by name: the built-ins first, then :func:`register_scenario`'s."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def register_scenario(name: str, fn: Scenario, *, replace: bool = False) -> None:
    """Add a load scenario, so that ``reset(options={"scenario": name})`` can run it.

    Args:
        name: 1-64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.
        fn: ``(np_random, episode_seconds, split) -> Schedule``. Draw all randomness from
            ``np_random``, and give each split in :data:`SPLITS` its own variants. Draw
            from a small grid of parameters: the sim backend keeps a twin per distinct
            schedule, and memoises a schedule's dumps per object (return the same
            object for the same variant when building it costs much, as the built-ins
            do).
        replace: Replace a scenario already registered under ``name`` (built-ins too).

    Raises:
        ConfigError: ``name`` is malformed or already registered (without ``replace``),
            or ``fn`` cannot be called with three arguments.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"bad scenario name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not callable(fn):
        raise ConfigError(f"scenario {name!r} must be callable, got {type(fn).__name__}")
    try:
        inspect.signature(fn).bind(None, 0.0, "train")
    except TypeError:
        raise ConfigError(
            f"scenario {name!r} must accept (np_random, episode_seconds, split)"
        ) from None
    except ValueError:  # no signature to inspect (some builtins): trust it
        pass
    if name in SCENARIOS and not replace:
        raise ConfigError(
            f"scenario {name!r} is already registered; pass replace=True to replace it"
        )
    SCENARIOS[name] = fn


def names() -> tuple[str, ...]:
    """Every registered scenario's name, the built-ins first."""
    return tuple(SCENARIOS)


def check_split(split: object) -> Split:
    """``split`` if it is one of :data:`SPLITS`, else a :class:`ConfigError` listing them."""
    if split not in SPLITS:
        raise ConfigError(unknown_choice("split", split, SPLITS))
    return split  # type: ignore[return-value]


def get(name: str) -> Scenario:
    """A scenario by name (a clear error lists the valid ones).

    The returned function checks its ``split`` (``"train"`` when left out) and that the
    scenario returned a :class:`Schedule`.
    """
    try:
        fn = SCENARIOS[name]
    except (KeyError, TypeError):
        raise ConfigError(unknown_choice("scenario", name, SCENARIOS)) from None

    @functools.wraps(fn)
    def checked(rng: np.random.Generator, episode_seconds: float, split: Split = "train"):
        schedule = fn(rng, episode_seconds, check_split(split))
        if not isinstance(schedule, Schedule):
            raise ConfigError(
                f"scenario {name!r} returned {type(schedule).__name__}, not a Schedule"
            )
        return schedule

    return checked
