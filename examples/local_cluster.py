"""Deploy the k8s layers for real on a local control plane, turn two knobs, clean up.

Needs the binaries of ``scripts/install-kubernetes.sh`` and a Pulumi CLI on PATH
(``scripts/install-pulumi-cli.sh``); no cloud account. The cluster's nodes are simulated
by KWOK: the scheduler, the controllers and the Pulumi provider are real, no container
runs, so there are no request metrics (latency, errors) here.

    bash scripts/install-kubernetes.sh
    export PATH="$(bash scripts/install-pulumi-cli.sh | tail -n 1):$PATH"
    python examples/local_cluster.py
"""

from __future__ import annotations

import tempfile

from infragym.backends.base import Change, LayerSpec
from infragym.backends.pulumi import PulumiBackend
from infragym.cluster import LocalCluster
from infragym.cluster.api import ApiClient
from infragym.envs.simple_k8s_web_app import default_knobs
from infragym.knobs import IntRange, Knob

NODE_COUNT = Knob(
    "node_count",
    "local-k8s",
    "kubernetes:infragym.dev/v1:NodePool",
    "workers",
    "spec.nodeCount",
    IntRange(1, 10),
)


def main() -> None:
    heater_replicas = default_knobs()[0]
    with tempfile.TemporaryDirectory(prefix="infragym-example-") as d:
        cluster = LocalCluster(f"{d}/cluster")
        print("starting the control plane...")
        cluster.up()
        backend = PulumiBackend("example", f"file://{d}", step_wait=False)
        try:
            backend.reset(
                [
                    LayerSpec("local-k8s", {"kubeconfig": cluster.kubeconfig(), "node_count": 2}),
                    LayerSpec("k8s-core", {"metrics_server": False}),
                    LayerSpec("k8s-heater", {}),
                ]
            )
            k8s = cluster.client()
            show(k8s, "deployed")
            backend.apply([Change(NODE_COUNT, 3), Change(heater_replicas, 6)])
            show(k8s, "after node_count=3, heater_replicas=6")
        finally:
            backend.close()  # destroys the stacks: nothing is left in the cluster
            cluster.down()


def show(k8s: ApiClient, title: str) -> None:
    heater = k8s.request("GET", "/apis/apps/v1/namespaces/infragym/deployments/heater")
    nodes = k8s.list("nodes", selector="doks.digitalocean.com/node-pool=example-workers")
    print(
        f"{title}: {len(nodes)} worker nodes, heater {heater['status'].get('readyReplicas', 0)}"
        f"/{heater['spec']['replicas']} Ready"
    )


if __name__ == "__main__":
    main()
