"""Evaluate agents on an environment: returns, cost, SLO attainment and errors.

Used by ``infragym evaluate``; also callable from Python.
"""

from __future__ import annotations

import math
import os
import tempfile
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

    def mean(self, attr: str) -> float:
        return float(np.mean([getattr(e, attr) for e in self.episodes]))


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
) -> list[AgentSummary]:
    """Every agent on the same seeds (so the same scenarios), ``episodes`` each.

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
        try:
            stats = []
            for i in range(episodes):
                stats.append(run_episode(env, agent, seed + i, slo))
                if on_episode:
                    on_episode(agent.name, i)
        finally:
            env.close()
        results.append(AgentSummary(agent.name, stats))
    return results


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
    """The agent names of a comma-separated list (``"hpa,static"``), checked.

    Raises:
        ConfigError: The list is empty, names an agent twice or an unknown agent.
    """
    from infragym.agents.baselines import AGENTS
    from infragym.catalog import unknown_choice

    names = [a.strip() for a in text.split(",") if a.strip()]
    if not names:
        raise ConfigError(f"no agents given: pass a comma-separated list of {', '.join(AGENTS)}")
    for i, name in enumerate(names):
        if name not in AGENTS:
            raise ConfigError(unknown_choice("agent", name, AGENTS))
        if name in names[:i]:
            raise ConfigError(f"agent {name!r} is given twice in {text!r}")
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
