"""k8s/core: the namespace the apps live in, and metrics-server.

metrics-server is what a HorizontalPodAutoscaler reads CPU utilisation from (the
``metrics.k8s.io`` API), so it is installed by default. It is a Helm 3 release
(``kubernetes.helm.v3.Release``): Helm 3 talks to the API server directly, with no
in-cluster tiller (Helm 2's server side is gone), and the release is a single resource
whose chart, repository and values the resource graph shows. Turn it off on clusters that
already run a metrics-server (two would fight over the ``v1beta1.metrics.k8s.io``
APIService).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.k8s._common import PART_OF, child_opts

METRICS_SERVER_REPO = "https://kubernetes-sigs.github.io/metrics-server/"
METRICS_SERVER_CHART = "metrics-server"


@dataclass
class CoreArgs:
    """Arguments of :class:`Core`.

    Attributes:
        namespace: Name of the namespace the app layers deploy into.
        metrics_server: Install metrics-server (needed by an HPA).
        metrics_server_version: Version of the metrics-server Helm chart.
        kubelet_insecure_tls: Pass ``--kubelet-insecure-tls`` to metrics-server, for
            clusters whose kubelets serve self-signed certificates (kubeadm clusters such
            as the droplet control plane); DOKS does not need it.
    """

    namespace: str = "infragym"
    metrics_server: bool = True
    metrics_server_version: str = "3.12.2"
    kubelet_insecure_tls: bool = False


class Core(pulumi.ComponentResource):
    """The namespace (logical name ``apps``) and, optionally, metrics-server.

    Attributes:
        namespace: The namespace's name (an output).
    """

    namespace: pulumi.Output[str]

    def __init__(
        self, name: str, args: CoreArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("infragym:k8s:Core", name, None, opts)
        ns = k8s.core.v1.Namespace(
            "apps",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.namespace, labels={"app.kubernetes.io/part-of": PART_OF}
            ),
            opts=child_opts(self),
        )
        self.namespace = ns.metadata.apply(lambda m: m.name)
        self.metrics_server: k8s.helm.v3.Release | None = None
        if args.metrics_server:
            extra_args = ["--kubelet-insecure-tls"] if args.kubelet_insecure_tls else []
            self.metrics_server = k8s.helm.v3.Release(
                "metrics-server",
                k8s.helm.v3.ReleaseArgs(
                    name="metrics-server",
                    chart=METRICS_SERVER_CHART,
                    version=args.metrics_server_version,
                    repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=METRICS_SERVER_REPO),
                    namespace="kube-system",
                    values={"args": extra_args},
                ),
                opts=child_opts(self),
            )
        self.register_outputs({"namespace": self.namespace})
