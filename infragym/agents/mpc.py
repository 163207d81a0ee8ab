"""``mpc``: a lookahead planner that tries candidate actions on copies of the twin.

At each step the planner

1. forecasts the offered load of the next ``horizon`` steps from what it has observed
   (``info["metrics"]["offered_rate"]`` of past steps): a least-squares line through the
   last ``fit_steps`` observations, its slope damped, raised by ``sigmas`` standard
   deviations of the recent step-to-step changes (bursty loads get more head-room) and
   by ``margin``;
2. forks the environment's twin (``copy.deepcopy``: the compiled core copies its state),
   replaces the fork's siege-engine schedule with that forecast (a ``Step`` schedule of
   the forecast rates from now on, :meth:`Twin.set_schedule`), so **the copy never sees
   the scenario's future**, and reseeds the fork's arrival noise (the same seed for every
   candidate: common random numbers); each candidate runs on a copy of that fork;
3. for each candidate target (keep, and moves of one or two knobs from the requested
   values: replicas ±1/2/4, nodes ±1, replicas and nodes together, the CPU limit and the
   node size one step; with ``pools``, also every node size with 1-4 nodes) holds it
   for the horizon on its own copy and sums the env's reward (a missed SLO step counted
   ``slo_weight`` times);
4. takes the best candidate's first action (ties go to the earlier candidate: keep first).

Actuation is asynchronous in the copy too (it is the env's own twin), so a candidate
that adds a node pays for the boot before it serves, and a busy layer's change waits.

It needs the sim backend: the env must carry a twin (``env.unwrapped.backend.twin``).
Against the pulumi backend it would need a twin synced from observations: nodes and
pods (from kube-state-metrics), the layers' knob values and updates in flight (the
LayerQueue has them), and a per-request CPU cost estimated from
``cpu_utilisation_requests`` and ``request_rate``, rebuilt every step from a resource
graph of the deployed stacks (``SimBackend`` can start from one). The planning loop
would be unchanged; its quality would then rest on how well that synced twin predicts
the real cluster.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from infragym.errors import ConfigError

MOVES: tuple[tuple[int, int, int, int], ...] = (
    (0, 0, 0, 0),
    (1, 0, 0, 0), (-1, 0, 0, 0), (2, 0, 0, 0), (-2, 0, 0, 0), (4, 0, 0, 0), (-4, 0, 0, 0),
    (0, 0, 1, 0), (0, 0, -1, 0),
    (2, 0, 1, 0), (-2, 0, -1, 0), (4, 0, 1, 0), (-4, 0, -1, 0),
    (0, 1, 0, 0), (0, -1, 0, 0),
    (0, 0, 0, 1), (0, 0, 0, -1),
)  # fmt: skip
"""Candidate moves in knob-index steps: (replicas, cpu limit, node count, node size)."""
KNOB_ORDER = ("heater_replicas", "heater_cpu_limit", "node_count", "node_size")


def forecast(
    history: Sequence[float],
    steps: int,
    fit_steps: int = 6,
    damping: float = 0.9,
    margin: float = 0.1,
    sigmas: float = 0.0,
    spread_steps: int = 12,
) -> list[float]:
    """Offered load of the next ``steps`` steps from the observed ``history`` (oldest first).

    A least-squares line through the last ``fit_steps`` observations gives the level now
    and a slope; step ``j`` ahead gets ``level + slope × (d + d² + ... + d^j)`` with
    ``d = damping``, plus ``sigmas`` standard deviations of the step-to-step changes of
    the last ``spread_steps`` observations (a bursty load gets more head-room than a
    smooth one of the same mean), times ``1 + margin``, floored at 0.

    Raises:
        ConfigError: No history.
    """
    h = [x for x in history if x == x]  # NaN-free
    if not h:
        raise ConfigError("no observed load to forecast from")
    y = np.asarray(h[-fit_steps:], dtype=float)
    if len(y) >= 3:
        x = np.arange(len(y), dtype=float)
        slope, intercept = np.polyfit(x, y, 1)
        level = intercept + slope * x[-1]
    else:
        slope, level = 0.0, float(y[-1])
    spread = 0.0
    recent = np.asarray(h[-spread_steps:], dtype=float)
    if sigmas and len(recent) >= 3:
        spread = sigmas * float(np.std(np.diff(recent)))
    out, acc, d = [], 0.0, 1.0
    for _ in range(steps):
        d *= damping
        acc += d
        out.append(max(0.0, (level + slope * acc + spread) * (1.0 + margin)))
    return out


class MPCAgent:
    """Receding-horizon planning on copies of the sim env's twin.

    Args:
        horizon: Steps each candidate is simulated for.
        margin: Relative head-room added to the load forecast.
        fit_steps: Observations the forecast's line is fitted to.
        damping: Per-step damping of the forecast's slope.
        sigmas: Head-room in standard deviations of the recent step-to-step load changes.
        moves: Candidate moves (see :data:`MOVES`).
        pools: Also try every node size with 1-4 nodes (a pool replacement).
        slo_weight: How many times a missed SLO step counts in the plan's value.
        name: The agent's name in tables.
    """

    def __init__(
        self,
        horizon: int = 20,
        margin: float = 0.1,
        fit_steps: int = 6,
        damping: float = 0.9,
        moves: Sequence[tuple[int, int, int, int]] = MOVES,
        pools: bool = False,
        sigmas: float = 2.0,
        slo_weight: float = 1.0,
        name: str = "mpc",
    ) -> None:
        if horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {horizon!r}")
        if not (math.isfinite(margin) and margin > -1):
            raise ConfigError(f"margin must be a finite number > -1, got {margin!r}")
        self.horizon, self.margin = int(horizon), float(margin)
        self.fit_steps, self.damping = int(fit_steps), float(damping)
        self.moves = tuple(moves)
        self.pools = bool(pools)
        self.sigmas = float(sigmas)
        self.slo_weight = float(slo_weight)
        self.name = name
        from infragym.envs.rewards import SloAttainment

        self.slo = SloAttainment()

    def reset(self, env: Any, seed: int | None = None) -> None:
        self.env = env.unwrapped
        backend = getattr(self.env, "backend", None)
        if getattr(backend, "twin", None) is None or not hasattr(self.env, "knobs"):
            raise ConfigError(
                "the mpc agent plans on the sim backend's twin: this env has none "
                "(use backend='sim')"
            )
        names = [k.name for k in self.env.knobs]
        if sorted(names) != sorted(KNOB_ORDER):
            raise ConfigError(f"the mpc agent needs the knobs {KNOB_ORDER}, this env has {names}")
        self.knobs = {k.name: k for k in self.env.knobs}
        self.rng = random.Random(seed)
        self.loads: list[float] = []
        self.steps = 0
        self.limit = int(getattr(self.env, "max_episode_steps", 0) or 0)

    def _candidates(self, current: Mapping[str, Any]) -> list[dict[str, Any]]:
        seen, out = set(), []
        index = [self.knobs[n].index_of(current[n]) for n in KNOB_ORDER]
        for move in self.moves:
            target = []
            for name, i, d in zip(KNOB_ORDER, index, move, strict=True):
                top = len(self.knobs[name].values) - 1
                target.append(min(max(i + d, 0), top))
            key = tuple(target)
            if key in seen:
                continue
            seen.add(key)
            out.append({n: self.knobs[n].values[j] for n, j in zip(KNOB_ORDER, key, strict=True)})
        if self.pools:  # every node size with 1-4 nodes, the pods as they are
            for size in self.knobs["node_size"].values:
                for count in (1, 2, 3, 4):
                    target = {**{n: current[n] for n in KNOB_ORDER}, "node_size": size,
                              "node_count": count}  # fmt: skip
                    key = tuple(self.knobs[n].index_of(target[n]) for n in KNOB_ORDER)
                    if key not in seen:
                        seen.add(key)
                        out.append(target)
        return out

    def _schedule(self, twin: Any, rates: list[float], step_s: float):
        from infragym.apps.workload import Schedule, Step

        now = round(twin.t / step_s)
        # Rates before now are never served (time only moves on); they repeat the first.
        shape = Step(rates=[rates[0]] * now + rates, step_seconds=step_s)
        return lambda old: Schedule(
            shape=shape, arrivals=old.arrivals, timeout_s=old.timeout_s, duration=None
        )

    def _planning_copy(self, env: Any, rates: list[float]) -> Any:
        """A copy of ``env`` whose twin is a fork of its twin with the forecast load.

        The real env is not touched. Each candidate runs on a ``copy.deepcopy`` of it.
        """
        backend = env.backend
        real = backend.twin
        twin = copy.deepcopy(real)
        make_schedule = self._schedule(twin, rates, env.step_seconds)
        for key, w in list(twin.workloads.items()):
            if w.role == "siege" and w.schedule is not None:
                twin.set_schedule(key, make_schedule(w.schedule))
        twin.reseed(self.rng.getrandbits(32))  # common to every candidate
        backend.twin = None  # the env without its twin, then the fork put in
        try:
            shell = copy.deepcopy(env)
        finally:
            backend.twin = real
        shell.backend.twin = twin
        return shell

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        env = self.env
        m = info["metrics"]
        self.loads.append(float(m["offered_rate"]))
        self.steps += 1
        current = dict(info["knobs"])
        keep = env.codec.encode({}, current)
        seen = [x for x in self.loads if x == x and x > 0]
        if not seen:
            return keep  # nothing observed yet to plan for
        horizon = self.horizon
        if self.limit:
            horizon = max(1, min(horizon, self.limit - self.steps + 1))
        rates = forecast(seen, horizon + 1, self.fit_steps, self.damping, self.margin, self.sigmas)
        shell = self._planning_copy(env, rates)
        slo = self.slo
        best, best_value = keep, -math.inf
        for target in self._candidates(current):
            sim = copy.deepcopy(shell)
            value = 0.0
            for _ in range(horizon):
                _, reward, _, _, step_info = sim.step(sim.codec.encode(target, sim.knob_values))
                value += reward
                if self.slo_weight != 1.0:  # a missed SLO step counts slo_weight times
                    value += (self.slo_weight - 1.0) * (slo.met(step_info["metrics"]) - 1.0)
            if value > best_value + 1e-9:
                best, best_value = env.codec.encode(target, current), value
        return best
