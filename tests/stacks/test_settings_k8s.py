"""Settings validation of the Kubernetes layers: bad values fail with a ConfigError that
names the layer and the field, before any Pulumi code runs."""

from __future__ import annotations

import pytest

from infragym.apps.workload import CpuWork, constant
from infragym.errors import ConfigError
from stacks.layers._k8s import component_args, quantity_value
from stacks.registry import get_layer


def parse(layer: str, raw: dict):
    return get_layer(layer).parse_settings(raw)


def test_defaults() -> None:
    core = parse("k8s-core", {})
    assert (core.namespace, core.metrics_server) == ("infragym", True)
    heater = parse("k8s-heater", {})
    assert heater.replicas == 2
    assert (heater.cpu_request, heater.cpu_limit) == ("250m", "500m")
    assert (heater.memory_request, heater.memory_limit) == ("128Mi", "256Mi")
    assert heater.work == CpuWork()
    assert heater.hpa is None
    assert heater.service_type == "ClusterIP"
    assert heater.database is False
    siege = parse("k8s-siege-engine", {})
    assert siege.schedule == constant(50.0)
    assert siege.replicas == 1
    prom = parse("k8s-prometheus", {})
    assert (prom.scrape_interval, prom.retention, prom.expose) == ("15s", "6h", False)
    pg = parse("k8s-postgresql", {"password": "x" * 12})
    assert pg.storage == "8Gi"


@pytest.mark.parametrize(
    ("layer", "raw", "field"),
    [
        ("k8s-core", {"namespace": "Bad_Name"}, "namespace"),
        ("k8s-core", {"namespace": "-lead"}, "namespace"),
        ("k8s-core", {"namespace": "x" * 64}, "namespace"),
        ("k8s-heater", {"cpu_limit": "lots"}, "cpu_limit"),
        ("k8s-heater", {"memory_request": "12 Mi"}, "memory_request"),
        ("k8s-heater", {"replicas": -1}, "replicas"),
        ("k8s-heater", {"service_type": "NodePort"}, "service_type"),
        ("k8s-heater", {"work": {"mean_ms": 0}}, "work.mean_ms"),
        ("k8s-heater", {"hpa": {"min_replicas": 0}}, "hpa.min_replicas"),
        ("k8s-heater", {"replica": 3}, "replica"),
        ("k8s-siege-engine", {"schedule": {"shape": {"kind": "sawtooth"}}}, "schedule.shape"),
        ("k8s-siege-engine", {"schedule": {"shape": {"kind": "constant", "rate": -1}}}, "rate"),
        ("k8s-siege-engine", {"cpu_request": "1x"}, "cpu_request"),
        ("k8s-prometheus", {"scrape_interval": "15"}, "scrape_interval"),
        ("k8s-prometheus", {"scrape_interval": "0s"}, "scrape_interval"),
        ("k8s-prometheus", {"retention": "six hours"}, "retention"),
        ("k8s-postgresql", {"password": "x" * 12, "storage": "8 GB"}, "storage"),
        ("k8s-postgresql", {"password": "x" * 12, "username": "Robert'); DROP"}, "username"),
        ("k8s-postgresql", {}, "password"),
    ],
)
def test_bad_values(layer: str, raw: dict, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse(layer, raw)
    message = str(exc.value)
    assert f"layer {layer!r}" in message
    assert field in message


@pytest.mark.parametrize(
    ("layer", "raw", "words"),
    [
        (
            "k8s-heater",
            {"cpu_request": "2", "cpu_limit": "500m"},
            ["cpu_request", "cpu_limit", "'2'", "'500m'"],
        ),
        ("k8s-heater", {"memory_request": "1Gi", "memory_limit": "512Mi"}, ["memory"]),
        ("k8s-siege-engine", {"cpu_request": "1500m", "cpu_limit": "1"}, ["cpu"]),
        (
            "k8s-postgresql",
            {"password": "x" * 12, "memory_request": "2Gi", "memory_limit": "1Gi"},
            ["memory"],
        ),
        ("k8s-prometheus", {"memory_request": "2Gi", "memory_limit": "1Gi"}, ["memory"]),
    ],
)
def test_request_above_limit(layer: str, raw: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError, match="above its limit") as exc:
        parse(layer, raw)
    for w in words:
        assert w in str(exc.value)


def test_request_equal_to_limit_is_fine() -> None:
    s = parse("k8s-heater", {"cpu_request": "0.5", "cpu_limit": "500m"})
    assert s.cpu_request == "0.5"


def test_hpa_range() -> None:
    with pytest.raises(ConfigError, match="min_replicas 5 is above max_replicas 3"):
        parse("k8s-heater", {"hpa": {"min_replicas": 5, "max_replicas": 3}})
    hpa = parse("k8s-heater", {"hpa": {"max_replicas": 4}}).hpa
    assert (hpa.min_replicas, hpa.max_replicas, hpa.target_cpu_utilization) == (1, 4, 70)


def test_database_needs_a_query() -> None:
    with pytest.raises(ConfigError, match=r"layer 'k8s-heater'.*set work\.db_query"):
        parse("k8s-heater", {"database": True})
    s = parse("k8s-heater", {"database": True, "work": {"db_query": "SELECT 1"}})
    assert (s.database, s.work.db_query) == (True, "SELECT 1")
    # A query without the database is fine: the heater runs it only with a DSN.
    assert parse("k8s-heater", {"work": {"db_query": "SELECT 1"}}).database is False


def test_short_password_is_not_shown() -> None:
    secret = "tiny-s3cret"  # 11 characters
    with pytest.raises(ConfigError, match="at least 12 characters") as exc:
        parse("k8s-postgresql", {"password": secret})
    assert secret not in str(exc.value)
    assert secret not in repr(exc.value)


def test_password_is_hidden_in_the_model() -> None:
    secret = "a-long-enough-secret"
    s = parse("k8s-postgresql", {"password": secret})
    assert secret not in repr(s)
    assert secret not in s.model_dump_json()
    assert s.password.get_secret_value() == secret


def test_durations() -> None:
    for ok in ("15s", "1m30s", "500ms", "6h", "2d", "1w", "1y"):
        assert parse("k8s-prometheus", {"scrape_interval": ok}).scrape_interval == ok


@pytest.mark.parametrize(
    ("q", "value"),
    [("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("256Mi", 256 * 2**20), ("1Gi", 2**30), ("1k", 1e3)],
)
def test_quantity_value(q: str, value: float) -> None:
    assert quantity_value(q) == pytest.approx(value)


def test_component_args_pass_settings_on_by_name() -> None:
    from components.k8s.postgresql import PostgresqlArgs
    from components.k8s.prometheus import PrometheusArgs

    s = parse("k8s-prometheus", {"retention": "2d", "memory_limit": "2Gi"})
    args = component_args(PrometheusArgs, s, namespace="apps")
    assert (args.namespace, args.retention, args.memory_limit) == ("apps", "2d", "2Gi")
    assert args.scrape_interval == s.scrape_interval
    assert component_args(PrometheusArgs, s, namespace="apps", expose=True).expose is True
    # A secret setting is never passed on implicitly.
    pg = parse("k8s-postgresql", {"password": "x" * 12})
    with pytest.raises(TypeError, match="password"):
        component_args(PostgresqlArgs, pg, namespace="apps")
    args = component_args(PostgresqlArgs, pg, namespace="apps", password="x" * 12)
    assert args.password == "x" * 12
