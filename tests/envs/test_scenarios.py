"""Load scenarios: the registry, the splits, and the replayed Azure traces.

References come from outside the code under test: the v0 grids as documented, and the
raw Azure CSVs (``../shared/data/traces``), parsed and binned here with numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import infragym
from infragym.apps.workload import Constant, Schedule
from infragym.envs import scenarios
from infragym.errors import ConfigError

EPISODE_S = 3600.0
SPLITS = ("train", "validation", "test")
SYNTHETIC = ("constant", "diurnal", "spikes", "ramp")
TRACES = {"trace-conv": "conv", "trace-code": "code"}
RAW = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces"
SEEDS = range(64)  # every grid here has at most 40 variants


def draw(name: str, seed: int, split: str, episode_s: float = EPISODE_S) -> Schedule:
    return scenarios.get(name)(np.random.default_rng(seed), episode_s, split)


def as_json(schedule: Schedule) -> str:
    return schedule.model_dump_json()


@pytest.fixture
def registry():
    """Restores the registry after a test that registers scenarios."""
    before = dict(scenarios.SCENARIOS)
    yield scenarios.SCENARIOS
    scenarios.SCENARIOS.clear()
    scenarios.SCENARIOS.update(before)


def flat(rng, episode_s, split):
    return Schedule(shape=Constant(rate={"train": 11.0, "validation": 22.0, "test": 33.0}[split]))


# ------------------------------------------------------------------- registry


def test_names_lists_builtins_first_then_registered(registry):
    assert scenarios.names()[:6] == (*SYNTHETIC, *TRACES)
    infragym.register_scenario("flat", flat)
    assert scenarios.names() == (*SYNTHETIC, *TRACES, "flat")
    assert scenarios.SCENARIOS["flat"] is flat


def test_registered_scenario_runs_in_the_env(registry):
    infragym.register_scenario("flat", flat)
    env = gym.make("SimpleK8sWebApp-v0")
    try:
        _, info = env.reset(seed=0, options={"scenario": "flat"})
        assert info["scenario"] == "flat"
        assert info["schedule"]["shape"] == {"kind": "constant", "rate": 11.0}
        _, _, _, _, info = env.step(env.action_space.sample())
    finally:
        env.close()


def test_duplicate_needs_replace(registry):
    scenarios.register_scenario("flat", flat)
    with pytest.raises(ConfigError, match=r"already registered.*replace=True"):
        scenarios.register_scenario("flat", flat)
    with pytest.raises(ConfigError, match="already registered"):
        scenarios.register_scenario("constant", flat)

    def flatter(rng, episode_s, split):
        return Schedule(shape=Constant(rate=1.0))

    scenarios.register_scenario("flat", flatter, replace=True)
    assert draw("flat", 0, "test").shape.rate == 1.0
    scenarios.register_scenario("constant", flatter, replace=True)
    assert scenarios.names()[0] == "constant"  # a replaced built-in keeps its place


@pytest.mark.parametrize("name", ["", " flat", "has space", "-flat", "a/b", "x" * 65, 7, None])
def test_bad_names_are_refused(registry, name):
    with pytest.raises(ConfigError, match="bad scenario name"):
        scenarios.register_scenario(name, flat)
    assert scenarios.names() == (*SYNTHETIC, *TRACES)


def test_bad_functions_are_refused(registry):
    with pytest.raises(ConfigError, match="must be callable"):
        scenarios.register_scenario("flat", "constant")
    with pytest.raises(ConfigError, match=r"must accept \(np_random, episode_seconds, split\)"):
        scenarios.register_scenario("flat", lambda rng, episode_s: flat(rng, episode_s, "train"))
    assert "flat" not in scenarios.SCENARIOS


def test_get_checks_name_split_and_result(registry):
    with pytest.raises(ConfigError, match=r"unknown scenario 'tsunami'.*constant"):
        scenarios.get("tsunami")
    calls = []
    scenarios.register_scenario("spy", lambda rng, s, split: calls.append(split) or 5)
    with pytest.raises(ConfigError, match=r"unknown split 'dev'.*train.*validation.*test"):
        scenarios.get("spy")(np.random.default_rng(0), EPISODE_S, "dev")
    assert calls == []  # refused before the scenario runs
    with pytest.raises(ConfigError, match="'spy' returned int, not a Schedule"):
        scenarios.get("spy")(np.random.default_rng(0), EPISODE_S, "test")
    for name in scenarios.names()[:6]:
        with pytest.raises(ConfigError, match="unknown split"):
            scenarios.get(name)(np.random.default_rng(0), EPISODE_S, "Train")


def test_split_defaults_to_train():
    assert draw("constant", 5, "train") == scenarios.get("constant")(
        np.random.default_rng(5), EPISODE_S
    )


# --------------------------------------------------------------------- splits


@pytest.mark.parametrize("name", [*SYNTHETIC, *TRACES])
@pytest.mark.parametrize("split", SPLITS)
def test_same_seed_same_schedule(name, split):
    for seed in (0, 1, 17):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        first = scenarios.get(name)(a, EPISODE_S, split)
        second = scenarios.get(name)(b, EPISODE_S, split)
        assert as_json(first) == as_json(second)
        assert a.integers(2**31) == b.integers(2**31)  # and the same draws consumed
    variants = {as_json(draw(name, seed, split)) for seed in SEEDS}
    assert len(variants) >= 2


def variants(name: str, split: str) -> set[str]:
    return {as_json(draw(name, seed, split)) for seed in SEEDS}


@pytest.mark.parametrize("name", [*SYNTHETIC, *TRACES])
def test_splits_draw_disjoint_variants(name):
    by_split = {split: variants(name, split) for split in SPLITS}
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["validation"] & by_split["test"]


# The v0 grids (the scenarios' docstrings before splits existed): train keeps them.
V0_GRIDS = {
    "constant": lambda s: s.rate in {30.0, 60.0, 90.0, 120.0, 150.0},
    "diurnal": lambda s: (
        s.base in {40.0, 60.0, 80.0, 100.0} and s.phase / EPISODE_S in {0.0, 0.25, 0.5, 0.75}
    ),
    "spikes": lambda s: (
        s.base in {30.0, 50.0, 70.0}
        and s.spike_rate / s.base in {3.0, 4.0}
        and s.every in {300.0, 600.0}
    ),
    "ramp": lambda s: (
        (s.start, s.end) in {(20.0, 120.0), (20.0, 180.0), (50.0, 200.0), (150.0, 30.0)}
    ),
}


@pytest.mark.parametrize("name", SYNTHETIC)
def test_train_is_the_v0_grid_and_held_out_values_lie_inside_it(name):
    def mean(s: Schedule) -> float:
        t = np.arange(0.5, EPISODE_S)
        return float(np.mean([s.rate_at(x) for x in t]))

    train = [draw(name, seed, "train") for seed in SEEDS]
    assert all(V0_GRIDS[name](s.shape) for s in train)
    lo, hi = min(map(mean, train)), max(map(mean, train))
    for split in ("validation", "test"):
        held = [draw(name, seed, split) for seed in SEEDS]
        assert not any(V0_GRIDS[name](s.shape) for s in held)
        assert all(lo <= mean(s) <= hi for s in held), split


# --------------------------------------------------------------------- traces


def raw_counts(stem: str) -> np.ndarray:
    """Per-second request counts of a raw Azure CSV, binned from the first second."""
    path = RAW / f"AzureLLMInferenceTrace_{stem}.csv"
    if not path.exists():
        pytest.skip(f"raw trace {path} not available")
    stamps = np.loadtxt(path, delimiter=",", skiprows=1, usecols=0, dtype=str)
    ns = stamps.astype("datetime64[ns]").astype(np.int64)
    seconds = (ns - ns[0] // 10**9 * 10**9) // 10**9
    return np.bincount(seconds)


@pytest.fixture(scope="module", params=sorted(TRACES))
def trace(request):
    name = request.param
    return name, raw_counts(TRACES[name])


def segments(n: int) -> dict[str, tuple[int, int]]:
    """The documented split: first 60 %, next 20 %, last 20 % of the seconds."""
    return {"train": (0, int(0.6 * n)), "validation": (int(0.6 * n), int(0.8 * n)),
            "test": (int(0.8 * n), n)}  # fmt: skip


def test_shipped_counts_are_the_raw_trace_binned(trace):
    name, raw = trace
    expected = {"trace-conv": (3503, 19366), "trace-code": (3437, 8819)}[name]
    assert (len(raw), int(raw.sum())) == expected  # the data README's figures
    np.testing.assert_array_equal(scenarios.trace_counts(name), raw)


def source_offset(rates: np.ndarray, segment: np.ndarray) -> tuple[int, float]:
    """(offset, scale) such that ``rates`` is ``segment`` rotated by offset, times scale
    (rounded to 0.01), where the scale takes the segment's mean to a whole number."""
    scale = round(rates.mean()) / segment.mean()
    for offset in range(len(segment)):
        if np.allclose(rates, np.roll(segment, -offset) * scale, rtol=0, atol=0.00501):
            return offset, scale
    raise AssertionError("the schedule is not a rotation of the segment")


def test_trace_replays_its_own_segment_scaled_and_looped(trace):
    name, raw = trace
    means = {"trace-conv": {40, 60, 80, 100, 120}, "trace-code": {20, 40, 60, 80}}[name]
    used: dict[str, set[int]] = {}
    for split, (a, b) in segments(len(raw)).items():
        segment = raw[a:b]
        used[split] = set()
        for seed in range(12):
            schedule = draw(name, seed, split)
            shape = schedule.shape
            assert shape.kind == "trace" and shape.loop and schedule.duration is None
            assert len(shape.points) == len(segment) + 1 <= 3600
            t, r = np.array(shape.points).T
            np.testing.assert_array_equal(t, np.arange(len(segment) + 1))
            assert r[-1] == r[0]  # the closing point repeats the first second
            offset, scale = source_offset(r[:-1], segment)
            assert round(scale * segment.mean()) in means
            assert offset in {k * len(segment) // 8 for k in range(8)}  # evenly spaced
            used[split] |= {a + (offset + i) % len(segment) for i in range(len(segment))}
            assert Schedule.model_validate_json(schedule.model_dump_json()) == schedule
        assert used[split] == set(range(a, b))
    assert not used["train"] & used["validation"]
    assert not used["train"] & used["test"]
    assert not used["validation"] & used["test"]


def episode_rates(schedule: Schedule, seconds: int = int(EPISODE_S)) -> np.ndarray:
    """Per-second rates over an episode, read straight off the looped points."""
    r = np.array(schedule.shape.points)[:-1, 1]
    return r[np.arange(seconds) % len(r)]


def dispersion(counts: np.ndarray) -> float:
    return float(counts.var() / counts.mean())


def test_trace_burstiness_survives_scaling(trace):
    """Index of dispersion of per-10 s counts (scaled rate x seconds) stays above 1."""
    name, raw = trace
    for split, (a, b) in segments(len(raw)).items():
        segment = raw[a:b]
        for seed in range(12):
            schedule = draw(name, seed, split)
            rates = episode_rates(schedule)
            scaled = dispersion(rates.reshape(-1, 10).sum(axis=1))
            offset, _ = source_offset(rates[: len(segment)], segment)
            recorded = np.roll(segment, -offset)[np.arange(int(EPISODE_S)) % len(segment)]
            unscaled = dispersion(recorded.reshape(-1, 10).sum(axis=1))
            assert scaled > 1.0
            assert scaled >= 0.99 * unscaled  # scaled up, so at least as bursty
            # and the largest deployment (30 pods x 50 requests/s) can serve 30 s peaks
            assert rates.reshape(-1, 30).mean(axis=1).max() < 1500.0


def test_trace_scenario_runs_in_the_env():
    env = gym.make("SimpleK8sWebApp-v0")
    try:
        _, info = env.reset(seed=0, options={"scenario": "trace-code"})
        assert info["schedule"]["shape"]["kind"] == "trace"
        assert len(json.dumps(info["schedule"])) < 64_000
        for _ in range(3):
            env.step(env.action_space.sample())
    finally:
        env.close()


def _containers(value, out):
    if isinstance(value, dict | list):
        out.append(id(value))
        for item in value.values() if isinstance(value, dict) else value:
            _containers(item, out)
    return out


@pytest.mark.parametrize("scenario", ["trace-conv", "constant", "step"])
def test_reset_infos_hold_fresh_schedule_dumps(scenario):
    """Variants share their schedule object and its dumps are memoised, but each reset's
    info["schedule"] is the model's JSON-mode dump in dicts and lists of its own (a
    trace's [t, rate] pairs aside: shared, read-only)."""
    from infragym.apps.workload import Step
    from infragym.twin.builder import DEPLOYMENT

    scenarios.register_scenario(
        "step", lambda rng, s, split: Schedule(shape=Step(rates=[10.0, 20.0], step_seconds=60.0)),
        replace=True,
    )  # fmt: skip
    env = gym.make("SimpleK8sWebApp-v0", scenarios=[scenario])
    try:
        infos = [env.reset(seed=1)[1] for _ in range(3)]
        siege = env.unwrapped.backend.twin.workloads[(DEPLOYMENT, "siege-engine")]
        assert infos[0]["schedule"] == siege.schedule.model_dump(mode="json")
        pairs = {id(p) for p in infos[0]["schedule"]["shape"].get("points", [])}
        seen = [set(_containers(info["schedule"], [])) - pairs for info in infos]
        assert not seen[0] & seen[1] and not seen[1] & seen[2]
        infos[0]["schedule"]["shape"]["kind"] = "changed"
        infos[0]["schedule"]["shape"].get("points", []).append([0.0, 1.0])
        assert env.reset(seed=1)[1]["schedule"] == infos[1]["schedule"]
    finally:
        env.close()
        scenarios.SCENARIOS.pop("step", None)
