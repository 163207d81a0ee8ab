"""Evaluate agents on an environment: returns, cost, SLO attainment and errors.

Used by ``infragym evaluate``; also callable from Python.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infragym.envs.rewards import SloAttainment
from infragym.errors import ConfigError


@dataclass
class EpisodeStats:
    """One episode of one agent."""

    ret: float
    mean_cost_hourly: float
    cost_usd: float
    slo_attainment: float
    mean_error_ratio: float
    latency_p95: list[float] = field(default_factory=list)
    replicas: list[float] = field(default_factory=list)
    offered: list[float] = field(default_factory=list)


@dataclass
class AgentSummary:
    """Means over an agent's episodes."""

    agent: str
    episodes: list[EpisodeStats]
    wall_s: float = 0.0

    def mean(self, attr: str) -> float:
        return float(np.mean([getattr(e, attr) for e in self.episodes]))

    def values(self, attr: str) -> np.ndarray:
        """One value of ``attr`` per episode, in episode order."""
        return np.array([getattr(e, attr) for e in self.episodes], dtype=float)


def run_episode(
    env, agent, seed: int, slo: SloAttainment, scenario: str | None = None
) -> EpisodeStats:
    """Run one episode of ``agent`` on ``env``."""
    options = {"scenario": scenario} if scenario else None
    obs, info = env.reset(seed=seed, options=options)
    agent.reset(env, seed=seed)
    ret, met, steps = 0.0, 0, 0
    costs, errors, p95, replicas, offered = [], [], [], [], []
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
        m = info["metrics"]
        ret += reward
        steps += 1
        met += slo.met(m)
        costs.append(m["cost_hourly"])
        errors.append(0.0 if math.isnan(m["error_ratio"]) else m["error_ratio"])
        p95.append(m["latency_p95"])
        replicas.append(m["replicas_ready"])
        offered.append(m["offered_rate"])
        done = terminated or truncated
    return EpisodeStats(
        ret=ret,
        mean_cost_hourly=float(np.mean(costs)),
        cost_usd=float(info.get("cost_usd", np.sum(costs) * env.unwrapped.step_seconds / 3600)),
        slo_attainment=met / max(steps, 1),
        mean_error_ratio=float(np.mean(errors)),
        latency_p95=p95,
        replicas=replicas,
        offered=offered,
    )


def evaluate(
    make_env: Callable[[], Any],
    agents: Sequence[Any],
    episodes: int,
    seed: int = 0,
    on_episode: Callable[[str, int], None] | None = None,
    slo: SloAttainment | None = None,
    scenarios: Sequence[str] | None = None,
) -> list[AgentSummary]:
    """Every agent on the same seeds (so the same scenarios), ``episodes`` each.

    Episode ``i`` runs seed ``seed + i``; with ``scenarios``, also scenario
    ``scenarios[i % len(scenarios)]`` (every family equally often), else the env draws one.
    Episodes of different agents with the same index are paired: same scenario, same
    schedule, same twin seed (see :func:`compare`).

    Raises:
        ConfigError: No agents, fewer than one episode, or a negative seed (before any
            episode runs).
    """
    if not agents:
        raise ConfigError("no agents to evaluate")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"episodes must be an integer >= 1, got {episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    slo = slo or SloAttainment()
    results = []
    for agent in agents:
        env = make_env()
        start = time.perf_counter()
        try:
            stats = []
            for i in range(episodes):
                scenario = scenarios[i % len(scenarios)] if scenarios else None
                stats.append(run_episode(env, agent, seed + i, slo, scenario))
                if on_episode:
                    on_episode(agent.name, i)
        finally:
            env.close()
        results.append(AgentSummary(agent.name, stats, time.perf_counter() - start))
    return results


METRICS = ("ret", "mean_cost_hourly", "slo_attainment", "mean_error_ratio")
"""The per-episode figures :func:`compare` reports."""


@dataclass
class Difference:
    """An agent's difference to the reference on one metric, with a 95 % interval.

    ``relative`` differences (cost) are ``mean(agent) / mean(reference) - 1``; the others
    are ``mean(agent) - mean(reference)``.
    """

    metric: str
    value: float
    low: float
    high: float
    relative: bool = False


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    relative: bool = False,
    resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """The difference of means of paired samples ``a`` and ``b``, and its percentile
    bootstrap interval (episodes resampled with replacement, pairs kept together).

    Args:
        a: The agent's per-episode values.
        b: The reference's values on the same episodes.
        relative: ``mean(a) / mean(b) - 1`` instead of ``mean(a) - mean(b)``.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        level: Coverage of the interval.

    Raises:
        ConfigError: Samples of different lengths or empty.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ConfigError(f"paired samples need equal, non-zero lengths: {a.shape}, {b.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(resamples, a.size))
    ma, mb = a[idx].mean(axis=1), b[idx].mean(axis=1)
    if relative:
        with np.errstate(divide="ignore", invalid="ignore"):
            diffs, value = ma / mb - 1.0, a.mean() / b.mean() - 1.0
    else:
        diffs, value = ma - mb, a.mean() - b.mean()
    tail = (1.0 - level) / 2 * 100
    low, high = np.nanpercentile(diffs, [tail, 100 - tail])
    return float(value), float(low), float(high)


def compare(
    results: Sequence[AgentSummary], reference: str | None = None, seed: int = 0
) -> dict[str, dict[str, Difference]]:
    """Each agent's differences to ``reference`` (default: the first) on :data:`METRICS`.

    Cost is relative (``-0.12`` = 12 % cheaper); return, SLO attainment and error ratio
    are absolute differences. Agents must have run the same episodes (:func:`evaluate`).

    Raises:
        ConfigError: An unknown reference, or agents with different episode counts.
    """
    if not results:
        raise ConfigError("no results to compare")
    names = [r.agent for r in results]
    ref_name = reference if reference is not None else names[0]
    if ref_name not in names:
        raise ConfigError(f"reference agent {ref_name!r} is not among {', '.join(names)}")
    ref = results[names.index(ref_name)]
    out: dict[str, dict[str, Difference]] = {}
    for r in results:
        if len(r.episodes) != len(ref.episodes):
            raise ConfigError(
                f"{r.agent} ran {len(r.episodes)} episodes, {ref_name} {len(ref.episodes)}: "
                "paired differences need the same episodes"
            )
        diffs = {}
        for metric in METRICS:
            relative = metric == "mean_cost_hourly"
            value, low, high = paired_bootstrap(
                r.values(metric), ref.values(metric), relative=relative, seed=seed
            )
            diffs[metric] = Difference(metric, value, low, high, relative)
        out[r.agent] = diffs
    return out


def to_json(
    results: Sequence[AgentSummary],
    differences: dict[str, dict[str, Difference]],
    reference: str,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Results and differences as a JSON-ready dict (means, per-episode values, CIs)."""
    agents = []
    for r in results:
        agents.append(
            {
                "agent": r.agent,
                "wall_s": round(r.wall_s, 2),
                "means": {m: r.mean(m) for m in (*METRICS, "cost_usd")},
                "episodes": {m: r.values(m).tolist() for m in METRICS},
                "vs_reference": {
                    m: {"value": d.value, "low": d.low, "high": d.high, "relative": d.relative}
                    for m, d in differences[r.agent].items()
                },
            }
        )
    return {"reference": reference, **(meta or {}), "agents": agents}


def plot(results: Sequence[AgentSummary], path: str, step_seconds: float) -> None:
    """A PNG: p95 latency, ready replicas and load over the first episode, per agent.

    ``path`` is written as given (see :func:`plot_path` for the name the CLI uses).

    Raises:
        ConfigError: No results to plot.
    """
    if not results or not all(r.episodes for r in results):
        raise ConfigError("no results to plot: evaluate at least one agent for one episode")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True, dpi=100)
    for summary in results:
        ep = summary.episodes[0]
        t = np.arange(1, len(ep.latency_p95) + 1) * step_seconds / 60
        axes[0].plot(t, np.array(ep.latency_p95) * 1000, label=summary.agent)
        axes[1].plot(t, ep.replicas, label=summary.agent)
    first = results[0].episodes[0]
    axes[2].plot(np.arange(1, len(first.offered) + 1) * step_seconds / 60, first.offered, color="k")
    axes[0].axhline(SloAttainment().target_s * 1000, color="gray", ls="--", lw=1, label="SLO")
    axes[0].set_ylabel("p95 latency (ms)")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("ready replicas")
    axes[2].set_ylabel("offered load (req/s)")
    axes[2].set_xlabel("minutes (episode 1)")
    axes[0].legend(fontsize=8)
    fig.suptitle("infragym evaluate: first episode")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI checks


def check_env_id(env_id: str) -> str:
    """The infragym environment id ``env_id`` names (``infragym:`` prefix allowed).

    Raises:
        ConfigError: An unknown id (close matches listed), or the id of an environment
            that is not infragym's.
    """
    from gymnasium.envs.registration import registry

    from infragym.catalog import unknown_choice
    from infragym.envs import ENV_IDS

    name = env_id.removeprefix("infragym:")
    if name in ENV_IDS:
        return name
    if env_id in registry:
        raise ConfigError(
            f"{env_id!r} is not an infragym environment (another package registered it); "
            f"infragym environments: {', '.join(ENV_IDS)}"
        )
    raise ConfigError(unknown_choice("environment", env_id, ENV_IDS))


def agent_names(text: str) -> list[str]:
    """The agent specs of a comma-separated list (``"hpa,hpa:tuned.json,ppo:runs/x"``),
    checked (not loaded: see :func:`infragym.agents.specs.make`).

    Raises:
        ConfigError: The list is empty, names an agent twice or an unknown agent, or a
            spec is malformed (a learned agent without its run directory).
    """
    from infragym.agents.specs import split_spec, valid_names

    names = [a.strip() for a in text.split(",") if a.strip()]
    if not names:
        raise ConfigError(
            f"no agents given: pass a comma-separated list of {', '.join(valid_names())} "
            "(hpa:CONFIG.json and ppo:RUN_DIR load a tuned or trained agent)"
        )
    for i, name in enumerate(names):
        split_spec(name)
        if name in names[:i]:
            raise ConfigError(f"agent {name!r} is given twice in {text!r}")
    return names


def scenario_list(text: str | None, available: Sequence[str]) -> list[str]:
    """The scenarios of a comma-separated list, checked against the env's ``available``
    ones; ``None`` or ``"all"`` gives them all.

    Raises:
        ConfigError: An empty list, or an unknown or repeated scenario.
    """
    from infragym.catalog import unknown_choice

    if text is None or text.strip() == "all":
        return list(available)
    names = [a.strip() for a in text.split(",") if a.strip()]
    if not names:
        raise ConfigError(f"no scenarios given: pass 'all' or some of {', '.join(available)}")
    for i, name in enumerate(names):
        if name not in available:
            raise ConfigError(unknown_choice("scenario", name, available))
        if name in names[:i]:
            raise ConfigError(f"scenario {name!r} is given twice in {text!r}")
    return names


def plot_path(path: str | os.PathLike[str]) -> Path:
    """The file a plot for ``path`` goes to, checked writable before a run.

    A directory gets ``evaluate.png`` in it; a name without a suffix gets ``.png`` (as
    matplotlib would add); a suffix must be an image format matplotlib writes.

    Raises:
        ConfigError: An unknown format, a missing directory, or one that cannot be
            written (tested by creating and removing a temporary file in it).
    """
    from matplotlib.backend_bases import FigureCanvasBase

    out = Path(path).expanduser()
    if out.is_dir():
        out = out / "evaluate.png"
    if not out.suffix:
        out = out.with_name(out.name + ".png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix[1:].lower() not in formats:
        raise ConfigError(
            f"cannot write a plot to {str(out)!r}: unknown image format {out.suffix!r} "
            f"(valid: {', '.join('.' + f for f in sorted(formats))})"
        )
    parent = out.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write the plot to {str(out)!r}: no directory {str(parent)!r}")
    if out.exists() and not (out.is_file() and os.access(out, os.W_OK)):
        raise ConfigError(f"cannot write the plot to {str(out)!r}: it is not a writable file")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".infragym-plot-check-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write the plot to {str(out)!r}: directory {str(parent)!r} is not "
            f"writable ({exc.strerror or exc})"
        ) from None
    return out
