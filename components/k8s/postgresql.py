"""k8s/postgresql: PostgreSQL from the Bitnami Helm chart, with its Prometheus exporter.

One Helm 3 release (``kubernetes.helm.v3.Release``, no tiller) named ``postgresql``, so
the chart's Service is ``postgresql.<namespace>.svc.cluster.local``. The password goes
into the release's values as a Pulumi secret: it is encrypted in the stack's state and
never shown in previews; the DSN output is a secret too.

Bitnami images. In August 2025 Bitnami moved its free container images from
``docker.io/bitnami`` to the unmaintained archive ``docker.io/bitnamilegacy``
(bitnami/containers#83267; see bitnami/charts#36327), so the tags a chart from
``charts.bitnami.com`` names no longer pull from ``bitnami/``. With ``legacy_images``
(the default) the release points the server, exporter and volume-permissions images at
``bitnamilegacy/`` and sets ``global.security.allowInsecureImages``, which the chart
requires for images it does not know. Turn it off with a Bitnami Secure Images
subscription (or a chart whose images pull).

Persistence uses the cluster's default StorageClass (``do-block-storage`` on DOKS: a
DigitalOcean volume billed per GiB-month) unless ``storage_class`` names another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pulumi
import pulumi_kubernetes as k8s

from components.k8s._common import child_opts

CHART = "postgresql"
REPO = "https://charts.bitnami.com/bitnami"
PORT = 5432


@dataclass
class PostgresqlArgs:
    """Arguments of :class:`Postgresql`.

    Attributes:
        namespace: Namespace to deploy into.
        password: Password of ``username`` (pass a secret; it is made one anyway).
        version: Version of the Bitnami ``postgresql`` chart.
        username: Database user created for the apps.
        database: Database created for the apps, owned by ``username``.
        storage: Size of the primary's PersistentVolumeClaim.
        storage_class: StorageClass of the claim (``None``: the cluster's default).
        cpu_request: CPU request of the PostgreSQL container.
        cpu_limit: CPU limit.
        memory_request: Memory request.
        memory_limit: Memory limit.
        legacy_images: Pull Bitnami's images from ``docker.io/bitnamilegacy``.
    """

    namespace: pulumi.Input[str]
    password: pulumi.Input[str]
    version: str = "16.7.27"
    username: str = "infragym"
    database: str = "infragym"
    storage: str = "8Gi"
    storage_class: str | None = None
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "256Mi"
    memory_limit: str = "512Mi"
    legacy_images: bool = True


def chart_values(args: PostgresqlArgs, password: pulumi.Output[str]) -> dict[str, Any]:
    """The release's values (``password`` must be a secret Output)."""
    persistence: dict[str, Any] = {"enabled": True, "size": args.storage}
    if args.storage_class:
        persistence["storageClass"] = args.storage_class
    values: dict[str, Any] = {
        "auth": {"username": args.username, "database": args.database, "password": password},
        "primary": {
            "persistence": persistence,
            "resources": {
                "requests": {"cpu": args.cpu_request, "memory": args.memory_request},
                "limits": {"cpu": args.cpu_limit, "memory": args.memory_limit},
            },
        },
        "metrics": {"enabled": True},
    }
    if args.legacy_images:
        values["global"] = {"security": {"allowInsecureImages": True}}
        values["image"] = {"repository": "bitnamilegacy/postgresql"}
        values["metrics"]["image"] = {"repository": "bitnamilegacy/postgres-exporter"}
        values["volumePermissions"] = {"image": {"repository": "bitnamilegacy/os-shell"}}
    return values


class Postgresql(pulumi.ComponentResource):
    """The Helm release ``postgresql``.

    Attributes:
        host: In-cluster host name of the primary.
        dsn: ``postgresql://user:password@host:5432/database`` (a secret).
        release: The Helm release.
    """

    host: pulumi.Output[str]
    dsn: pulumi.Output[str]

    def __init__(
        self, name: str, args: PostgresqlArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("infragym:k8s:Postgresql", name, None, opts)
        password = pulumi.Output.secret(args.password)
        self.release = k8s.helm.v3.Release(
            "postgresql",
            k8s.helm.v3.ReleaseArgs(
                name="postgresql",  # fixed, so the Service is "postgresql"
                chart=CHART,
                version=args.version,
                repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=REPO),
                namespace=args.namespace,
                values=chart_values(args, password),
                timeout=600,  # volume provisioning and image pulls
            ),
            opts=child_opts(self),
        )
        ns = pulumi.Output.from_input(args.namespace)
        self.host = ns.apply(lambda n: f"postgresql.{n}.svc.cluster.local")
        self.dsn = pulumi.Output.secret(
            pulumi.Output.all(self.host, password).apply(
                lambda hp: (
                    f"postgresql://{quote(args.username, safe='')}:"
                    f"{quote(hp[1], safe='')}@{hp[0]}:{PORT}/{quote(args.database, safe='')}"
                )
            )
        )
        self.register_outputs({"host": self.host, "dsn": self.dsn})
