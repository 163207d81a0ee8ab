"""k8s-heater on the k8s-postgresql database: the whole deployment under Pulumi mocks, as
the sim backend builds it (optional upstream ordering, the DSN kept secret end to end)."""

from __future__ import annotations

import json

import pytest

from infragym.apps.workload import HEATER_DB_DSN_ENV
from infragym.backends.base import LayerSpec, ResourceRecord
from infragym.backends.mockrun import run_layers
from infragym.backends.sim import resource_graph
from infragym.errors import ConfigError
from tests.components.k8s_layers import DEPLOYMENT

SECRET = "kubernetes:core/v1:Secret"
PASSWORD = "pg-pa55word-for-tests"
BASE = [LayerSpec("do-core"), LayerSpec("do-managed-k8s"), LayerSpec("k8s-core")]
HEATER_DB = LayerSpec("k8s-heater", {"database": True, "work": {"db_query": "SELECT 1"}})
POSTGRES = LayerSpec("k8s-postgresql", {"password": PASSWORD})


def _one(records: list[ResourceRecord], type_token: str, name: str) -> ResourceRecord:
    (found,) = [r for r in records if (r.type, r.name) == (type_token, name)]
    return found


@pytest.fixture(scope="module")
def specs() -> list[LayerSpec]:
    # The heater before PostgreSQL: the registry orders them.
    return [*BASE, HEATER_DB, POSTGRES]


def test_heater_reads_the_dsn_from_the_secret(specs: list[LayerSpec]) -> None:
    records = resource_graph(specs, "dbtest")
    assert _one(records, SECRET, "heater-db").layer == "k8s-heater"
    dep = _one(records, DEPLOYMENT, "heater")
    env = dep.inputs["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": HEATER_DB_DSN_ENV,
        "valueFrom": {"secretKeyRef": {"name": "heater-db", "key": "dsn"}},
    } in env


def test_dsn_is_never_in_clear_text(specs: list[LayerSpec]) -> None:
    """The DSN (and the password in it) appear only in inputs Pulumi keeps secret."""
    _, runs = run_layers(specs, "dbtest")
    dsn = runs["k8s-postgresql"].outputs["postgresql_dsn"]
    assert PASSWORD in dsn
    assert runs["k8s-heater"].one(SECRET, "heater-db").inputs["stringData"] == {"dsn": dsn}
    for layer, run in runs.items():
        for r in run.resources:
            plain = {k: v for k, v in r.inputs.items() if k not in r.secret_inputs}
            assert dsn not in json.dumps(plain), (layer, r.type, r.name)
            assert PASSWORD not in json.dumps(plain), (layer, r.type, r.name)


def test_database_without_the_postgresql_layer_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="needs the upstream output 'postgresql_dsn'"):
        resource_graph([*BASE, HEATER_DB], "dbtest")


def test_postgresql_alongside_a_heater_without_database() -> None:
    records = resource_graph([*BASE, LayerSpec("k8s-heater"), POSTGRES], "dbtest")
    assert not [r for r in records if r.type == SECRET]


def test_twin_serves_the_heater_through_the_database(specs: list[LayerSpec]) -> None:
    """The sim backend's twin, built from these layers, queries the release's database."""
    from infragym.twin.model import TwinParams
    from infragym.twin.twin import Twin

    records = resource_graph(specs, "dbtest")
    twin = Twin(records, params=TwinParams(noise=False))
    assert twin.database is not None
    assert twin.database.cores == 1.0  # the layer's default cpu_limit
    heater = twin.workloads[(DEPLOYMENT, "heater")]
    assert heater.uses_database
    assert not any(
        u.startswith("kubernetes:helm.sh/v3:Release postgresql") for u in twin.unmodelled
    )
    # The same deployment without the database setting: pods answer faster.
    plain = [*BASE, LayerSpec("k8s-heater", {"work": {"db_query": "SELECT 1"}}), POSTGRES]
    without = Twin(resource_graph(plain, "dbtest"), params=TwinParams(noise=False))
    assert not without.workloads[(DEPLOYMENT, "heater")].uses_database
