"""Layer ``k8s-postgresql``: PostgreSQL from the Bitnami Helm chart (component
:mod:`components.k8s.postgresql`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, SecretStr, field_validator

from stacks.layers._k8s import ContainerSettings, component_args, component_opts
from stacks.registry import Layer, LayerContext, register
from stacks.validators import DnsLabel, Quantity

_PG_NAME = r"^[a-z_][a-z0-9_]{0,62}$"

MIN_PASSWORD_LENGTH = 12


class K8sPostgresqlSettings(ContainerSettings):
    """Settings of ``k8s-postgresql``.

    Attributes:
        password: Password of ``username``; required, at least 12 characters. Keep it in
            the stack's secret config (``pulumi config set --secret``); it is never
            printed, not even in validation errors.
        version: Version of the Bitnami ``postgresql`` chart.
        username: Database user for the apps.
        database: Database for the apps.
        storage: Size of the data volume (a billed DigitalOcean volume on DOKS).
        storage_class: StorageClass of the volume (default: the cluster's default).
        cpu_request: CPU request of PostgreSQL.
        cpu_limit: CPU limit.
        memory_request: Memory request.
        memory_limit: Memory limit.
        legacy_images: Pull Bitnami's images from ``docker.io/bitnamilegacy``, where
            Bitnami moved its free images in August 2025.
    """

    password: SecretStr
    version: str = Field("16.7.27", pattern=r"^\d+\.\d+\.\d+$")
    username: str = Field("infragym", pattern=_PG_NAME)
    database: str = Field("infragym", pattern=_PG_NAME)
    storage: Quantity = "8Gi"
    storage_class: DnsLabel | None = None
    cpu_request: Quantity = "250m"
    cpu_limit: Quantity = "1"
    memory_request: Quantity = "256Mi"
    memory_limit: Quantity = "512Mi"
    legacy_images: bool = True

    @field_validator("password")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        # The message must never include the value.
        if len(value.get_secret_value()) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
        return value


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the release; return the host and the (secret) DSN."""
    from components.k8s.postgresql import Postgresql, PostgresqlArgs

    s: K8sPostgresqlSettings = ctx.settings
    pg = Postgresql(
        "postgresql",
        component_args(
            PostgresqlArgs,
            s,
            namespace=ctx.need("namespace"),
            password=s.password.get_secret_value(),
        ),
        opts=component_opts(ctx),
    )
    return {"postgresql_host": pg.host, "postgresql_dsn": pg.dsn}


LAYER = register(
    Layer(
        name="k8s-postgresql",
        description="PostgreSQL (Bitnami Helm chart) with its Prometheus exporter",
        settings=K8sPostgresqlSettings,
        program=program,
        upstream=("cluster", "k8s-core"),
        outputs=("postgresql_host", "postgresql_dsn"),
        resources=("infragym:k8s:Postgresql", "kubernetes:helm.sh/v3:Release"),
    )
)
