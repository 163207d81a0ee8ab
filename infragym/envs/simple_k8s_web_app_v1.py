"""SimpleK8sWebApp-v1: v0's task with asynchronous actuation, an observation of what runs,
and a reward in which cost counts."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from infragym import metrics
from infragym.envs import arguments, clusters
from infragym.envs import scenarios as scenario_lib
from infragym.envs.rewards import ErrorPenalty, RewardSum, SloAttainment
from infragym.envs.simple_k8s_web_app import (
    LAYERS,
    OBS_CLIP,
    OBSERVED_METRICS,
    SimpleK8sWebAppEnv,
)
from infragym.errors import ConfigError
from infragym.knobs import ActionMode

OBSERVED_METRICS_V1 = (*OBSERVED_METRICS, "replicas_starting", "nodes_booting", "next_node_ready_s")
RATE_SCALE = 250.0
"""Observation scale of request rates: the built-in scenarios run about 20-250 req/s."""
COST_SCALE_BY_REFERENCE = 4.0
"""``cost_hourly`` is observed relative to the reference cost, divided by this."""
UPDATE_LAYERS = ("do-managed-k8s", "k8s-heater")
"""The layers the knobs change, in the order of their "update in flight" entries (the
first is the layer in the ``cluster`` role: ``local-k8s`` with ``cluster="local-k8s"``)."""
LOAD_HISTORY = 8
"""Steps of offered load before the current one in the observation: 8 × 30 s = 240 s, a
node's boot time, so the agent sees the trend over the time a node it asks for takes to
serve."""
V1_SETTINGS: dict[str, dict[str, Any]] = {
    "do-managed-k8s": {"node_size": "s-4vcpu-8gb", "node_count": 2},
    "k8s-heater": {"replicas": 6, "cpu_limit": "1000m"},
}
"""v1's starting deployment (overridable with ``settings``): 6 heater pods at 1 CPU on two
4-vCPU workers serve about 200 req/s within the SLO, the starting load of every built-in
scenario, so the first step's reward depends on the agent's first action rather than on
a start no action can rescue."""


@dataclass(frozen=True)
class RelativeCostPenalty:
    """``-weight × cost_hourly / cost_reference``.

    ``cost_reference`` is in the metrics dict the env passes to its reward: the hourly
    cost of the starting deployment. With ``weight = 1``, a 10 % change in cost moves a
    step's reward by 0.1 × (cost / reference), a tenth of an SLO step at the start's cost.
    """

    weight: float = 1.0

    def __call__(self, m: Mapping[str, float]) -> float:
        return -self.weight * m["cost_hourly"] / m["cost_reference"]


def default_reward_v1(slo_target_s: float = 0.25, cost_weight: float = 1.0) -> RewardSum:
    """SLO attainment (+1) minus 2 × error ratio minus ``cost_weight`` × cost / reference."""
    return RewardSum(
        SloAttainment(target_s=slo_target_s),
        ErrorPenalty(2.0),
        RelativeCostPenalty(cost_weight),
    )


class SimpleK8sWebAppV1Env(SimpleK8sWebAppEnv):
    """Autoscale the heater web app on a DigitalOcean Kubernetes cluster under changing load.

    ## Description

    The deployment and the task are v0's (six Pulumi layers: ``do-core``,
    ``do-managed-k8s``, ``k8s-core``, ``k8s-prometheus``, ``k8s-heater``,
    ``k8s-siege-engine``; meet a p95 latency SLO at the lowest cost), with actuation as on
    real infrastructure. An action sets *desired* state. Each layer runs one update at a
    time: a change to a layer whose update is in flight waits, coalesced to the latest
    desired value, and starts when that update completes; nothing started is cancelled.
    A node pool update completes when its nodes are Ready (a size change brings up a new
    pool, billed from Ready, and drains the old one after); a Deployment update when every
    replica is Ready, or after the Kubernetes provider's 10-minute await timeout.

    ## Action Space

    ``MultiDiscrete`` over four knobs. In ``delta`` mode (default) each entry is 0 (one
    step down), 1 (keep) or 2 (one step up); in ``absolute`` mode it is the index of the
    value.

    | Num | Knob             | Resource, property                         | Domain              |
    |-----|------------------|--------------------------------------------|---------------------|
    | 0   | heater_replicas  | Deployment heater, spec.replicas           | 1 … 30              |
    | 1   | heater_cpu_limit | container heater, resources.limits.cpu     | 500m, 750m, 1000m   |
    | 2   | node_count       | KubernetesNodePool workers, nodeCount      | 1 … 10              |
    | 3   | node_size        | KubernetesNodePool workers, size           | 1, 2, 4, 8 vCPU     |

    The CPU limit starts at 500m: at 250m (v0's lowest) a pod's mean service time is 80 ms
    and its p95 above 240 ms with no queue at all, so it misses the SLO at every load, and
    a heater pod (one worker process) cannot use more than one CPU.

    ## Observation Space

    ``Box(0, 10, (35,), float32)``: each entry divided by its scale and clipped to
    [0, 10]; NaN (for example latency when no request completed) becomes 0 and is listed
    in ``info["missing"]``. Raw values are in ``info["metrics"]``, ``info["knobs"]``
    (requested), ``info["knobs_running"]`` and ``info["updates"]``.

    | Num   | Observation                                   | Unit  | Scale          |
    |-------|-----------------------------------------------|-------|----------------|
    | 0-1   | request_rate, offered_rate                    | req/s | 250            |
    | 2-4   | latency_p50 / p95 / p99                       | s     | 1              |
    | 5     | error_ratio                                   | ratio | 1              |
    | 6     | cpu_utilisation_requests                      | ratio | 1.5            |
    | 7     | cpu_utilisation_limits                        | ratio | 1              |
    | 8     | replicas_desired                              | count | 20             |
    | 9     | replicas_ready                                | count | 20             |
    | 10    | nodes_ready                                   | count | 10             |
    | 11    | pods_pending                                  | count | 20             |
    | 12    | cost_hourly                                   | ratio | 4 × reference  |
    | 13    | replicas_starting (created, not Ready)        | count | 20             |
    | 14    | nodes_booting                                 | count | 10             |
    | 15    | next_node_ready_s (0 when none boots)         | s     | 300            |
    | 16-17 | update in flight: do-managed-k8s, k8s-heater  | 0/1   | 1              |
    | 18-21 | requested knob positions (index / (n-1))      | –     | 1              |
    | 22-25 | running knob positions (last completed update)| –     | 1              |
    | 26    | episode progress (steps / max_episode_steps)  | –     | 1              |
    | 27-34 | offered_rate of the 8 previous steps, newest first | req/s | 250       |

    The load history covers 240 s, a node's boot time: enough to see the trend a node
    asked for now will meet. At reset it holds the first step's rate.

    ## Rewards

    By default (:func:`default_reward_v1`) ``+1`` for a step whose p95 latency is at most
    250 ms with at most 1 % errors, minus ``2 × error_ratio``, minus
    ``cost_weight × cost_hourly / cost_reference``, where ``cost_reference`` is the hourly
    cost of the starting deployment (``info["cost_reference"]``). With ``cost_weight=1``
    a 10 % cheaper deployment gains 0.1 × its cost ratio per step: a tenth of an SLO step
    at the starting cost. Pass ``reward=`` any callable of the metrics dict (it contains
    ``cost_reference`` too).

    ## Starting State

    Two ``s-4vcpu-8gb`` workers and 6 heater replicas at 250m request / 1000m limit, Ready
    (:data:`V1_SETTINGS`; ``settings`` overrides them). The scenario is drawn from
    ``np_random`` among ``scenarios`` (default: every registered one, the synthetic
    ``constant``, ``diurnal``, ``spikes``, ``ramp`` and the real traces ``trace-conv`` and
    ``trace-code``; see ``docs/scenarios.md``), in its variant for the env's ``split``, or
    chosen with ``reset(options={"scenario": name, "split": split})``. ``reset``'s info
    says which (``scenario``, ``split``, ``schedule``: as in v0, a trace's points shared).

    ## Episode End

    No termination; truncation after ``max_episode_steps`` (120 steps = 1 hour at the
    default ``step_seconds``).

    ## Arguments

    ``gym.make("SimpleK8sWebApp-v1", backend="sim", step_seconds=30, action_mode="delta",
    reward=None, cost_weight=1.0, scenarios=None, split="train", settings=None,
    node_sizes=None, render_mode=None, backend_options=None)``. As v0, plus ``split``
    (``train``, ``validation`` or ``test``: each scenario family's variants for it) and
    ``cost_weight`` (of the default reward), and ``cluster`` as v0's (``"local-k8s"``:
    the local cluster of ``infragym cluster up`` in place of DOKS, on the pulumi backend;
    :data:`V1_SETTINGS`' node settings then apply to its workers pool, entry 16 is its
    update in flight, and the request metrics are missing). The backend runs with
    ``actuation="async"``, on the compiled twin core. With the default reward, a whole
    step runs in the core's env kernel, one call a step (:mod:`infragym.envs.kernel`; the
    same episodes as the Python step, which ``env.unwrapped.use_kernel = False`` forces).

    ## Version History

    * v1: Asynchronous actuation (one update per layer at a time; a node-size change can
      no longer cancel a pool replacement for free, which v0 agents learned to exploit);
      observation of what runs, what boots, updates in flight, time and recent load;
      cost relative to the starting deployment in the reward; CPU limits without the
      dead 250m; a starting deployment that serves the starting load; scenario splits.
    * v0: Initial version. Kept for reproducing earlier results; its immediate actuation
      lets a second size change cancel a replacement's booting nodes for free.
    """

    cpu_limits = ("500m", "750m", "1000m")
    actuation = "async"

    @staticmethod
    def default_scenarios() -> tuple[str, ...]:
        """Every registered scenario, real traces included (:func:`scenarios.names`)."""
        return scenario_lib.names()

    def __init__(
        self,
        render_mode: str | None = None,
        backend: str = "sim",
        step_seconds: float = 30.0,
        action_mode: ActionMode = "delta",
        reward: Callable[[Mapping[str, float]], float] | None = None,
        scenarios: Sequence[str] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        node_sizes: Sequence[str] | None = None,
        backend_options: Mapping[str, Any] | None = None,
        max_episode_steps: int = 120,
        split: str = "train",
        cost_weight: float = 1.0,
        cluster: str = clusters.DOKS,
        **unknown: Any,
    ) -> None:
        choice = clusters.get(cluster, backend)
        merged = {choice.settings_key(k): dict(v) for k, v in V1_SETTINGS.items()}
        for layer, values in arguments.settings(settings, choice.layers(LAYERS)).items():
            merged.setdefault(layer, {}).update(values)
        if not (isinstance(cost_weight, int | float) and math.isfinite(cost_weight)):
            raise ConfigError(f"cost_weight must be a finite number, got {cost_weight!r}")
        super().__init__(
            render_mode=render_mode,
            backend=backend,
            step_seconds=step_seconds,
            action_mode=action_mode,
            reward=reward or default_reward_v1(cost_weight=float(cost_weight)),
            scenarios=scenarios,
            settings=merged,
            node_sizes=node_sizes,
            backend_options=backend_options,
            max_episode_steps=max_episode_steps,
            split=split,
            cluster=cluster,
            **unknown,  # refused there with a ConfigError
        )
        self.update_layers = (choice.layer, *UPDATE_LAYERS[1:])
        self.metric_names = OBSERVED_METRICS_V1
        scales = {n: metrics.get(n).scale for n in OBSERVED_METRICS_V1}
        scales.update(request_rate=RATE_SCALE, offered_rate=RATE_SCALE)
        self._scales = list(scales.items())
        self._cost_scale = 1.0
        n_obs = len(OBSERVED_METRICS_V1) + len(UPDATE_LAYERS) + 2 * len(self.knobs) + 1
        n_obs += LOAD_HISTORY
        self.observation_space = spaces.Box(0.0, OBS_CLIP, shape=(n_obs,), dtype=np.float32)
        self.cost_reference = math.nan

    # ------------------------------------------------------------------ helpers

    def _begin_episode(self, observed: dict[str, float]) -> dict[str, float]:
        self.cost_reference = observed["cost_hourly"]
        self._cost_scale = COST_SCALE_BY_REFERENCE * self.cost_reference
        observed["cost_reference"] = self.cost_reference
        return observed

    def _observe(self) -> dict[str, float]:
        observed = self.backend.observe(self.metric_names)
        observed["cost_reference"] = self.cost_reference
        return observed

    def _observation(self, observed: Mapping[str, float]) -> tuple[np.ndarray, list[str]]:
        values: list[float] = []
        missing: list[str] = []
        for name, scale in self._scales:
            v = observed[name] / (self._cost_scale if name == "cost_hourly" else scale)
            if not 0.0 <= v <= OBS_CLIP:  # out of range, or NaN
                if v != v:
                    missing.append(name)
                v = OBS_CLIP if v > OBS_CLIP else 0.0
            values.append(v)
        queue = self.backend.queue
        values += [1.0 if busy else 0.0 for busy in queue.busy(self.update_layers)]
        values += self._knob_obs
        applied = queue.applied
        for knob, (_, _, positions, _) in zip(self.knobs, self._knob_tables, strict=True):
            values.append(positions[knob.index_of(applied[knob.name])])
        values.append(min(self.steps / self.max_episode_steps, 1.0))
        history = self.history  # this step's metrics last
        for back in range(2, LOAD_HISTORY + 2):  # the steps before it, newest first
            rate = history[-back if back <= len(history) else 0]["offered_rate"]
            values.append(min(max(0.0, rate / RATE_SCALE), OBS_CLIP))  # NaN (unmeasured): 0
        return np.array(values, dtype=np.float32), missing

    def _info(
        self, observed: Mapping[str, float], missing: list[str], layers: tuple[str, ...]
    ) -> dict[str, Any]:
        info = super()._info(observed, missing, layers)
        info["knobs_running"] = dict(self.backend.queue.applied)
        info["cost_reference"] = self.cost_reference
        return info
