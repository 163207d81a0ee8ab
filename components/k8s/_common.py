"""Helpers shared by the Kubernetes components: child options, labels, resources, and the
Deployment (pod spec) and Service of a Python app run from a stock image with its code
mounted from a ConfigMap.

How an app runs without an image build:

- a ConfigMap carries the module sources, read at program time from the installed
  package (``infragym/apps/<app>.py`` and the modules every app imports,
  :data:`SHARED_APP_MODULES`) plus empty ``__init__.py`` files, and is mounted
  read-only under ``/app`` with ``items`` paths that rebuild the package layout
  (``/app/infragym/apps/heater.py`` ...);
- an init container (the same stock image) runs ``pip install --target /deps`` of the
  app's few dependencies into an ``emptyDir``. This needs egress to PyPI, which a DOKS
  cluster has (worker nodes reach the internet); a cluster without egress needs a
  mirror (``PIP_INDEX_URL``) or a prebuilt image;
- the main container runs ``python -m infragym.apps.<app>`` with
  ``PYTHONPATH=/app:/deps``.

The ConfigMap's name carries a hash of its content (as kustomize's configMapGenerator
does), so new app code gets a new, immutable ConfigMap and the Deployment that mounts it
rolls its pods; it also keeps the name known under Pulumi's mocks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

import pulumi
import pulumi_kubernetes as k8s

from infragym.errors import InfraGymError

PART_OF = "infragym"
"""Value of the ``app.kubernetes.io/part-of`` label on everything the layers create."""

PYTHON_IMAGE = "python:3.11-slim"
"""The stock image the apps run from."""

APP_DEPENDENCIES: tuple[str, ...] = (
    "aiohttp>=3.9,<4",
    "prometheus-client>=0.20",
    "pydantic>=2.6,<3",
)
"""What the init container installs (the apps import only these and the standard library;
the bounds follow ``pyproject.toml``)."""

SHARED_APP_MODULES: tuple[str, ...] = ("_serving", "workload")
"""Modules under ``infragym.apps`` that every app imports, mounted next to it."""

APP_ROOT = "/app"
DEPS_ROOT = "/deps"

PIP_INSTALL = (
    "pip", "install", "--quiet", "--no-cache-dir", "--disable-pip-version-check",
    "--target", DEPS_ROOT,
)  # fmt: skip


def child_opts(parent: pulumi.Resource, **kwargs: object) -> pulumi.ResourceOptions:
    """Options for a component's child: ``parent=self`` (the provider is inherited)."""
    return pulumi.ResourceOptions(parent=parent, **kwargs)  # type: ignore[arg-type]


def labels(name: str) -> dict[str, str]:
    """The recommended labels of one app (also its selector)."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def prometheus_annotations(port: int, path: str = "/metrics") -> dict[str, str]:
    """Pod annotations the ``kubernetes-pods`` scrape job of the k8s/prometheus layer keeps."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": path,
    }


def resource_requirements(
    cpu_request: str, cpu_limit: str, memory_request: str, memory_limit: str
) -> k8s.core.v1.ResourceRequirementsArgs:
    """Requests and limits of one container."""
    return k8s.core.v1.ResourceRequirementsArgs(
        requests={"cpu": cpu_request, "memory": memory_request},
        limits={"cpu": cpu_limit, "memory": memory_limit},
    )


def app_sources(app: str) -> dict[str, str]:
    """ConfigMap data for app ``app``: key → file content.

    Keys are the dotted file paths (``infragym.apps.heater.py``), since ConfigMap keys
    cannot contain ``/``; :func:`app_volume_items` maps them back to paths.

    Raises:
        InfraGymError: A module file is missing from the installed ``infragym`` package.
    """
    package = resources.files("infragym.apps")
    data = {"infragym.__init__.py": "", "infragym.apps.__init__.py": ""}
    for module in _modules(app):
        try:
            data[f"infragym.apps.{module}.py"] = package.joinpath(f"{module}.py").read_text(
                encoding="utf-8"
            )
        except (FileNotFoundError, NotADirectoryError):
            raise InfraGymError(
                f"cannot deploy the {app} app: the module file infragym/apps/{module}.py is "
                "missing from the installed infragym package (reinstall it: pip install -e .)"
            ) from None
    return data


def _modules(app: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((app, *SHARED_APP_MODULES)))


def app_volume_items(app: str) -> list[k8s.core.v1.KeyToPathArgs]:
    """``items`` that mount each key of :func:`app_sources` at its package path.

    ``infragym.apps.heater.py`` → ``infragym/apps/heater.py`` (under the ``/app`` mount).
    """
    keys = ["infragym.__init__.py", "infragym.apps.__init__.py"]
    keys += [f"infragym.apps.{m}.py" for m in _modules(app)]
    return [
        k8s.core.v1.KeyToPathArgs(key=key, path=key.removesuffix(".py").replace(".", "/") + ".py")
        for key in keys
    ]


def content_name(prefix: str, data: Mapping[str, str]) -> str:
    """``<prefix>-<hash of data>``: a name that changes exactly when the content does."""
    digest = hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()
    return f"{prefix}-{digest[:10]}"


def code_config_map(
    parent: pulumi.Resource,
    logical_name: str,
    app: str,
    namespace: pulumi.Input[str],
    app_labels: Mapping[str, str],
) -> k8s.core.v1.ConfigMap:
    """The immutable ConfigMap holding app ``app``'s module sources."""
    data = app_sources(app)
    return k8s.core.v1.ConfigMap(
        logical_name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=content_name(logical_name, data), namespace=namespace, labels=dict(app_labels)
        ),
        data=data,
        immutable=True,
        opts=child_opts(parent),
    )


def app_metadata(
    name: str, namespace: pulumi.Input[str], app_labels: Mapping[str, str]
) -> k8s.meta.v1.ObjectMetaArgs:
    """Metadata of one of an app's namespaced objects: ``name``, ``namespace``, labels."""
    return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace, labels=dict(app_labels))


def service_url(name: str, namespace: pulumi.Input[str], suffix: str = "") -> pulumi.Output[str]:
    """In-cluster URL of Service ``name``: ``http://<name>.<namespace>.svc.cluster.local<suffix>``."""
    return pulumi.Output.from_input(namespace).apply(
        lambda ns: f"http://{name}.{ns}.svc.cluster.local{suffix}"
    )


def app_service(
    parent: pulumi.Resource,
    name: str,
    namespace: pulumi.Input[str],
    app_labels: Mapping[str, str],
    port: k8s.core.v1.ServicePortArgs,
    service_type: pulumi.Input[str] = "ClusterIP",
) -> k8s.core.v1.Service:
    """Service ``name`` with one port, in front of the pods labelled ``app_labels``."""
    return k8s.core.v1.Service(
        name,
        metadata=app_metadata(name, namespace, app_labels),
        spec=k8s.core.v1.ServiceSpecArgs(
            type=service_type, selector=dict(app_labels), ports=[port]
        ),
        opts=child_opts(parent),
    )


@dataclass
class PythonAppPod:
    """What the pod of one Python app runs.

    Attributes:
        app: Module name under ``infragym.apps`` (``heater``, ``siege_engine``).
        container: Name of the main container.
        port: The container port (named ``http``) serving ``/metrics``.
        args: Arguments after ``python -m infragym.apps.<app>``.
        env: Environment variables of the main container.
        env_from_secrets: Further variables of the main container, as ``EnvVarArgs``
            (values taken from a Secret), after ``env``.
        resources: Requests and limits; the init container gets the same, so the pod's
            effective requests are the main container's.
        labels: Pod labels (the Deployment's selector).
        annotations: Pod annotations (Prometheus scraping).
        readiness_path: HTTP path of the readiness probe on ``port`` (``None``: none).
        node_selector: Node labels the pod must run on (``None``: anywhere).
        image: The stock Python image.
        extra_dependencies: Packages the init container installs after
            :data:`APP_DEPENDENCIES`.
    """

    app: str
    container: str
    port: int
    args: Sequence[str]
    env: Mapping[str, pulumi.Input[str]]
    resources: k8s.core.v1.ResourceRequirementsArgs
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    readiness_path: str | None = "/healthz"
    node_selector: Mapping[str, pulumi.Input[str]] | None = None
    image: str = PYTHON_IMAGE
    env_from_secrets: Sequence[k8s.core.v1.EnvVarArgs] = ()
    extra_dependencies: Sequence[str] = ()


def python_app_pod_template(
    pod: PythonAppPod, code_config_map: pulumi.Input[str]
) -> k8s.core.v1.PodTemplateSpecArgs:
    """The pod template of a Python app run from ``pod.image`` with code from a ConfigMap.

    Args:
        pod: What the pod runs.
        code_config_map: Name of the ConfigMap built by :func:`code_config_map` (pass its
            ``metadata.name`` output, so the Deployment waits for it).
    """
    v1 = k8s.core.v1
    env = [v1.EnvVarArgs(name=k, value=v) for k, v in pod.env.items()]
    env += pod.env_from_secrets
    env += [
        v1.EnvVarArgs(name="PYTHONPATH", value=f"{APP_ROOT}:{DEPS_ROOT}"),
        v1.EnvVarArgs(name="PYTHONUNBUFFERED", value="1"),
        v1.EnvVarArgs(name="PYTHONDONTWRITEBYTECODE", value="1"),  # /app is read-only
    ]
    readiness = None
    if pod.readiness_path is not None:
        readiness = v1.ProbeArgs(
            http_get=v1.HTTPGetActionArgs(path=pod.readiness_path, port=pod.port),
            period_seconds=5,
            failure_threshold=3,
        )
    install = v1.ContainerArgs(
        name="install-deps",
        image=pod.image,
        # Needs egress to PyPI (a DOKS cluster has it).
        command=[*PIP_INSTALL, *APP_DEPENDENCIES, *pod.extra_dependencies],
        resources=pod.resources,
        volume_mounts=[v1.VolumeMountArgs(name="deps", mount_path=DEPS_ROOT)],
    )
    main = v1.ContainerArgs(
        name=pod.container,
        image=pod.image,
        command=["python", "-m", f"infragym.apps.{pod.app}", *pod.args],
        ports=[v1.ContainerPortArgs(name="http", container_port=pod.port)],
        env=env,
        resources=pod.resources,
        readiness_probe=readiness,
        volume_mounts=[
            v1.VolumeMountArgs(name="code", mount_path=APP_ROOT, read_only=True),
            v1.VolumeMountArgs(name="deps", mount_path=DEPS_ROOT, read_only=True),
        ],
    )
    return v1.PodTemplateSpecArgs(
        metadata=k8s.meta.v1.ObjectMetaArgs(
            labels=dict(pod.labels), annotations=dict(pod.annotations) or None
        ),
        spec=v1.PodSpecArgs(
            init_containers=[install],
            containers=[main],
            node_selector=dict(pod.node_selector) if pod.node_selector else None,
            volumes=[
                v1.VolumeArgs(
                    name="code",
                    config_map=v1.ConfigMapVolumeSourceArgs(
                        name=code_config_map,
                        items=app_volume_items(pod.app),
                    ),
                ),
                v1.VolumeArgs(name="deps", empty_dir=v1.EmptyDirVolumeSourceArgs()),
            ],
        ),
    )


def python_app_deployment(
    parent: pulumi.Resource,
    name: str,
    namespace: pulumi.Input[str],
    replicas: int,
    pod: PythonAppPod,
    ignore_changes: list[str] | None = None,
) -> k8s.apps.v1.Deployment:
    """Deployment ``name`` of ``pod``, with the app's code in a ConfigMap ``<name>-code``.

    Args:
        parent: The component.
        name: Name of the Deployment (and prefix of the ConfigMap's).
        namespace: Namespace of both.
        replicas: Replica count.
        pod: What each pod runs; its labels are the Deployment's labels and selector.
        ignore_changes: Property paths Pulumi leaves alone on updates.
    """
    code = code_config_map(parent, f"{name}-code", pod.app, namespace, pod.labels)
    return k8s.apps.v1.Deployment(
        name,
        metadata=app_metadata(name, namespace, pod.labels),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=replicas,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=dict(pod.labels)),
            template=python_app_pod_template(pod, code.metadata.apply(lambda m: m.name)),
        ),
        opts=child_opts(parent, ignore_changes=ignore_changes),
    )
