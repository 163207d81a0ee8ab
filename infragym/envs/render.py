"""Rendering for the infragym envs: an ANSI table and a matplotlib picture.

Imported only when ``render()`` is called, so matplotlib stays out of ``step``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

HISTORY_METRICS = ("offered_rate", "latency_p95", "replicas_ready", "nodes_ready")


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_ansi(env: Any) -> str:
    """Layers and their resources, knob values and the last step's metrics, as text."""
    lines = [f"t = {len(env.history) * env.step_seconds:.0f} s   scenario: {env.scenario}"]
    per_layer: dict[str, Counter] = {}
    for r in env.backend.resources():
        per_layer.setdefault(r.layer, Counter())[r.type.rsplit(":", 1)[-1]] += 1
    lines.append("layers:")
    for layer, types in per_layer.items():
        kinds = ", ".join(f"{n}x {t}" for t, n in sorted(types.items()))
        lines.append(f"  {layer:<18} {kinds}")
    lines.append("knobs:")
    for k in env.knobs:
        lines.append(
            f"  {k.name:<18} {env.knob_values.get(k.name)!s:<14} ({k.layer} {k.resource} {k.path})"
        )
    lines.append("metrics:")
    last = env.history[-1] if env.history else {}
    for name in env.metric_names:
        lines.append(f"  {name:<26} {_fmt(last.get(name, float('nan')))}")
    return "\n".join(lines) + "\n"


def figure(env: Any):
    """A matplotlib figure: the cluster's nodes and pods, and the metric history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_nodes, ax_hist) = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    twin = getattr(env.backend, "twin", None)
    ax_nodes.set_title("nodes and pods")
    if twin is not None:
        for i, node in enumerate(twin.nodes()):
            ready = node.ready(twin.t)
            ax_nodes.add_patch(
                plt.Rectangle((i * 1.2, 0), 1.0, node.cpu, fill=False, ls="-" if ready else "--")
            )
            used = 0.0
            for pod in twin.pods():
                if pod.node is node:
                    w = pod.workload
                    color = {"heater": "tab:red", "siege": "tab:blue"}.get(w.role, "tab:gray")
                    ax_nodes.add_patch(
                        plt.Rectangle(
                            (i * 1.2 + 0.05, used),
                            0.9,
                            w.cpu_request,
                            color=color,
                            alpha=0.7 if pod.ready(twin.t) else 0.3,
                        )
                    )
                    used += w.cpu_request
            ax_nodes.text(i * 1.2 + 0.5, -0.3, node.size.slug, ha="center", fontsize=6, rotation=15)
        ax_nodes.set_xlim(-0.2, max(1, len(twin.nodes())) * 1.2)
        ax_nodes.set_ylim(-0.6, max([n.cpu for n in twin.nodes()] + [1.0]) * 1.1)
        ax_nodes.set_ylabel("CPU (cores)")
    t = np.arange(len(env.history)) * env.step_seconds / 60
    for name in HISTORY_METRICS:
        values = np.array([h[name] for h in env.history], dtype=float)
        scale = np.nanmax(values) if np.isfinite(values).any() and np.nanmax(values) > 0 else 1.0
        ax_hist.plot(t, values / scale, label=f"{name} (max {scale:.3g})")
    ax_hist.set_xlabel("minutes")
    ax_hist.set_title("history (each series / its max)")
    ax_hist.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def render_rgb(env: Any) -> np.ndarray:
    """The :func:`figure` as an RGB array."""
    import matplotlib.pyplot as plt

    fig = figure(env)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb
