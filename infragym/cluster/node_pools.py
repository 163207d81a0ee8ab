"""Node pools on the local cluster: a ``NodePool`` custom resource and its controller.

On DigitalOcean a layer declares a node pool (size, count) and DOKS makes the droplets and
registers them as Nodes. The local cluster plays DOKS's part with a small custom resource,
``nodepools.infragym.dev`` (kind ``NodePool``, cluster-scoped)::

    apiVersion: infragym.dev/v1
    kind: NodePool
    metadata: {name: dev-workers}
    spec: {size: s-2vcpu-4gb, nodeCount: 2, readyAfterSeconds: 5}

and this controller (run by ``infragym cluster up`` as one of the cluster's processes),
which keeps, for each pool, ``nodeCount`` Node objects:

- each named ``<pool>-<size>-<n>``, labelled as DOKS labels its nodes
  (``doks.digitalocean.com/node-pool: <pool>``, ``node.kubernetes.io/instance-type``),
  owned by the pool (deleting the pool deletes its nodes), and annotated for KWOK
  (:mod:`infragym.cluster.stages`): managed by KWOK, Ready ``readyAfterSeconds`` after
  it appears, with capacity and allocatable from the DOKS size catalogue
  (:mod:`infragym.catalog`, the figures the twin uses);
- a smaller count removes nodes that are not Ready first, then those with the fewest
  pods, newest first (the pods of a removed node are deleted, and their controllers
  recreate them elsewhere, as when DOKS drains a node);
- a new size brings up new nodes and removes the old ones once every new one is Ready
  (nodes cannot be resized: DOKS replaces them, as the twin does).

A node belongs to the pool whose *uid* its owner reference names, not to any pool of the
same name: a pool deleted and created again under its name (a stack destroyed and
deployed again, perhaps with another size) between two passes must not adopt the old
pool's nodes, whose size and readiness are not its own; they are deleted at once. A node
name seen in a pass is never created again in that pass. The nodes a pass removes are all
cordoned first (so the pods of one do not land on the next), then each is deleted, then
its pods (listed after the node is gone); a pod the scheduler still binds to a node that
no longer exists (its cache lags) is deleted in the next pass, not left Running there
until the pod garbage collector's quarantine (40 s) ends.

A pool's ``status`` says how many nodes it has and how many are Ready. The knobs of the
``local-k8s`` layer are ``spec.nodeCount`` and ``spec.size`` of its ``workers`` pool.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import time
from collections.abc import Mapping
from typing import Any

from infragym import catalog
from infragym.cluster import stages
from infragym.cluster.api import ApiClient
from infragym.errors import ClusterError, ConfigError

log = logging.getLogger(__name__)

GROUP = "infragym.dev"
VERSION = "v1"
KIND = "NodePool"
PLURAL = "nodepools"
API_VERSION = f"{GROUP}/{VERSION}"
POOL_LABEL = "doks.digitalocean.com/node-pool"
"""The label DOKS puts on a pool's nodes (the heater's nodeSelector uses it)."""
SIZE_LABEL = "node.kubernetes.io/instance-type"
MAX_PODS = 110
"""Pods per node, as on DOKS (do-facts §3)."""

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Cluster",
        "names": {
            "plural": PLURAL,
            "singular": "nodepool",
            "kind": KIND,
            "listKind": "NodePoolList",
        },
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size", "nodeCount"],
                                "properties": {
                                    "size": {"type": "string"},
                                    "nodeCount": {"type": "integer", "minimum": 0},
                                    "readyAfterSeconds": {"type": "number", "minimum": 0},
                                    "labels": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string"},
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "nodes": {"type": "integer"},
                                    "readyNodes": {"type": "integer"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}
"""The ``NodePool`` CustomResourceDefinition that ``infragym cluster up`` installs."""


def _pools_path(name: str | None = None) -> str:
    return f"/apis/{GROUP}/{VERSION}/{PLURAL}" + (f"/{name}" if name else "")


def install_crd(client: ApiClient) -> None:
    """Create the ``NodePool`` CRD unless it exists, and wait until it is served."""
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}"
    if client.request("GET", path) is None:
        client.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = client.request("GET", path) or {}
        conds = (crd.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
            return
        time.sleep(0.1)
    raise ClusterError("the NodePool CustomResourceDefinition was not established in 30 s")


def _quantity_cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _quantity_memory_mib(mib: float) -> str:
    return f"{round(mib)}Mi"


def node_object(pool: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The Node that ``pool`` wants under ``name``.

    Raises:
        ConfigError: The pool's size is not a DOKS node size.
    """
    spec = pool.get("spec") or {}
    slug = spec.get("size", "")
    size = catalog.size(slug)
    meta = pool["metadata"]
    ready_after = float(spec.get("readyAfterSeconds") or 0)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                **(spec.get("labels") or {}),
                POOL_LABEL: meta["name"],
                SIZE_LABEL: slug,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
            "annotations": {
                stages.MANAGED_ANNOTATION: "fake",
                stages.READY_AFTER: f"{int(ready_after * 1000)}ms",
                stages.CAPACITY_CPU: str(size.vcpus),
                stages.CAPACITY_MEMORY: _quantity_memory_mib(size.memory_mib),
                stages.ALLOCATABLE_CPU: _quantity_cpu(size.allocatable_cpu),
                stages.ALLOCATABLE_MEMORY: _quantity_memory_mib(size.allocatable_memory_gib * 1024),
                stages.MAX_PODS: str(MAX_PODS),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ],
        },
    }


def _owner_uid(node: Mapping[str, Any]) -> str | None:
    """The uid of the ``NodePool`` that owns ``node`` (``None``: not a pool's node)."""
    for o in node["metadata"].get("ownerReferences") or []:
        if o.get("kind") == KIND and o.get("apiVersion") == API_VERSION:
            return o.get("uid")
    return None


def _ready(node: Mapping[str, Any]) -> bool:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def reconcile(client: ApiClient) -> int:
    """One pass over every pool; returns how many Node objects it created or deleted."""
    pools = (client.request("GET", _pools_path()) or {}).get("items") or []
    pods = client.list("pods")  # before the nodes: a pod's node, if any, existed then
    nodes = client.list("nodes")
    taken = {n["metadata"]["name"] for n in nodes}  # not created again in this pass
    pods_on: dict[str, int] = {}
    changes = 0
    for p in pods:
        node_name = (p.get("spec") or {}).get("nodeName")
        if node_name and node_name not in taken:
            # Bound to a node that is gone (the scheduler may bind to a node it has not
            # yet seen deleted): delete it now, not when the pod garbage collector does.
            meta = p["metadata"]
            client.delete("pods", meta["name"], meta.get("namespace"), grace_seconds=0)
        elif node_name:
            pods_on[node_name] = pods_on.get(node_name, 0) + 1
    # Nodes of a deleted pool go at once (the garbage collector would get to them only
    # after its next discovery of the NodePool type, up to 30 s later), also when a pool
    # of the same name exists again: it is another pool (another uid).
    live = {p["metadata"]["uid"] for p in pools}
    orphans = [n for n in nodes if _owner_uid(n) not in (None, *live)]
    changes += _remove_nodes(client, orphans)
    kept = [n for n in nodes if n not in orphans]
    for pool in pools:
        name, uid = pool["metadata"]["name"], pool["metadata"]["uid"]
        spec = pool.get("spec") or {}
        size, want = spec.get("size", ""), int(spec.get("nodeCount") or 0)
        mine = [n for n in kept if _owner_uid(n) == uid]
        current = [n for n in mine if n["metadata"]["labels"].get(SIZE_LABEL) == size]
        old = [n for n in mine if n["metadata"]["labels"].get(SIZE_LABEL) != size]
        try:
            changes += _scale(client, pool, current, want, size, pods_on, taken)
        except ConfigError as exc:
            log.error("node pool %s: %s", name, exc)
            continue
        # Replaced nodes go once every node of the new size is Ready (or none is wanted).
        fresh = [
            n
            for n in client.list("nodes", selector=f"{POOL_LABEL}={name},{SIZE_LABEL}={size}")
            if _owner_uid(n) == uid
        ]
        if old and sum(map(_ready, fresh)) >= want:
            changes += _remove_nodes(client, old)
        status = {"nodes": len(fresh), "readyNodes": sum(map(_ready, fresh))}
        if (pool.get("status") or {}) != status:
            client.request(
                "PATCH",
                _pools_path(name) + "/status",
                {"status": status},
                content_type="application/merge-patch+json",
            )
    return changes


def _scale(
    client: ApiClient,
    pool: Mapping[str, Any],
    current: list[dict[str, Any]],
    want: int,
    size: str,
    pods_on: Mapping[str, int],
    taken: set[str],
) -> int:
    """Create or remove nodes of ``pool``'s size until it has ``want``.

    ``taken`` holds the node names that exist (or existed at the start of the pass); the
    names created are added to it.
    """
    name = pool["metadata"]["name"]
    if len(current) < want:
        made, i = 0, 1
        while len(current) + made < want:
            node_name = f"{name}-{size}-{i}"
            if node_name not in taken:
                client.create("nodes", node_object(pool, node_name))
                taken.add(node_name)
                made += 1
            i += 1
        return made
    if len(current) > want:
        # Not Ready first, then the fewest pods, newest first.
        order = sorted(
            current,
            key=lambda n: (
                _ready(n),
                pods_on.get(n["metadata"]["name"], 0),
                _neg_time(n["metadata"].get("creationTimestamp", "")),
            ),
        )
        return _remove_nodes(client, order[: len(current) - want])
    return 0


def _neg_time(stamp: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in stamp)


def _remove_nodes(client: ApiClient, nodes: list[dict[str, Any]]) -> int:
    """Cordon every one of ``nodes``, then delete each and the pods bound to it (their
    controllers recreate them elsewhere), as DOKS drains the nodes it removes.

    All are cordoned first, so the pods of the first one deleted are not rescheduled onto
    the next. The pods are listed after their node is gone, so a pod the scheduler bound
    to it since the pass began is deleted too, rather than left Running on a node that
    does not exist until the pod garbage collector notices (tens of seconds, during which
    its Deployment counts it Ready and the pod it should become stays unscheduled). One
    the scheduler binds later still (its cache lags) goes in the next pass.

    Returns:
        How many nodes were removed.
    """
    names = [n["metadata"]["name"] for n in nodes]
    for node in names:
        with contextlib.suppress(ClusterError):  # (gone already: deleted by the GC, say)
            client.patch("nodes", node, {"spec": {"unschedulable": True}})
    for node in names:
        client.delete("nodes", node)
        doc = client.request(
            "GET", ApiClient.path("pods"), query={"fieldSelector": f"spec.nodeName={node}"}
        )
        for p in (doc or {}).get("items") or []:
            meta = p["metadata"]
            client.delete("pods", meta["name"], meta.get("namespace"), grace_seconds=0)
    return len(names)


def run(client: ApiClient, interval: float = 0.5) -> None:
    """Reconcile every ``interval`` seconds until SIGTERM or SIGINT."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    install_crd(client)
    log.info("node-pool controller running")
    while not stopping:
        try:
            reconcile(client)
        except ClusterError as exc:
            log.warning("reconcile failed: %s", exc)
        time.sleep(interval)


def main(argv: list[str] | None = None) -> None:
    """``python -m infragym.cluster.node_pools --server URL --ca F --cert F --key F``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from pathlib import Path

    run(ApiClient(a.server, Path(a.ca), Path(a.cert), Path(a.key)), a.interval)


if __name__ == "__main__":
    main()
