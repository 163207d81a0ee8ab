"""Validation of the DigitalOcean layers' settings: clear errors before any cloud call."""

from __future__ import annotations

from typing import Any

import pytest

from infragym import catalog
from infragym.errors import ConfigError
from stacks.layers.do_core import DoCoreSettings
from stacks.layers.do_managed_k8s import DoManagedK8sSettings
from stacks.registry import get_layer


def parse(layer: str, raw: dict[str, Any]) -> Any:
    return get_layer(layer).parse_settings(raw)


def error(layer: str, raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(layer, raw)
    message = str(exc.value)
    assert repr(layer) in message
    return message


# -- do-core ------------------------------------------------------------------------------


def test_core_defaults() -> None:
    s = parse("do-core", {})
    assert isinstance(s, DoCoreSettings)
    assert (s.region, s.vpc_ip_range) == ("nyc3", "10.10.0.0/16")
    assert s.ingress_cidrs == [] and s.api_cidrs == []
    assert s.project_name is None and s.environment == "Development"


def test_core_unknown_region_lists_close_matches_and_choices() -> None:
    message = error("do-core", {"region": "nyc4"})
    assert "region: unknown region 'nyc4'" in message
    assert "did you mean" in message and "nyc3" in message
    assert "valid choices" in message.lower() and "fra1" in message


@pytest.mark.parametrize(
    ("raw", "field", "hint"),
    [
        ({"vpc_ip_range": "10.10.0.0/33"}, "vpc_ip_range", "not a CIDR"),
        ({"vpc_ip_range": "8.8.0.0/16"}, "vpc_ip_range", "RFC 1918"),
        ({"vpc_ip_range": "fd00::/64"}, "vpc_ip_range", "RFC 1918"),
        ({"vpc_ip_range": "10.0.0.0/8"}, "vpc_ip_range", "/16 to /28"),
        ({"vpc_ip_range": "10.0.0.0/30"}, "vpc_ip_range", "/16 to /28"),
        ({"ingress_cidrs": ["0.0.0.0/0", "nowhere"]}, "ingress_cidrs.1", "not a CIDR"),
        ({"api_cidrs": ["300.1.1.1/32"]}, "api_cidrs.0", "not a CIDR"),
        ({"environment": "Prod"}, "environment", "Production"),
        ({"project_name": ""}, "project_name", "at least 1"),
        ({"vpc_range": "10.0.0.0/16"}, "vpc_range", "Extra inputs"),
    ],
)
def test_core_invalid_fields(raw: dict[str, Any], field: str, hint: str) -> None:
    message = error("do-core", raw)
    assert f"{field}:" in message
    assert hint in message


def test_core_vpc_range_is_normalised() -> None:
    assert parse("do-core", {"vpc_ip_range": "10.20.3.4/16"}).vpc_ip_range == "10.20.0.0/16"


# -- do-managed-k8s -----------------------------------------------------------------------


def test_managed_k8s_defaults() -> None:
    s = parse("do-managed-k8s", {})
    assert isinstance(s, DoManagedK8sSettings)
    assert s.version == catalog.DEFAULT_DOKS_VERSION
    assert (s.system_node_size, s.system_node_count) == ("s-2vcpu-4gb", 1)
    assert (s.node_size, s.node_count, s.auto_scale) == ("s-2vcpu-4gb", 2, False)
    assert s.min_nodes <= s.max_nodes
    assert s.ha is False


def test_unknown_node_size_lists_close_matches() -> None:
    message = error("do-managed-k8s", {"node_size": "s-2vcpu-4g"})
    assert "node_size: unknown DOKS node size slug 's-2vcpu-4g'" in message
    assert "did you mean" in message and "s-2vcpu-4gb" in message


def test_sizes_too_small_for_doks_are_rejected() -> None:
    assert "s-1vcpu-1gb" in catalog.sizes()
    message = error("do-managed-k8s", {"system_node_size": "s-1vcpu-1gb"})
    assert "system_node_size: unknown DOKS node size slug" in message


def test_unknown_version_lists_valid_versions() -> None:
    message = error("do-managed-k8s", {"version": "1.34"})
    assert "version: unknown Kubernetes version '1.34'" in message
    assert "valid choices" in message.lower()
    for v in catalog.DOKS_VERSIONS:
        assert v in message


@pytest.mark.parametrize(
    ("raw", "hint"),
    [
        ({"node_count": 0}, "node_count: Input should be greater than or equal to 1"),
        ({"node_count": 513}, "node_count: Input should be less than or equal to 512"),
        ({"system_node_count": 0}, "system_node_count:"),
        ({"max_nodes": 600, "auto_scale": True}, "max_nodes:"),
        ({"min_nodes": 5, "max_nodes": 3}, "min_nodes (5) is greater than max_nodes (3)"),
        ({"system_node_count": 12, "node_count": 501}, "at most 512"),
        ({"system_node_count": 2, "auto_scale": True, "max_nodes": 511}, "max_nodes = 513"),
        ({"tags": ["has space"]}, "tags.0:"),
        ({"ha": "maybe"}, "ha:"),
        ({"node_pool": {}}, "node_pool: Extra inputs"),
    ],
)
def test_managed_k8s_invalid(raw: dict[str, Any], hint: str) -> None:
    assert hint in error("do-managed-k8s", raw)


def test_autoscale_bounds_accepted() -> None:
    s = parse("do-managed-k8s", {"auto_scale": True, "min_nodes": 1, "max_nodes": 25})
    assert (s.auto_scale, s.min_nodes, s.max_nodes) == (True, 1, 25)
    # Counts that only matter with autoscaling still exist at the limit without it.
    assert parse("do-managed-k8s", {"node_count": 511}).node_count == 511


def test_settings_models_are_frozen() -> None:
    s = parse("do-managed-k8s", {})
    with pytest.raises(ValueError):
        s.node_count = 3  # type: ignore[misc]
