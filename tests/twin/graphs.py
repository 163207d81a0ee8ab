"""Hand-built resource graphs, in the camelCase form the mock runtime records.

The twin tests use these so that they check the twin against queueing theory and the
Kubernetes documentation without depending on the layer programs.
"""

from __future__ import annotations

import random

from infragym.apps.workload import CpuWork, Schedule, constant
from infragym.backends.base import ResourceRecord
from infragym.twin.twin import CPU_LIMIT_PATH

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
NODE_POOL = "digitalocean:index/kubernetesNodePool:KubernetesNodePool"
CLUSTER = "digitalocean:index/kubernetesCluster:KubernetesCluster"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


def deployment(
    name, replicas, env, cpu_request="250m", cpu_limit="500m", memory="128Mi", selector=None
):
    container = {
        "name": name,
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "resources": {
            "requests": {"cpu": cpu_request, "memory": memory},
            "limits": {"cpu": cpu_limit, "memory": memory} if cpu_limit else {"memory": memory},
        },
    }
    pod_spec = {"containers": [container]}
    if selector:
        pod_spec["nodeSelector"] = selector
    return ResourceRecord(
        "k8s-" + name,
        DEPLOYMENT,
        name,
        {
            "metadata": {"name": name},
            "spec": {"replicas": float(replicas), "template": {"spec": pod_spec}},
        },
    )


def web_app(
    *,
    replicas: int = 1,
    work: CpuWork | None = None,
    schedule: Schedule | None = None,
    cpu_request: str = "250m",
    cpu_limit: str | None = "1000m",
    node_size: str = "s-4vcpu-8gb",
    node_count: int = 2,
    auto_scale: tuple[int, int] | None = None,
    hpa: dict | None = None,
    system_pool: bool = True,
    database_cpu: str | None = None,
    database_request: str = "100m",
) -> list[ResourceRecord]:
    """A cluster with a ``workers`` pool, the heater and the siege-engine.

    With ``database_cpu``, also the ``k8s-postgresql`` layer's Helm release (that CPU
    limit on its primary), and the heater given its DSN from a Secret, as the
    ``k8s-heater`` layer's ``database`` setting does.
    """
    work = work or CpuWork(mean_ms=20.0, distribution="exponential")
    schedule = schedule or constant(20.0)
    pool = {"name": "dev-workers", "size": node_size, "nodeCount": float(node_count)}
    if auto_scale:
        pool.update(autoScale=True, minNodes=float(auto_scale[0]), maxNodes=float(auto_scale[1]))
    records = [
        ResourceRecord(
            "do-managed-k8s",
            CLUSTER,
            "cluster",
            {
                "region": "nyc3",
                "nodePool": {"name": "dev-system", "size": "s-2vcpu-4gb", "nodeCount": 1.0}
                if system_pool
                else {},
            },
        ),
        ResourceRecord("do-managed-k8s", NODE_POOL, "workers", pool),
        deployment(
            "heater",
            replicas,
            {"HEATER_WORK": work.model_dump_json()},
            cpu_request=cpu_request,
            cpu_limit=cpu_limit,
            selector={"doks.digitalocean.com/node-pool": "dev-workers"},
        ),
        deployment(
            "siege-engine",
            1,
            {"SIEGE_SCHEDULE": schedule.model_dump_json(), "SIEGE_TARGET": "http://heater"},
            cpu_request="100m",
            cpu_limit="500m",
        ),
    ]
    if database_cpu is not None:
        (heater,) = [r for r in records if (r.type, r.name) == (DEPLOYMENT, "heater")]
        heater_env = heater.inputs["spec"]["template"]["spec"]["containers"][0]["env"]
        heater_env.append(
            {
                "name": "HEATER_DB_DSN",
                "valueFrom": {"secretKeyRef": {"name": "heater-db", "key": "dsn"}},
            }
        )
        resources = {"requests": {"cpu": database_request}, "limits": {"cpu": database_cpu}}
        records.append(
            ResourceRecord(
                "k8s-postgresql",
                HELM_RELEASE,
                "postgresql",
                {"chart": "postgresql", "values": {"primary": {"resources": resources}}},
            )
        )
    if hpa is not None:
        records.append(
            ResourceRecord(
                "k8s-heater",
                HPA,
                "heater",
                {
                    "spec": {
                        "scaleTargetRef": {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": "heater",
                        },
                        "minReplicas": float(hpa.get("min", 1)),
                        "maxReplicas": float(hpa.get("max", 20)),
                        "metrics": [
                            {
                                "type": "Resource",
                                "resource": {
                                    "name": "cpu",
                                    "target": {
                                        "type": "Utilization",
                                        "averageUtilization": float(hpa.get("target", 70)),
                                    },
                                },
                            }
                        ],
                    }
                },
            )
        )
    return records


WORKER_SIZES = ("s-1vcpu-2gb", "s-2vcpu-4gb", "s-4vcpu-8gb")


def random_knob_changes(twin, rng: random.Random, max_replicas: int = 12) -> None:
    """Up to three changes of a :func:`web_app` twin's four knobs, as an agent makes them."""
    for _ in range(rng.randrange(4)):
        knob = rng.randrange(4)
        if knob == 0:
            twin.set_property(DEPLOYMENT, "heater", "spec.replicas", rng.randint(1, max_replicas))
        elif knob == 1:
            limit = rng.choice(("250m", "500m", "1000m", "2"))
            twin.set_property(DEPLOYMENT, "heater", CPU_LIMIT_PATH, limit)
        elif knob == 2:
            twin.set_property(NODE_POOL, "workers", "nodeCount", float(rng.randint(1, 5)))
        else:
            twin.set_property(NODE_POOL, "workers", "size", rng.choice(WORKER_SIZES))
