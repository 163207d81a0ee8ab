"""Shared pieces of the interface tests: a rule-based policy and result accessors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _num(x: Any) -> float | None:
    """``x`` as a float, or None when it is missing (None over JSON, NaN in Python)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def rule_policy(step: int, metrics: Mapping[str, Any], knobs: Mapping[str, Any]) -> dict[str, Any]:
    """A deterministic rule: pods for the offered load, nodes for the pods, bigger nodes
    under heavy load, and a CPU-limit change now and then (exercises every knob)."""
    rate = _num(metrics.get("offered_rate")) or 0.0
    p95 = _num(metrics.get("latency_p95"))
    replicas = max(1, min(30, math.ceil(rate / 25)))
    if p95 is not None and p95 > 0.2:
        replicas = min(30, max(replicas, knobs["heater_replicas"] + 2))
    out: dict[str, Any] = {
        "heater_replicas": replicas,
        "node_count": max(1, min(10, math.ceil(replicas / 6))),
    }
    if rate > 300:
        out["node_size"] = "s-8vcpu-16gb"
    elif rate < 150:
        out["node_size"] = "s-4vcpu-8gb"
    if step % 30 == 10:
        out["heater_cpu_limit"] = "750m" if knobs["heater_cpu_limit"] == "1000m" else "1000m"
    return out


def is_error(result: Any) -> bool:
    """Whether an MCP CallToolResult is a tool error (mcp 2 and mcp 1 field names)."""
    return bool(getattr(result, "is_error", getattr(result, "isError", False)))


def structured(result: Any) -> dict[str, Any]:
    """The structured content of an MCP CallToolResult (mcp 2 and mcp 1 field names)."""
    data = getattr(result, "structured_content", None)
    if data is None:
        data = getattr(result, "structuredContent", None)
    return data or {}


def text(result: Any) -> str:
    """The text content of an MCP CallToolResult."""
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")
