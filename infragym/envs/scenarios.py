"""Load scenarios: the siege-engine schedule an episode runs, drawn from ``np_random``.

Each scenario draws its parameters from a small grid rather than a continuum. The
schedule is a layer setting (on real infrastructure it is what the siege-engine runs),
so the sim backend keys its cached resource graph by it; a grid keeps every variant
cached after the first episodes, and the twin's arrival noise still makes every episode
different.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from infragym.apps.workload import Constant, Diurnal, Ramp, Schedule, Spikes
from infragym.catalog import unknown_choice
from infragym.errors import ConfigError

Scenario = Callable[[np.random.Generator, float], Schedule]
"""``(np_random, episode_seconds) -> Schedule``."""


def _pick(rng: np.random.Generator, values: tuple) -> float:
    return values[int(rng.integers(len(values)))]


def constant(rng: np.random.Generator, episode_s: float) -> Schedule:
    """A steady rate between 30 and 150 requests/s."""
    return Schedule(shape=Constant(rate=_pick(rng, (30.0, 60.0, 90.0, 120.0, 150.0))))


def diurnal(rng: np.random.Generator, episode_s: float) -> Schedule:
    """A day compressed into one episode: a sine of ±60 % around 40-100 requests/s."""
    base = _pick(rng, (40.0, 60.0, 80.0, 100.0))
    phase = _pick(rng, (0.0, 0.25, 0.5, 0.75)) * episode_s
    return Schedule(shape=Diurnal(base=base, amplitude=0.6 * base, period=episode_s, phase=phase))


def spikes(rng: np.random.Generator, episode_s: float) -> Schedule:
    """A base rate with one-minute spikes of 3-4x every 5 or 10 minutes."""
    base = _pick(rng, (30.0, 50.0, 70.0))
    return Schedule(
        shape=Spikes(
            base=base,
            spike_rate=base * _pick(rng, (3.0, 4.0)),
            every=_pick(rng, (300.0, 600.0)),
            spike_seconds=60.0,
            offset=120.0,
        )
    )


def ramp(rng: np.random.Generator, episode_s: float) -> Schedule:
    """A linear ramp over the episode (mostly up, sometimes down)."""
    start, end = ((20.0, 120.0), (20.0, 180.0), (50.0, 200.0), (150.0, 30.0))[int(rng.integers(4))]
    return Schedule(shape=Ramp(start=start, end=end, duration=episode_s))


SCENARIOS: dict[str, Scenario] = {
    "constant": constant,
    "diurnal": diurnal,
    "spikes": spikes,
    "ramp": ramp,
}
"""Every built-in scenario, by name."""


def get(name: str) -> Scenario:
    """A scenario by name, with a clear error listing the valid ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ConfigError(unknown_choice("scenario", name, SCENARIOS)) from None
