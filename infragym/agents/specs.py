"""Agents named on the command line: ``hpa``, ``hpa:tuned.json``, ``ppo:runs/x``, ``mpc``.

A spec is ``NAME`` or ``NAME:ARG``. ``NAME`` is a baseline (:data:`~infragym.agents.
baselines.AGENTS`), ``mpc`` (:class:`~infragym.agents.mpc.MPCAgent`) or a learned
algorithm (:data:`LEARNED`, which needs ``:RUN_DIR``). ``hpa:PATH`` loads a tuned config
written by ``infragym tune hpa``.
"""

from __future__ import annotations

from typing import Any

from infragym.errors import ConfigError

LEARNED = ("ppo", "a2c", "maskable-ppo", "recurrent-ppo")
"""Learned agents: ``NAME:RUN_DIR`` (a directory written by ``infragym train``)."""
PLANNERS = ("mpc",)


def valid_names() -> tuple[str, ...]:
    """Every agent name a spec may start with."""
    from infragym.agents.baselines import AGENTS

    return (*AGENTS, *PLANNERS, *LEARNED)


def split_spec(spec: str) -> tuple[str, str | None]:
    """``NAME`` and ``ARG`` of ``NAME[:ARG]``, checked (not loaded).

    Raises:
        ConfigError: An unknown name (close matches listed), a learned agent without a
            run directory, or an argument given to an agent that takes none.
    """
    from infragym.catalog import unknown_choice

    name, sep, arg = spec.partition(":")
    name, arg = name.strip(), arg.strip()
    if name not in valid_names():
        raise ConfigError(unknown_choice("agent", name, valid_names()))
    if name in LEARNED and not arg:
        raise ConfigError(f"agent {name!r} needs its run directory: {name}:runs/<name>")
    if sep and not arg:
        raise ConfigError(f"agent spec {spec!r} has an empty argument after ':'")
    if arg and name not in (*LEARNED, "hpa"):
        raise ConfigError(
            f"agent {name!r} takes no argument (only hpa:CONFIG.json and "
            f"{'/'.join(LEARNED)}:RUN_DIR do), got {spec!r}"
        )
    return name, arg or None


def make(spec: str) -> Any:
    """The agent a spec names, loaded (a tuned config read, a run's model loaded).

    Raises:
        ConfigError: A bad spec, a missing or unreadable file, or the ``rl`` extra missing
            for a learned agent.
    """
    name, arg = split_spec(spec)
    if name in LEARNED:
        from infragym.agents.learned import LearnedAgent

        agent = LearnedAgent(arg, name=spec)
        if agent.config["algo"] != name:
            raise ConfigError(
                f"run {arg!r} was trained with {agent.config['algo']}, not {name}: "
                f"use {agent.config['algo']}:{arg}"
            )
        return agent
    if name == "mpc":
        from infragym.agents.mpc import MPCAgent

        return MPCAgent()
    if name == "hpa" and arg:
        from infragym.agents.tuning import load_hpa

        return load_hpa(arg, name=spec)
    from infragym.agents.baselines import make_agent

    return make_agent(name)
