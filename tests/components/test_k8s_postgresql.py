"""k8s-postgresql under Pulumi mocks: the Helm release, its values and its secrets."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from infragym.backends.mockrun import LayerRun, run_layer
from tests.components.k8s_layers import (
    APP_UPSTREAM,
    RELEASE,
    assert_children_use_k8s_provider,
)

TOKEN = "infragym:k8s:Postgresql"
PASSWORD = "correct-horse/battery@staple"


@pytest.fixture(scope="module")
def default_run() -> LayerRun:
    return run_layer("k8s-postgresql", {"password": PASSWORD}, APP_UPSTREAM)


def test_graph(default_run: LayerRun) -> None:
    custom = sorted((r.type, r.name) for r in default_run.resources if r.custom)
    assert custom == [(RELEASE, "postgresql"), ("pulumi:providers:kubernetes", "k8s")]
    assert_children_use_k8s_provider(default_run, TOKEN)


def test_release(default_run: LayerRun) -> None:
    rel = default_run.one(RELEASE, "postgresql").inputs
    assert rel["chart"] == "postgresql"
    assert rel["repositoryOpts"]["repo"] == "https://charts.bitnami.com/bitnami"
    assert rel["name"] == "postgresql"
    assert rel["namespace"] == "infragym"
    assert rel["version"] == "16.7.27"
    values = rel["values"]
    assert values["auth"]["username"] == "infragym"
    assert values["auth"]["database"] == "infragym"
    assert values["auth"]["password"] == PASSWORD
    assert values["metrics"]["enabled"] is True
    primary = values["primary"]
    assert primary["persistence"]["size"] == "8Gi"
    assert "storageClass" not in primary["persistence"]
    assert primary["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    # Bitnami's free images moved to bitnamilegacy (August 2025).
    assert values["image"]["repository"] == "bitnamilegacy/postgresql"
    assert values["global"]["security"]["allowInsecureImages"] is True


def test_settings_reach_the_values() -> None:
    settings = {
        "password": PASSWORD,
        "version": "15.5.38",
        "username": "app",
        "database": "orders",
        "storage": "20Gi",
        "storage_class": "do-block-storage-xfs",
        "legacy_images": False,
    }
    rel = run_layer("k8s-postgresql", settings, APP_UPSTREAM).one(RELEASE).inputs
    assert rel["version"] == "15.5.38"
    values = rel["values"]
    assert (values["auth"]["username"], values["auth"]["database"]) == ("app", "orders")
    assert values["primary"]["persistence"] == {
        "enabled": True,
        "size": "20Gi",
        "storageClass": "do-block-storage-xfs",
    }
    assert "image" not in values and "global" not in values


def test_password_is_secret(default_run: LayerRun) -> None:
    assert default_run.one(RELEASE).secret_inputs == {"values"}
    for r in default_run.resources:
        plain = {k: v for k, v in r.inputs.items() if k not in r.secret_inputs}
        assert PASSWORD not in json.dumps(plain), (r.type, r.name)


def test_outputs(default_run: LayerRun) -> None:
    host = "postgresql.infragym.svc.cluster.local"
    assert default_run.outputs["postgresql_host"] == host
    assert default_run.secret_outputs == {"postgresql_dsn"}
    dsn = urlsplit(default_run.outputs["postgresql_dsn"])
    assert dsn.scheme == "postgresql"
    assert (dsn.hostname, dsn.port, dsn.path) == (host, 5432, "/infragym")
    assert dsn.username == "infragym"
    from urllib.parse import unquote

    assert unquote(dsn.password) == PASSWORD


def test_layer_entry() -> None:
    from stacks.registry import get_layer

    layer = get_layer("k8s-postgresql")
    assert layer.upstream == ("cluster", "k8s-core")
    assert set(layer.outputs) == {"postgresql_host", "postgresql_dsn"}
    assert RELEASE in layer.resources
