"""One episode of an infragym environment, driven by knob values in their own units.

:class:`AgentSession` is what the MCP server (:mod:`infragym.interfaces.mcp_server`) and
the text wrapper (:mod:`infragym.interfaces.text`) share: it owns a Gymnasium env made
with ``action_mode="absolute"`` (so any target is reachable in one step), stages knob
targets, steps the env with ``env.unwrapped.codec.encode(targets, requested)``, and
renders what happened as plain ASCII text a language model can read.

Staging and stepping are exactly a Gymnasium loop: :meth:`AgentSession.set_knobs` then
``wait(1)`` is one ``env.step(codec.encode(targets, info["knobs"]))``, and ``wait(n)``
is ``n`` such steps holding the same targets. A call that fails validation changes
nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from infragym.errors import ActionError, ConfigError

DEFAULT_ENV_ID = "SimpleK8sWebApp-v1"
BACKENDS_THAT_SPEND = ("pulumi",)
"""Backends that create real (billed) cloud resources: they need ``allow_spend``."""
LOAD_SHOWN = 9
"""Offered-load values in the observation text: this step and the 8 before it (240 s at
the default 30 s step, a node's boot time)."""
MAX_WAIT_STEPS = 120
"""The most steps one :meth:`AgentSession.wait` call may advance."""

KNOB_MEANING: dict[str, tuple[str, str]] = {
    "heater_replicas": (
        "pods",
        "Pods of the heater web app (its Deployment's replicas). Each pod serves requests "
        "with one worker process and needs room on a node for its CPU request; pods "
        "without room stay Pending.",
    ),
    "heater_cpu_limit": (
        "CPU per pod (m = millicores)",
        "CPU limit of each heater pod: how much CPU a pod may use. A heater pod runs one "
        "worker, so it cannot use more than 1 CPU. Changing it rolls the pods.",
    ),
    "node_count": (
        "nodes",
        "Worker nodes in the cluster's node pool. A new node boots for a few minutes and "
        "is billed from Ready.",
    ),
    "node_size": (
        "DigitalOcean size slug",
        "Droplet size of every worker node. A change replaces the pool: new nodes boot, "
        "then the old ones drain. Bigger nodes fit more pods and cost more.",
    ),
}
"""What the known knobs change, and their units (other knobs are described generically)."""


def check_backend(backend: str, allow_spend: bool) -> None:
    """Refuse a backend that spends money unless spending was explicitly allowed.

    Raises:
        ConfigError: ``backend`` creates real cloud resources and ``allow_spend`` is false.
    """
    if backend in BACKENDS_THAT_SPEND and not allow_spend:
        raise ConfigError(
            f"backend {backend!r} deploys real DigitalOcean resources and spends money; "
            "pass --allow-spend (allow_spend=True) to use it, or use the default 'sim' backend"
        )


def json_value(value: Any) -> Any:
    """``value`` as plain JSON: NaN and infinities become ``None``, numpy scalars Python ones."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


def _fmt(value: Any, unit: str) -> str:
    """A metric value for the text: ``n/a`` for NaN, precision by unit."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "USD/h":
        return f"{value:.4f}"
    if unit == "s":
        return f"{value:.3f}"
    if unit == "ratio":
        return f"{value:.4f}"
    if unit == "count":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.1f}"


def _domain_text(knob: Any) -> str:
    from infragym.knobs import IntRange

    d = knob.domain
    if isinstance(d, IntRange):
        step = f" in steps of {d.step}" if d.step != 1 else ""
        return f"integer {d.low}..{d.high}{step}"
    return "one of " + ", ".join(str(v) for v in knob.values)


class AgentSession:
    """An environment driven by knob values, observed as text.

    Args:
        env: A Gymnasium env whose ``unwrapped`` has ``knobs``, ``codec`` (in
            ``absolute`` mode) and ``backend``, as infragym's knob environments do; use
            :meth:`make` to build one by id.
        env_id: The id shown in the text (defaults to the env's spec id).

    Raises:
        ConfigError: The env is not a knob environment in ``absolute`` action mode.
    """

    def __init__(self, env: Any, env_id: str | None = None) -> None:
        u = env.unwrapped
        for attr in ("knobs", "codec", "backend"):
            if not hasattr(u, attr):
                raise ConfigError(
                    f"{type(u).__name__} has no {attr!r}: the language-model interfaces "
                    "need an infragym knob environment (e.g. SimpleK8sWebApp-v1)"
                )
        if u.codec.mode != "absolute":
            raise ConfigError(
                f"the env's action_mode is {u.codec.mode!r}; the language-model interfaces "
                "need action_mode='absolute' so any target is reachable in one step"
            )
        self.env = env
        self.u = u
        spec = getattr(env, "spec", None)
        self.env_id = env_id or (spec.id if spec is not None else type(u).__name__)
        limit = getattr(spec, "max_episode_steps", None) if spec is not None else None
        self.max_steps = int(limit or getattr(u, "max_episode_steps", 0) or 0)
        self.knobs = {k.name: k for k in u.knobs}
        self.info: dict[str, Any] | None = None
        self.staged: dict[str, Any] = {}
        self.steps = 0
        self.done = False
        self.terminated = False
        self.truncated = False
        self.seed: int | None = None
        self.split: str | None = None
        self.rewards: list[float] = []
        self.slo_met: list[bool] = []
        self.step_metrics: list[dict[str, float]] = []
        self.offered: list[float] = []
        self.slo = self._find_slo()

    # ------------------------------------------------------------------ building

    @classmethod
    def make(
        cls,
        env_id: str = DEFAULT_ENV_ID,
        *,
        backend: str = "sim",
        allow_spend: bool = False,
        **env_kwargs: Any,
    ) -> AgentSession:
        """Build the env with ``gym.make(env_id, backend=..., action_mode="absolute")``.

        Args:
            env_id: A registered infragym environment id.
            backend: ``sim`` (the digital twin, default) or ``pulumi`` (real cloud).
            allow_spend: Must be true for a backend that creates billed resources.
            **env_kwargs: More keyword arguments for ``gym.make`` (not ``action_mode``).

        Raises:
            ConfigError: Unknown env id, a spending backend without ``allow_spend``, an
                ``action_mode`` argument, or a bad env argument.
        """
        check_backend(backend, allow_spend)
        if "action_mode" in env_kwargs:
            raise ConfigError("action_mode is fixed to 'absolute' by the language-model interfaces")
        import gymnasium as gym

        import infragym  # noqa: F401  (registers the envs)
        from infragym.envs import ENV_IDS

        if env_id not in ENV_IDS:
            from infragym.catalog import unknown_choice

            raise ConfigError(unknown_choice("environment id", env_id, ENV_IDS))
        env = gym.make(env_id, backend=backend, action_mode="absolute", **env_kwargs)
        return cls(env, env_id)

    def _find_slo(self) -> Any:
        from infragym.envs.rewards import SloAttainment

        for term in getattr(self.u.reward_fn, "terms", ()) if hasattr(self.u, "reward_fn") else ():
            if isinstance(term, SloAttainment):
                return term
        return SloAttainment()

    # ------------------------------------------------------------------ episode

    def reset(
        self, scenario: str | None = None, seed: int | None = None, split: str | None = None
    ) -> str:
        """Start an episode; return the observation text.

        Args:
            scenario: Load scenario name (drawn from the env's scenarios when left out).
            seed: Seed of the episode (same seed, same scenario and actions: same episode).
            split: ``train``, ``validation`` or ``test`` variant of the scenario.

        Raises:
            ConfigError: An unknown scenario or split, or a bad seed (nothing changes).
        """
        from infragym.envs import scenarios as scenario_lib

        options: dict[str, Any] = {}
        if scenario is not None:
            scenario_lib.get(scenario)  # ConfigError listing the valid names
            options["scenario"] = scenario
        if split is not None:
            if split not in scenario_lib.SPLITS:
                from infragym.catalog import unknown_choice

                raise ConfigError(unknown_choice("split", split, scenario_lib.SPLITS))
            options["split"] = split
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        _, info = self.env.reset(seed=seed, options=options or None)
        self.seed = seed
        self.split = info.get("split", getattr(self.u, "split", None))
        self.info = info
        self.staged = dict(info["knobs"])
        self.steps = 0
        self.done = self.terminated = self.truncated = False
        self.rewards = []
        self.slo_met = []
        self.step_metrics = []
        self.offered = [float(info["metrics"].get("offered_rate", math.nan))]
        return self.observe()

    def _require_episode(self) -> dict[str, Any]:
        if self.info is None:
            raise ActionError("no episode is running: call reset(scenario?, seed?, split?) first")
        return self.info

    def _require_running(self) -> dict[str, Any]:
        info = self._require_episode()
        if self.done:
            raise ActionError(
                f"the episode is over ({self.steps} of {self.max_steps} steps): call "
                "episode_summary() for its results, or reset() for a new one"
            )
        return info

    def check_knobs(self, knobs: Any) -> dict[str, Any]:
        """Validate ``{name: value}`` against the knobs' domains; return the values to stage.

        Integer knobs accept integral numbers (``6`` or ``6.0``); choice knobs their exact
        values (``"1000m"``, ``"s-4vcpu-8gb"``).

        Raises:
            ActionError: Not an object, an unknown knob name, or a value outside the
                knob's domain. Every entry is checked before anything is staged.
        """
        from infragym.catalog import unknown_choice
        from infragym.knobs import IntRange

        if not isinstance(knobs, Mapping):
            raise ActionError(
                f"knobs must be an object {{name: value}}, got {type(knobs).__name__}; "
                f'for example {{"heater_replicas": 6}}'
            )
        out: dict[str, Any] = {}
        for name, value in knobs.items():
            knob = self.knobs.get(name)
            if knob is None:
                raise ActionError(unknown_choice("knob", name, self.knobs))
            if isinstance(knob.domain, IntRange):
                integral = isinstance(value, int) or (
                    isinstance(value, float) and math.isfinite(value) and value.is_integer()
                )
                if isinstance(value, bool) or not integral:
                    raise ActionError(f"knob {name!r} takes an {_domain_text(knob)}, got {value!r}")
                value = int(value)
                if value not in knob.domain.positions:
                    raise ActionError(
                        f"knob {name!r}: {value} is outside its domain ({_domain_text(knob)})"
                    )
            else:
                try:
                    ok = value in knob.domain.positions and not isinstance(value, bool)
                except TypeError:  # unhashable
                    ok = False
                if not ok:
                    raise ActionError(
                        f"knob {name!r} takes {_domain_text(knob)} (exactly, as a string), "
                        f"got {value!r}"
                    )
            out[name] = value
        return out

    def set_knobs(self, knobs: Any) -> dict[str, Any]:
        """Stage knob targets for the next :meth:`wait`; knobs not named keep their targets.

        Returns:
            ``{"staged": all targets, "changed": the ones that differ from what is requested}``.

        Raises:
            ActionError: No running episode, or an invalid name or value (nothing staged).
        """
        info = self._require_running()
        values = self.check_knobs(knobs)
        self.staged.update(values)
        changed = {n: v for n, v in self.staged.items() if v != info["knobs"][n]}
        return {"staged": dict(self.staged), "changed": changed}

    def wait(self, steps: int = 1) -> dict[str, Any]:
        """Advance ``steps`` steps holding the staged targets (one ``env.step`` each).

        Stops early when the episode ends.

        Returns:
            ``{"rewards": [...], "metrics": [per step], "done": bool}``.

        Raises:
            ActionError: No running episode, or ``steps`` not an integer in
                ``1..MAX_WAIT_STEPS``.
        """
        self._require_running()
        if (
            isinstance(steps, bool)
            or not isinstance(steps, int)
            or not 1 <= steps <= MAX_WAIT_STEPS
        ):
            raise ActionError(f"steps must be an integer in 1..{MAX_WAIT_STEPS}, got {steps!r}")
        rewards: list[float] = []
        metrics: list[dict[str, float]] = []
        for _ in range(steps):
            action = self.u.codec.encode(self.staged, self.info["knobs"])
            _, reward, terminated, truncated, info = self.env.step(action)
            self.info = info
            self.steps += 1
            m = dict(info["metrics"])
            self.rewards.append(float(reward))
            self.slo_met.append(bool(self.slo.met(m)))
            self.step_metrics.append(m)
            self.offered.append(float(m.get("offered_rate", math.nan)))
            rewards.append(float(reward))
            metrics.append(m)
            if terminated or truncated:
                self.terminated, self.truncated = bool(terminated), bool(truncated)
                self.done = True
                break
        return {"rewards": rewards, "metrics": metrics, "done": self.done}

    # ------------------------------------------------------------------ views

    def observation(self) -> dict[str, Any]:
        """The current observation as plain JSON data (NaN as ``None``)."""
        info = self._require_episode()
        return json_value(
            {
                "env_id": self.env_id,
                "scenario": getattr(self.u, "scenario", None),
                "split": self.split,
                "step": self.steps,
                "max_steps": self.max_steps,
                "time_s": self._time(),
                "done": self.done,
                "metrics": info["metrics"],
                "knobs": info["knobs"],
                "knobs_running": info.get("knobs_running", info["knobs"]),
                "updates": info.get("updates", {}),
                "staged": self.staged,
                "last_reward": self.rewards[-1] if self.rewards else None,
                "return": sum(self.rewards),
                "offered_history": self.offered[-LOAD_SHOWN:],
            }
        )

    def _time(self) -> float:
        info = self.info or {}
        t = info.get("time_s")
        return float(t) if t is not None else self.steps * self.u.step_seconds

    def observe(self) -> str:
        """The current observation as text: metrics with units, knobs requested and running,
        updates in flight, the recent load, the last reward."""
        from infragym import metrics as metric_lib

        info = self._require_episode()
        m = info["metrics"]
        step_s = self.u.step_seconds
        head = (
            f"{self.env_id} | scenario {getattr(self.u, 'scenario', '?')}"
            f" ({self.split}) | step {self.steps} of {self.max_steps}"
            f" | t = {self._time():.0f} s | one step = {step_s:g} s"
        )
        lines = [head]
        if self.rewards:
            met = "met" if self.slo_met[-1] else "MISSED"
            lines.append(
                f"Last step: reward {self.rewards[-1]:+.3f}, SLO {met} (p95 <= "
                f"{self.slo.target_s * 1000:.0f} ms, errors <= {self.slo.max_error_ratio:.0%})"
                f" | return so far {sum(self.rewards):+.3f}"
            )
        else:
            lines.append("Episode start: no action taken yet.")
        if self.done:
            lines.append("EPISODE OVER: call episode_summary() for the results, or reset().")
        lines.append("")
        lines.append("Metrics over the last step:")
        for name in getattr(self.u, "metric_names", ()):
            unit = metric_lib.get(name).unit
            value = m.get(name, math.nan)
            extra = ""
            if name == "cost_hourly" and m.get("cost_reference"):
                extra = (
                    f"  ({value / m['cost_reference']:.2f} x the start's {m['cost_reference']:.4f})"
                )
            lines.append(f"  {name:<26} {_fmt(value, unit):>10} {unit}{extra}")
        loads = " ".join(_fmt(x, "req/s") for x in self.offered[-LOAD_SHOWN:])
        lines.append(f"Offered load, oldest to newest (req/s): {loads}")
        lines.append("")
        running = info.get("knobs_running", info["knobs"])
        lines.append(f"  {'knob':<18} {'requested':>14} {'running':>14}")
        for name, requested in info["knobs"].items():
            mark = "" if running.get(name) == requested else "   (not yet running)"
            lines.append(f"  {name:<18} {requested!s:>14} {running.get(name)!s:>14}{mark}")
        staged = {n: v for n, v in self.staged.items() if v != info["knobs"].get(n)}
        if staged and not self.done:
            pending = ", ".join(f"{n}={v}" for n, v in staged.items())
            lines.append(f"Staged for the next wait: {pending}")
        updates = info.get("updates") or {}
        if updates:
            lines.append("Updates in flight:")
            for layer, u in updates.items():
                doing = ", ".join(f"{n}={v}" for n, v in u.get("in_flight", {}).items())
                since = self._time() - float(u.get("started_at", self._time()))
                queued = ", ".join(f"{n}={v}" for n, v in u.get("queued", {}).items())
                line = f"  {layer}: {doing or 'update'} (started {since:.0f} s ago)"
                if queued:
                    line += f"; queued after it: {queued}"
                lines.append(line)
        else:
            lines.append("Updates in flight: none")
        if "cost_usd" in info:
            lines.append(f"Cloud cost of the episode so far: {info['cost_usd']:.4f} USD")
        return "\n".join(lines)

    def list_knobs(self) -> list[dict[str, Any]]:
        """Every knob: name, layer, resource and property, domain, unit, meaning, and (during
        an episode) the requested and running values."""
        from infragym import catalog
        from infragym.knobs import IntRange

        info = self.info or {}
        running = info.get("knobs_running", info.get("knobs", {}))
        out = []
        for name, k in self.knobs.items():
            unit, meaning = KNOB_MEANING.get(
                name, ("", f"Sets {k.path} of {k.type} {k.resource!r} in layer {k.layer}.")
            )
            row: dict[str, Any] = {
                "name": name,
                "layer": k.layer,
                "resource": f"{k.type} {k.resource}",
                "property": k.path,
                "domain": _domain_text(k),
                "unit": unit,
                "meaning": meaning,
            }
            request = self._cpu_request(k)
            if request is not None:
                row["cpu_request"] = request
                row["meaning"] += (
                    f" Each pod requests {request} CPU: what nodes must have room for."
                )
            if isinstance(k.domain, IntRange):
                row.update(min=k.domain.low, max=k.domain.high, step=k.domain.step)
            else:
                row["values"] = list(k.values)
            if name == "node_size":
                row["sizes"] = {}
                for slug in k.values:
                    try:
                        s = catalog.size(slug)
                    except Exception:  # not in the price table: describe what is known
                        continue
                    row["sizes"][slug] = {
                        "vcpus": s.vcpus,
                        "memory_gib": round(s.memory_mib / 1024, 1),
                        "allocatable_cpu": round(s.allocatable_cpu, 2),
                        "price_usd_per_hour": s.price_hourly_usd,
                    }
            if info:
                row["requested"] = info["knobs"].get(name)
                row["running"] = running.get(name)
            out.append(json_value(row))
        return out

    def _cpu_request(self, knob: Any) -> Any:
        """The CPU request beside a CPU-limit knob, from the deployed graph (None if unknown)."""
        from infragym.knobs import get_path

        if self.info is None or not knob.path.endswith("resources.limits.cpu"):
            return None
        path = knob.path.removesuffix("limits.cpu") + "requests.cpu"
        for r in self.u.backend.resources():
            if (r.layer, r.type, r.name) == (knob.layer, knob.type, knob.resource):
                try:
                    return get_path(r.inputs, path)
                except ConfigError:
                    return None
        return None

    def knobs_text(self) -> str:
        """:meth:`list_knobs` as text."""
        lines = []
        for row in self.list_knobs():
            now = ""
            if "requested" in row:
                now = f" | requested {row['requested']}, running {row['running']}"
            lines.append(f"{row['name']}: {row['domain']} ({row['unit']}){now}")
            lines.append(f"  {row['layer']} / {row['resource']} / {row['property']}")
            lines.append(f"  {row['meaning']}")
            for slug, s in row.get("sizes", {}).items():
                lines.append(
                    f"  {slug}: {s['vcpus']} vCPU ({s['allocatable_cpu']} for pods), "
                    f"{s['memory_gib']} GiB, {s['price_usd_per_hour']:.5f} USD/h per node"
                )
        return "\n".join(lines)

    def layers(self) -> list[dict[str, Any]]:
        """The layers and their resources, from the resource graph, as JSON data."""
        info = self._require_episode()
        try:
            from stacks.registry import all_layers

            registry = all_layers()
        except Exception:  # the registry is documentation here; the graph is the truth
            registry = {}
        updates = info.get("updates") or {}
        out: dict[str, dict[str, Any]] = {}
        for r in self.u.backend.resources():
            if r.layer not in out:
                meta = registry.get(r.layer)
                out[r.layer] = {
                    "layer": r.layer,
                    "description": meta.description if meta else "",
                    "upstream": list(meta.upstream) if meta else [],
                    "update_in_flight": r.layer in updates,
                    "resources": [],
                }
            knobs = {
                k.name: {"property": k.path, "requested": info["knobs"][k.name]}
                for k in self.knobs.values()
                if (k.layer, k.type, k.resource) == (r.layer, r.type, r.name)
            }
            out[r.layer]["resources"].append({"type": r.type, "name": r.name, "knobs": knobs})
        return json_value(list(out.values()))

    def describe_layers(self) -> str:
        """:meth:`layers` as text: each layer, its resources, and the knobs on them."""
        lines = []
        for layer in self.layers():
            up = f" (after: {', '.join(layer['upstream'])})" if layer["upstream"] else ""
            busy = " [update in flight]" if layer["update_in_flight"] else ""
            desc = f": {layer['description']}" if layer["description"] else ""
            lines.append(f"{layer['layer']}{up}{busy}{desc}")
            for r in layer["resources"]:
                lines.append(f"  {r['type']} {r['name']}")
                for name, k in r["knobs"].items():
                    lines.append(f"    knob {name}: {k['property']} = {k['requested']} requested")
        return "\n".join(lines)

    def episode_summary(self) -> dict[str, Any]:
        """Return, cost and SLO attainment of the episode so far (or of the finished one)."""
        info = self._require_episode()
        n = len(self.rewards)
        costs = [m["cost_hourly"] for m in self.step_metrics]
        errors = [m["error_ratio"] for m in self.step_metrics if not math.isnan(m["error_ratio"])]
        p95 = [m["latency_p95"] for m in self.step_metrics if not math.isnan(m["latency_p95"])]
        cost_usd = info.get("cost_usd")
        if cost_usd is None:
            cost_usd = sum(costs) * self.u.step_seconds / 3600
        return json_value(
            {
                "env_id": self.env_id,
                "scenario": getattr(self.u, "scenario", None),
                "seed": self.seed,
                "split": self.split,
                "steps": n,
                "max_steps": self.max_steps,
                "done": self.done,
                "return": sum(self.rewards),
                "mean_reward": sum(self.rewards) / n if n else None,
                "slo_attainment": sum(self.slo_met) / n if n else None,
                "slo": {
                    "latency_metric": self.slo.latency_metric,
                    "target_s": self.slo.target_s,
                    "max_error_ratio": self.slo.max_error_ratio,
                },
                "cost_usd": cost_usd,
                "mean_cost_hourly_usd": sum(costs) / n if n else None,
                "cost_reference_hourly_usd": info.get("cost_reference"),
                "mean_error_ratio": sum(errors) / len(errors) if errors else None,
                "mean_latency_p95_s": sum(p95) / len(p95) if p95 else None,
                "max_latency_p95_s": max(p95) if p95 else None,
            }
        )

    def summary_text(self) -> str:
        """:meth:`episode_summary` as text."""
        s = self.episode_summary()

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.1f} %"

        state = "finished" if s["done"] else "so far"
        return "\n".join(
            [
                f"{s['env_id']} | scenario {s['scenario']} | seed {s['seed']} | "
                f"{s['steps']} of {s['max_steps']} steps ({state})",
                f"return {s['return']:+.3f}"
                + (f" (mean {s['mean_reward']:+.3f} per step)" if s["steps"] else ""),
                f"SLO attainment {pct(s['slo_attainment'])} (p95 <= "
                f"{s['slo']['target_s'] * 1000:.0f} ms, errors <= "
                f"{s['slo']['max_error_ratio']:.0%})",
                f"cloud cost {s['cost_usd']:.4f} USD; mean "
                + _fmt(s["mean_cost_hourly_usd"], "USD/h")
                + f" USD/h (start: {_fmt(s['cost_reference_hourly_usd'], 'USD/h')} USD/h)",
                f"mean error ratio {pct(s['mean_error_ratio'])}; p95 latency mean "
                f"{_fmt(s['mean_latency_p95_s'], 's')} s, "
                f"max {_fmt(s['max_latency_p95_s'], 's')} s",
            ]
        )

    # ------------------------------------------------------------------ the task

    def task_description(self) -> str:
        """The prompt-sized description of the task an agent gets."""
        step = self.u.step_seconds
        minutes = self.max_steps * step / 60
        slo = self.slo
        knob_lines = []
        for row in self.list_knobs():
            knob_lines.append(
                f"- {row['name']} ({row['layer']}): {row['domain']}. {row['meaning']}"
            )
        scenarios = ", ".join(getattr(self.u, "scenario_names", ()))
        return "\n".join(
            [
                f'You operate a web app ("heater") on a DigitalOcean Kubernetes cluster '
                f"({self.env_id}; backend {getattr(self.u, 'backend_name', 'sim')}). An episode "
                f"is {self.max_steps} steps of {step:g} s ({minutes:g} minutes) of changing "
                f"load (scenarios: {scenarios}).",
                "",
                f"Goal: keep the 95th-percentile latency seen by clients at or below "
                f"{slo.target_s * 1000:.0f} ms with at most {slo.max_error_ratio:.0%} errors, at "
                "the lowest cloud cost. Reward per step: " + self._reward_text() + " Maximise "
                "the episode's return.",
                "",
                "Knobs (values in their own units):",
                *knob_lines,
                "",
                "Changes take time, as on real infrastructure. A change sets desired state; "
                "each layer runs one update at a time; a change to a layer whose update is in "
                "flight waits (coalesced to your latest value) and starts when it completes; "
                "nothing started is cancelled. Nodes boot for minutes; pods need room on nodes "
                "and time to start. The observation shows what runs beside what you asked for.",
                "",
                "Tools: reset(scenario?, seed?, split?) starts an episode; observe(); "
                'list_knobs(); set_knobs({"heater_replicas": 8, "node_size": '
                '"s-4vcpu-8gb"}) stages targets (knobs not named keep theirs); '
                "wait(steps=1) applies them, advances time and returns the observation and "
                "reward; describe_layers(); episode_summary().",
            ]
        )

    def _reward_text(self) -> str:
        from infragym.envs.rewards import ErrorPenalty, SloAttainment

        terms = getattr(getattr(self.u, "reward_fn", None), "terms", None)
        if not terms:
            return f"a custom reward ({self.u.reward_fn!r})."
        parts = []
        for t in terms:
            if isinstance(t, SloAttainment):
                parts.append(f"+{t.reward:g} if the SLO is met")
            elif isinstance(t, ErrorPenalty):
                parts.append(f"- {t.weight:g} x error ratio")
            elif type(t).__name__ == "RelativeCostPenalty":
                parts.append(
                    f"- {t.weight:g} x hourly cost / hourly cost of the starting deployment"
                )
            elif type(t).__name__ == "CostPenalty":
                parts.append(f"- {t.weight:g} x hourly cost in USD")
            else:
                parts.append(repr(t))
        return ", ".join(parts) + "."
