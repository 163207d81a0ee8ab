"""SimpleK8sWebApp-v0: autoscale a web app on a DigitalOcean Kubernetes cluster."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from infragym import catalog, metrics
from infragym.apps.dumps import schedule_dump
from infragym.backends import Change, LayerSpec, make_backend
from infragym.envs import arguments, clusters, kernel
from infragym.envs import scenarios as scenario_lib
from infragym.envs.rewards import default_reward
from infragym.errors import ConfigError
from infragym.knobs import ActionCodec, ActionMode, Choice, IntRange, Knob, get_path

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
NODE_POOL = "digitalocean:index/kubernetesNodePool:KubernetesNodePool"

LAYERS = (
    "do-core",
    "do-managed-k8s",
    "k8s-core",
    "k8s-prometheus",
    "k8s-heater",
    "k8s-siege-engine",
)
OBSERVED_METRICS = (
    "request_rate", "offered_rate", "latency_p50", "latency_p95", "latency_p99",
    "error_ratio", "cpu_utilisation_requests", "cpu_utilisation_limits",
    "replicas_desired", "replicas_ready", "nodes_ready", "pods_pending", "cost_hourly",
)  # fmt: skip
DEFAULT_NODE_SIZES = ("s-1vcpu-2gb", "s-2vcpu-4gb", "s-4vcpu-8gb", "s-8vcpu-16gb")
OBS_CLIP = 10.0


def default_knobs(
    node_sizes: Sequence[str] = DEFAULT_NODE_SIZES,
    max_replicas: int = 30,
    max_nodes: int = 10,
    cpu_limits: Sequence[str] = ("250m", "500m", "750m", "1000m"),
    cluster: str = clusters.DOKS,
) -> tuple[Knob, ...]:
    """The four knobs of SimpleK8sWebApp-v0.

    Args:
        node_sizes: The node size knob's domain (DOKS size slugs).
        max_replicas: The heater replicas knob's upper bound.
        max_nodes: The node count knob's upper bound.
        cpu_limits: The heater CPU limit knob's domain.
        cluster: The layer in the ``cluster`` role, whose workers pool the node knobs
            act on (:data:`infragym.envs.clusters.CLUSTERS`).

    Raises:
        ConfigError: A node size is not a DOKS node size slug, or an unknown cluster.
    """
    pool = clusters.get(cluster, "pulumi")
    for slug in node_sizes:
        if slug not in catalog.doks_node_sizes():
            raise ConfigError(
                "node_size knob: "
                + catalog.unknown_choice("DOKS node size", slug, catalog.doks_node_sizes())
            )
    limits = "spec.template.spec.containers[0].resources.limits.cpu"
    return (
        Knob(
            "heater_replicas",
            "k8s-heater",
            DEPLOYMENT,
            "heater",
            "spec.replicas",
            IntRange(1, max_replicas),
        ),
        Knob(
            "heater_cpu_limit",
            "k8s-heater",
            DEPLOYMENT,
            "heater",
            limits,
            Choice(tuple(cpu_limits)),
        ),
        Knob(
            "node_count",
            pool.layer,
            pool.node_pool_type,
            "workers",
            pool.node_count_path,
            IntRange(1, max_nodes),
        ),
        Knob(
            "node_size",
            pool.layer,
            pool.node_pool_type,
            "workers",
            pool.node_size_path,
            Choice(tuple(node_sizes)),
        ),
    )


class SimpleK8sWebAppEnv(gym.Env):
    """Autoscale the heater web app on a DigitalOcean Kubernetes cluster under changing load.

    ## Description

    Six Pulumi layers make the deployment: ``do-core`` (VPC, firewall, project),
    ``do-managed-k8s`` (a DOKS cluster with a system pool and a ``workers`` node pool),
    ``k8s-core`` (namespace, metrics-server), ``k8s-prometheus``, ``k8s-heater`` (a web
    service burning CPU per request) and ``k8s-siege-engine`` (open-loop load following a
    schedule). Every ``step_seconds`` the agent may change four resource properties; the
    backend applies them (the twin in-process, or ``pulumi up`` on the changed layers),
    time passes, and the agent observes what Prometheus would measure. The goal is to
    meet a p95 latency SLO at the lowest cost.

    ## Action Space

    ``MultiDiscrete`` over four knobs. In ``delta`` mode (default) each entry is
    0 (one step down), 1 (keep) or 2 (one step up); in ``absolute`` mode it is the index of
    the value.

    | Num | Knob             | Resource, property                                  | Domain        |
    |-----|------------------|-----------------------------------------------------|---------------|
    | 0   | heater_replicas  | Deployment heater, spec.replicas                    | 1 … 30        |
    | 1   | heater_cpu_limit | container heater, resources.limits.cpu              | 250m … 1000m  |
    | 2   | node_count       | KubernetesNodePool workers, nodeCount               | 1 … 10        |
    | 3   | node_size        | KubernetesNodePool workers, size                    | 1 … 8 vCPU    |

    ## Observation Space

    ``Box(0, 10, (17,), float32)``: each metric divided by its typical scale, clipped to
    [0, 10]; NaN (for example latency when no request completed) becomes 0 and is listed
    in ``info["missing"]``. The raw values are in ``info["metrics"]``.

    | Num | Observation                  | Unit  | Scale |
    |-----|------------------------------|-------|-------|
    | 0   | request_rate                 | req/s | 1000  |
    | 1   | offered_rate                 | req/s | 1000  |
    | 2-4 | latency_p50 / p95 / p99      | s     | 1     |
    | 5   | error_ratio                  | ratio | 1     |
    | 6   | cpu_utilisation_requests     | ratio | 1.5   |
    | 7   | cpu_utilisation_limits       | ratio | 1     |
    | 8   | replicas_desired             | count | 20    |
    | 9   | replicas_ready               | count | 20    |
    | 10  | nodes_ready                  | count | 10    |
    | 11  | pods_pending                 | count | 20    |
    | 12  | cost_hourly                  | USD/h | 1     |
    | 13-16 | knob positions (index / (n-1)) | –   | 1     |

    ## Rewards

    By default ``+1`` for a step whose p95 latency is at most 250 ms with at most 1 %
    errors, minus ``2 × error_ratio``, minus the hourly cost in USD
    (:func:`infragym.envs.rewards.default_reward`). Pass ``reward=`` any callable of the
    metrics dict. If it raises, or returns NaN, an infinity or no number, ``step`` raises
    a ``ConfigError`` after the step has happened: time, knobs, ``history`` and the step
    count include it, so the env carries on from there (or is reset).

    ## Starting State

    The layers as their settings deploy them (2 heater replicas at 250m/500m CPU, 2
    ``s-2vcpu-4gb`` workers), Ready. The load scenario (constant, diurnal, spikes or ramp)
    is drawn from ``np_random``, or chosen with ``reset(options={"scenario": name})``.
    ``reset``'s info adds ``scenario``, ``split`` and ``schedule`` (the load schedule's
    JSON-mode dump: new dicts and lists each reset, except a trace's ``[t, rate]``
    points, shared by the episodes of its variant: read them, do not change them).

    ## Episode End

    No termination; truncation after ``max_episode_steps`` (120 steps = 1 hour at the
    default ``step_seconds``), by the env itself and by ``gym.make``'s ``TimeLimit``; the
    load schedule lasts as long (a ``TimeLimit`` of another length sets it at ``reset``).

    ## Arguments

    ``gym.make("SimpleK8sWebApp-v0", backend="sim", step_seconds=30, action_mode="delta",
    reward=None, scenarios=None, settings=None, node_sizes=None, render_mode=None,
    backend_options=None, split="train")``. ``split`` picks each scenario family's
    variants (``train`` is v0's original grid; ``validation`` and ``test`` are held out;
    also ``reset(options={"split": ...})``). ``backend="pulumi"`` deploys to DigitalOcean (needs
    ``DIGITALOCEAN_TOKEN``); ``settings`` overrides layer settings by layer name;
    ``backend_options`` go to the backend (``twin_params`` and ``twin_engine`` for the sim,
    ``deployment``, ``state_url``, ``keep`` for pulumi).

    ``cluster`` names the layer in the ``cluster`` role: ``"do-managed-k8s"`` (DOKS, the
    default) or ``"local-k8s"``, the local control plane of ``infragym cluster up`` with
    KWOK nodes (``backend="pulumi"`` only; no cloud account). With ``local-k8s`` the
    layers are ``local-k8s``, ``k8s-core`` (metrics-server off), ``k8s-prometheus``,
    ``k8s-heater`` and ``k8s-siege-engine``; ``settings["local-k8s"]`` takes the layer's
    settings (``cluster_dir`` or ``kubeconfig``, ``ready_after_s``: a node's boot time,
    the twin's ``node_boot_s`` for fidelity; ``node_size``, ``node_count``); the node
    knobs act on its ``NodePool`` ``workers``, whose Nodes get the catalogue's capacity;
    cost prices those nodes at DigitalOcean's list prices. The cluster is checked to
    answer before anything is deployed (a ``ClusterError`` says how to start it). No
    container runs there, so the request metrics (rates, latencies, errors, CPU use) are
    NaN and listed in ``info["missing"]``; replicas, nodes and Pending pods come from the
    API server, or from kube-state-metrics through the Prometheus at
    ``backend_options["prometheus_url"]`` when given (see ``infragym cluster status``).

    ## Version History

    * v0: Initial version.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    cpu_limits: tuple[str, ...] = ("250m", "500m", "750m", "1000m")
    """The heater CPU limit knob's domain."""
    actuation = "immediate"
    """How the backend acts on a change (:data:`infragym.backends.base.Actuation`)."""
    use_kernel = True
    """Whether :meth:`step` runs in the compiled env kernel when it can
    (:mod:`infragym.envs.kernel`; the same episodes bit for bit). ``False`` forces the
    Python step, the reference."""

    @staticmethod
    def default_scenarios() -> tuple[str, ...]:
        """The scenarios drawn from when ``scenarios`` is not given (v0: the synthetic ones)."""
        return scenario_lib.SYNTHETIC

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
        cluster: str = clusters.DOKS,
        **unknown: Any,
    ) -> None:
        if unknown:  # a ConfigError, not the TypeError gym.make would fill with every argument
            raise ConfigError(f"unknown arguments {sorted(unknown)} (see the class docstring)")
        render_mode = arguments.choice(
            "render_mode", render_mode, [None, *self.metadata["render_modes"]]
        )
        self.render_mode = render_mode
        self.step_seconds = arguments.positive_seconds("step_seconds", step_seconds)
        max_episode_steps = arguments.positive_int("max_episode_steps", max_episode_steps)
        self.episode_seconds = self.step_seconds * max_episode_steps
        node_sizes = arguments.names("node_sizes", node_sizes, DEFAULT_NODE_SIZES)
        self.cluster = clusters.get(cluster, backend)
        self.layer_names = self.cluster.layers(LAYERS)
        self.knobs = default_knobs(node_sizes, cpu_limits=self.cpu_limits, cluster=cluster)
        self.codec = ActionCodec(self.knobs, action_mode)
        self.reward_fn = arguments.reward(reward) or default_reward()
        scenarios = arguments.names(
            "scenarios", scenarios, self.default_scenarios(), scenario_lib.get
        )
        self.scenario_names = scenarios
        self.split = scenario_lib.check_split(split)
        self.max_episode_steps = max_episode_steps
        self.settings = self._layer_settings(arguments.settings(settings, self.layer_names))
        self.backend_name = backend
        options = arguments.mapping("backend_options", backend_options)
        options.setdefault("actuation", self.actuation)
        if backend == "pulumi":
            options.setdefault("window_seconds", self.step_seconds)  # PromQL covers one step
        if self.cluster.layer == clusters.LOCAL:  # it answers, before anything is deployed
            clusters.local_cluster_options(
                self.settings[clusters.LOCAL], options, options["window_seconds"]
            )
        self.backend = make_backend(backend, **options)
        # Settings the knobs' domains cannot represent are refused now, before any deploy.
        arguments.knob_values_in_domains(self.knobs, self.settings, self.backend.deployment)
        self.metric_names = OBSERVED_METRICS
        self._scales = [(n, metrics.get(n).scale) for n in OBSERVED_METRICS]
        # Per knob, precomputed for the step loop: (name, values, the observation at each
        # index (index / (n-1)), the Change to each index (immutable, so shared)).
        self._knob_tables = tuple(
            (
                k.name,
                k.values,
                tuple(i / max(len(k.values) - 1, 1) for i in range(len(k.values))),
                tuple(Change(k, v) for v in k.values),
            )
            for k in self.knobs
        )
        self.action_space = self.codec.space()
        n_obs = len(OBSERVED_METRICS) + len(self.knobs)
        self.observation_space = spaces.Box(0.0, OBS_CLIP, shape=(n_obs,), dtype=np.float32)
        self.knob_values: dict[str, Any] = {}
        self._knob_index: list[int] = []
        self._knob_obs: list[float] = []
        self.scenario: str | None = None
        self.history: list[dict[str, float]] = []
        self.steps = 0  # steps since reset
        self._kernel: Any = None  # the env kernel's binding (infragym.envs.kernel)

    def _layer_settings(
        self, overrides: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Settings of every layer: the cluster choice's defaults, then ``overrides``."""
        unknown = set(overrides) - set(self.layer_names)
        if unknown:
            raise ConfigError(
                f"settings for unknown layers {sorted(unknown)}; layers: {list(self.layer_names)}"
            )
        defaults = self.cluster.defaults
        return {
            name: {**defaults.get(name, {}), **overrides.get(name, {})} for name in self.layer_names
        }

    def _layers(self, schedule) -> list[LayerSpec]:
        out = []
        for name in self.layer_names:
            s = dict(self.settings[name])
            if name == "k8s-siege-engine":
                # The object, not its dump: the sim backend keys its graph cache on the
                # other settings and writes the schedule's JSON into the graph itself.
                s["schedule"] = schedule
            out.append(LayerSpec(name, s))
        return out

    # ------------------------------------------------------------------ gym API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        kernel.detach(self)
        super().reset(seed=seed)
        options = arguments.reset_options(options, ("scenario", "split"))
        limit = arguments.outer_time_limit(self)  # gym.make(..., max_episode_steps=N)'s N
        if limit is not None and limit != self.max_episode_steps:
            self.max_episode_steps, self.episode_seconds = limit, limit * self.step_seconds
        name = options.pop("scenario", None)
        split = scenario_lib.check_split(options.pop("split", self.split))
        if options:
            raise ConfigError(
                f"unknown reset options {sorted(options)}; valid: ['scenario', 'split']"
            )
        if name is None:
            name = self.scenario_names[int(self.np_random.integers(len(self.scenario_names)))]
        schedule = scenario_lib.get(name)(self.np_random, self.episode_seconds, split)
        self.scenario = name
        backend_seed = int(self.np_random.integers(2**31))
        self.backend.reset(self._layers(schedule), seed=backend_seed)
        values = self._read_knobs()
        self.backend.queue.deployed(values)
        self._set_knobs([k.index_of(values[k.name]) for k in self.knobs])
        self.backend.advance(self.step_seconds)
        self.steps = 0
        observed = self._begin_episode(self.backend.observe(self.metric_names))
        self.history = [observed]
        obs, missing = self._observation(observed)
        info = self._info(observed, missing, ())
        info.update(scenario=name, split=split, schedule=schedule_dump(schedule))
        return obs, info

    def step(self, action):
        if self.use_kernel or self._kernel:
            out = kernel.step(self, action)
            if out is not None:
                return out
        layers = self._act(action)
        self.backend.advance(self.step_seconds)
        return self._after_advance(layers)

    def _act(self, action) -> tuple[str, ...]:
        """A step up to the advance: apply the knobs the action changes; the layers updated.

        (A vector env advances the backends of all its envs at once between the two halves.)
        """
        new = self.codec.decode_indices(action, self._knob_index)
        return self._change_knobs(new) if new != self._knob_index else ()

    def _after_advance(self, layers: tuple[str, ...]):
        """A step after the advance: observe, reward, and the step's return value."""
        observed = self._observe()
        self.steps += 1
        self.history.append(observed)
        reward = arguments.reward_value(self.reward_fn, observed)  # after the step: see Rewards
        obs, missing = self._observation(observed)
        truncated = self.steps >= self.max_episode_steps
        return obs, reward, False, truncated, self._info(observed, missing, layers)

    def render(self):
        if self.render_mode == "ansi":
            from infragym.envs.render import render_ansi

            return render_ansi(self)
        if self.render_mode == "rgb_array":
            from infragym.envs.render import render_rgb

            return render_rgb(self)
        return None

    def close(self) -> None:
        kernel.detach(self)
        self.backend.close()
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        """For copy and pickle: without the env kernel (a copy attaches its own)."""
        if self.__dict__.get("_kernel"):
            self._kernel()  # the env and its twin up to date
        state = self.__dict__.copy()
        state["_kernel"] = None
        state.pop("_kernel_info", None)
        state.pop("_kernel_batch", None)
        return state

    def __getattr__(self, name: str) -> Any:
        """An attribute a vector env's kernel batch keeps while it steps the env
        (:data:`infragym.envs.kernel.LAZY`), brought up to date. Called only when the
        attribute is not found otherwise."""
        binding = self.__dict__.get("_kernel")
        if binding and binding.stashed is not None and name in kernel.LAZY:
            binding.restore()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ helpers

    def _begin_episode(self, observed: dict[str, float]) -> dict[str, float]:
        """The first observation of an episode (a hook: v1 takes its cost reference here)."""
        return observed

    def _observe(self) -> dict[str, float]:
        """The metrics of the step just simulated, as the reward and observation see them."""
        return self.backend.observe(self.metric_names)

    def _change_knobs(self, indices: list[int]) -> tuple[str, ...]:
        """Apply the knobs whose domain index differs in ``indices`` and make those current.

        What :meth:`_set_knobs` does, in the same pass over the knobs as the changes (this
        runs on most steps under random actions); the knobs stay as they were if the
        backend fails. For speed on CPython 3.11, a plain loop, and zip without strict=
        (the sequences all have one entry per knob).

        Returns:
            The layers the backend updated.
        """
        changes = []
        values = {}
        knob_obs = []
        tables = zip(self._knob_tables, indices, self._knob_index)  # noqa: B905
        for (name, domain, positions, change_to), i, was in tables:
            if i != was:
                changes.append(change_to[i])
            values[name] = domain[i]
            knob_obs.append(positions[i])
        layers = self.backend.apply(changes).layers_updated
        self._knob_index, self.knob_values, self._knob_obs = indices, values, knob_obs
        return layers

    def _set_knobs(self, indices: list[int]) -> None:
        """Make ``indices`` (one domain index per knob) the current knob settings."""
        self._knob_index = indices
        rows = list(zip(self._knob_tables, indices, strict=True))
        self.knob_values = {name: domain[i] for (name, domain, _, _), i in rows}
        self._knob_obs = [positions[i] for (_, _, positions, _), i in rows]

    def _read_knobs(self) -> dict[str, Any]:
        """Current knob values, read from the deployed resource graph."""
        by_key = {(r.layer, r.type, r.name): r for r in self.backend.resources()}
        values: dict[str, Any] = {}
        for k in self.knobs:
            record = by_key.get((k.layer, k.type, k.resource))
            if record is None:
                raise ConfigError(
                    f"knob {k.name!r}: layer {k.layer!r} has no {k.type} {k.resource!r}"
                )
            value = get_path(record.inputs, k.path)
            if isinstance(k.domain, IntRange):
                value = int(value)
            values[k.name] = k.values[k.index_of(value)]
        return values

    def _observation(self, observed: Mapping[str, float]) -> tuple[np.ndarray, list[str]]:
        """The observation of the ``observed`` metrics, and the names of those that are NaN.

        Both come from one pass over the metrics, since this runs every step.
        """
        # Plain floats, one array at the end: numpy's per-call overhead dominates at this size.
        values = []
        missing = []
        for name, scale in self._scales:
            v = observed[name] / scale
            if not 0.0 <= v <= OBS_CLIP:  # out of range, or NaN (which fails every comparison)
                if v != v:
                    missing.append(name)
                v = OBS_CLIP if v > OBS_CLIP else 0.0
            values.append(v)
        values += self._knob_obs
        return np.array(values, dtype=np.float32), missing

    def _info(
        self, observed: Mapping[str, float], missing: list[str], layers: tuple[str, ...]
    ) -> dict[str, Any]:
        info = {
            "metrics": observed,
            "missing": missing,
            "knobs": self.knob_values.copy(),  # a fresh dict: callers may keep it
            "layers_updated": layers,
        }
        info.update(self.backend.info())
        return info
