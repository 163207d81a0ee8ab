"""Tune the HPA + cluster-autoscaler baseline with Optuna (``infragym tune hpa``).

The search space is what an operator of an autoscaled DOKS cluster sets: the HPA's
target utilisation, tolerance, scale-down window and minimum replicas, the cluster
autoscaler's scale-down utilisation threshold and delay, and the fixed parts of the
deployment the autoscalers do not change (the node pool's droplet size, the heater's CPU
limit). Each trial runs the agent on the same ``train``-split episodes (common random
numbers: seeds ``seed ... seed + episodes_per_trial - 1``, scenario families in turn);
its score is the mean return. The budget is counted in environment steps, so it can equal
an RL agent's training budget: ``budget_steps // (episodes_per_trial × episode steps)``
trials.

The result is a JSON file (:func:`save_tuned`) that ``infragym evaluate --agents
hpa:PATH`` loads (:func:`load_hpa`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infragym.agents.base import CompositeAgent
from infragym.agents.baselines import ClusterAutoscalerAgent, HPAAgent, StaticAgent
from infragym.errors import ConfigError

HPA_KEYS = ("target_utilisation", "tolerance", "scale_down_window_s", "min_replicas")
CA_KEYS = ("scale_down_utilisation", "scale_down_delay_s")
STATIC_KEYS = ("node_size", "heater_cpu_limit")
SAMPLERS = ("tpe", "random")
OPTUNA_HINT = "needs optuna: pip install -e '.[rl]' (or pip install optuna)"


def hpa_agent(params: Mapping[str, Any], name: str = "hpa") -> CompositeAgent:
    """The HPA + cluster autoscaler (+ fixed node size and CPU limit) with ``params``.

    Args:
        params: Flat parameters: any of :data:`HPA_KEYS`, :data:`CA_KEYS` and
            :data:`STATIC_KEYS`; missing ones keep the Kubernetes defaults (and the
            deployed node size and CPU limit).
        name: The agent's name in tables.

    Raises:
        ConfigError: An unknown parameter.
    """
    unknown = set(params) - set(HPA_KEYS + CA_KEYS + STATIC_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown hpa parameters {sorted(unknown)}; valid: "
            f"{', '.join(HPA_KEYS + CA_KEYS + STATIC_KEYS)}"
        )
    hpa = HPAAgent(**{k: params[k] for k in HPA_KEYS if k in params})
    ca = ClusterAutoscalerAgent(**{k: params[k] for k in CA_KEYS if k in params})
    fixed = {k: params[k] for k in STATIC_KEYS if k in params}
    parts = (StaticAgent(fixed), hpa, ca) if fixed else (hpa, ca)
    return CompositeAgent(name, *parts)


def load_hpa(path: str | Path, name: str | None = None) -> CompositeAgent:
    """The agent a tuned JSON (from :func:`tune_hpa`) describes.

    Raises:
        ConfigError: No such file, not JSON, or no ``params`` in it.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no hpa config {str(p)!r} (write one with `infragym tune hpa`)")
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the hpa config {str(p)!r}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        raise ConfigError(f"{str(p)!r} is not an hpa config: it needs a 'params' object")
    return hpa_agent(data["params"], name or f"hpa:{p.stem}")


def suggest(trial: Any, node_sizes: tuple[str, ...], cpu_limits: tuple[str, ...]) -> dict:
    """One point of the search space, drawn by an Optuna trial."""
    return {
        "target_utilisation": trial.suggest_float("target_utilisation", 0.4, 3.6),
        "tolerance": trial.suggest_float("tolerance", 0.0, 0.3),
        "scale_down_window_s": trial.suggest_int("scale_down_window_s", 0, 600, step=30),
        "min_replicas": trial.suggest_int("min_replicas", 1, 8),
        "scale_down_utilisation": trial.suggest_float("scale_down_utilisation", 0.3, 0.95),
        "scale_down_delay_s": trial.suggest_int("scale_down_delay_s", 0, 900, step=30),
        "node_size": trial.suggest_categorical("node_size", list(node_sizes)),
        "heater_cpu_limit": trial.suggest_categorical("heater_cpu_limit", list(cpu_limits)),
    }


def score(
    make_env: Callable[[], Any], agent: Any, episodes: int, seed: int, env=None
) -> dict[str, float]:
    """Mean return, cost and SLO attainment of ``agent`` on ``episodes`` episodes, the
    scenario families in turn (episode ``i``: seed ``seed + i``)."""
    from infragym.envs.rewards import SloAttainment
    from infragym.evaluate import run_episode

    own = env is None
    env = env or make_env()
    try:
        names = env.unwrapped.scenario_names
        stats = [
            run_episode(env, agent, seed + i, SloAttainment(), names[i % len(names)])
            for i in range(episodes)
        ]
    finally:
        if own:
            env.close()
    n = len(stats)
    return {
        "return": sum(s.ret for s in stats) / n,
        "cost_hourly": sum(s.mean_cost_hourly for s in stats) / n,
        "slo_attainment": sum(s.slo_attainment for s in stats) / n,
        "error_ratio": sum(s.mean_error_ratio for s in stats) / n,
    }


def tune_hpa(
    env_id: str = "SimpleK8sWebApp-v1",
    budget_steps: int = 300_000,
    episodes_per_trial: int = 12,
    seed: int = 0,
    sampler: str = "tpe",
    env_kwargs: Mapping[str, Any] | None = None,
    on_trial: Callable[[int, int, float, float], None] | None = None,
) -> dict[str, Any]:
    """Search HPA and cluster-autoscaler parameters on the ``train`` split.

    Args:
        env_id: The environment (its knobs must be v0/v1's).
        budget_steps: Environment steps for the whole search.
        episodes_per_trial: Episodes each trial is scored on.
        seed: Seed of the sampler and of the first episode.
        sampler: ``tpe`` or ``random``.
        env_kwargs: More ``gym.make`` arguments (``split`` is forced to ``train``).
        on_trial: Called with (trial number, trials, its return, best return so far).

    Returns:
        The tuned config: ``params``, their ``train`` score, the default HPA's score on the
        same episodes, the trials run, the steps spent and the wall time.

    Raises:
        ConfigError: A bad budget (less than one trial), sampler, or optuna missing.
    """
    import gymnasium as gym

    import infragym  # noqa: F401

    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    for attr, value in (("episodes_per_trial", episodes_per_trial), ("seed", seed),
                        ("budget_steps", budget_steps)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{attr} must be a non-negative integer, got {value!r}")
    kwargs = {"action_mode": "absolute", **dict(env_kwargs or {})}
    if env_id.endswith("-v1"):
        kwargs["split"] = "train"

    def make_env():
        return gym.make(env_id, **kwargs)

    env = make_env()
    episode_steps = env.spec.max_episode_steps or env.unwrapped.max_episode_steps
    per_trial = episodes_per_trial * episode_steps
    trials = budget_steps // per_trial if per_trial else 0
    if trials < 1:
        env.close()
        raise ConfigError(
            f"a budget of {budget_steps} steps is less than one trial "
            f"({episodes_per_trial} episodes × {episode_steps} steps = {per_trial})"
        )
    try:
        import optuna
    except ImportError:
        env.close()
        raise ConfigError(f"infragym tune {OPTUNA_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    knobs = {k.name: k for k in env.unwrapped.knobs}
    env.reset(seed=seed)  # the deployed knob values: the default trial's node size and limit
    sizes = tuple(knobs["node_size"].values)
    limits = tuple(knobs["heater_cpu_limit"].values)
    make = (
        optuna.samplers.TPESampler(seed=seed, multivariate=True)
        if sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    study = optuna.create_study(direction="maximize", sampler=make)
    # The Kubernetes defaults as the first trial: the search starts from the default rule.
    study.enqueue_trial(
        {"target_utilisation": 0.7, "tolerance": 0.1, "scale_down_window_s": 300,
         "min_replicas": 1, "scale_down_utilisation": 0.5, "scale_down_delay_s": 600,
         "node_size": str(env.unwrapped.knob_values["node_size"]),
         "heater_cpu_limit": str(env.unwrapped.knob_values["heater_cpu_limit"])}
    )  # fmt: skip
    start = time.perf_counter()
    scores: dict[int, dict[str, float]] = {}

    def objective(trial) -> float:
        params = suggest(trial, sizes, limits)
        result = score(make_env, hpa_agent(params), episodes_per_trial, seed, env)
        scores[trial.number] = result
        return result["return"]

    def callback(study, trial) -> None:
        if on_trial:
            on_trial(trial.number, trials, trial.value, study.best_value)

    try:
        study.optimize(objective, n_trials=trials, callbacks=[callback])
        default = score(make_env, hpa_agent({}), episodes_per_trial, seed, env)
    finally:
        env.close()
    best = study.best_trial
    return {
        "agent": "hpa",
        "env_id": env_id,
        "params": dict(best.params),
        "train_score": scores[best.number],
        "default_train_score": default,
        "tuning": {
            "sampler": sampler,
            "seed": seed,
            "budget_steps": budget_steps,
            "episodes_per_trial": episodes_per_trial,
            "trials": len(study.trials),
            "steps": len(study.trials) * per_trial,
            "wall_s": round(time.perf_counter() - start, 1),
            "split": "train",
        },
    }


def save_tuned(result: Mapping[str, Any], path: str | Path) -> Path:
    """Write a tuned config as JSON (directories created); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    return p


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
