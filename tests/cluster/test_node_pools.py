"""The node-pool controller's reconcile pass against an in-memory API server (no cluster).

These pin down two races the local cluster showed under load (see
:mod:`infragym.cluster.node_pools`): a pool deleted and created again under its name
between two passes, which must not adopt the old pool's nodes (another size, another
readiness), and a pod bound to a node after the pass listed the pods, which must go with
the node (or, bound later still, in the next pass) rather than stay Running on a node
that no longer exists.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from infragym import catalog
from infragym.cluster import stages
from infragym.cluster.api import ApiClient
from infragym.cluster.node_pools import POOL_LABEL, SIZE_LABEL, _pools_path, reconcile

_uids = itertools.count(1)


class FakeApi:
    """Enough of the API server for :func:`reconcile`: pools, nodes, pods."""

    def __init__(self) -> None:
        self.pools: dict[str, dict] = {}
        self.nodes: dict[str, dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self.before_node_delete: Any = None

    # -- what the tests do
    def put_pool(self, name: str, size: str, count: int) -> str:
        uid = f"uid-{next(_uids)}"
        self.pools[name] = {
            "metadata": {"name": name, "uid": uid},
            "spec": {"size": size, "nodeCount": count, "readyAfterSeconds": 0},
        }
        return uid

    def make_ready(self) -> None:
        """What KWOK does: every node Ready with the allocatable of its annotations."""
        for n in self.nodes.values():
            a = n["metadata"]["annotations"]
            n["status"] = {
                "conditions": [{"type": "Ready", "status": "True"}],
                "allocatable": {"cpu": a[stages.ALLOCATABLE_CPU]},
            }

    def bind(self, pod: str, node: str) -> None:
        self.pods[("ns", pod)] = {
            "metadata": {"name": pod, "namespace": "ns"},
            "spec": {"nodeName": node},
        }

    # -- ApiClient's interface
    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        if method == "GET" and path == _pools_path():
            return {"items": [copy.deepcopy(p) for p in self.pools.values()]}
        if method == "GET" and path == ApiClient.path("pods"):
            node = kw["query"]["fieldSelector"].removeprefix("spec.nodeName=")
            return {"items": [p for p in self.pods.values() if p["spec"]["nodeName"] == node]}
        if method == "PATCH" and path.endswith("/status"):
            name = path.split("/")[-2]
            self.pools[name]["status"] = body["status"]
            return None
        raise AssertionError(f"unexpected request {method} {path}")

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None) -> list:
        if kind == "pods":
            return [copy.deepcopy(p) for p in self.pods.values()]
        assert kind == "nodes"
        want = dict(s.split("=") for s in selector.split(",")) if selector else {}
        return [
            copy.deepcopy(n)
            for n in self.nodes.values()
            if all(n["metadata"]["labels"].get(k) == v for k, v in want.items())
        ]

    def create(self, kind: str, obj: dict, namespace: str | None = None) -> dict:
        assert kind == "nodes"
        name = obj["metadata"]["name"]
        assert name not in self.nodes, f"node {name} exists (HTTP 409)"
        self.nodes[name] = copy.deepcopy(obj)
        return obj

    def patch(self, kind: str, name: str, patch: dict, namespace: str | None = None) -> dict:
        assert kind == "nodes" and name in self.nodes, (kind, name)
        self.nodes[name].setdefault("spec", {}).update(patch["spec"])
        return self.nodes[name]

    def delete(self, kind: str, name: str, namespace: str | None = None, **kw: Any) -> None:
        if kind == "nodes":
            if self.before_node_delete:
                self.before_node_delete(name)
            self.nodes.pop(name, None)
        else:
            self.pods.pop((namespace, name), None)


def _sizes(api: FakeApi, pool: str) -> list[str]:
    return sorted(
        n["metadata"]["labels"][SIZE_LABEL]
        for n in api.list("nodes", selector=f"{POOL_LABEL}={pool}")
    )


def test_a_pool_made_again_under_its_name_does_not_adopt_the_old_nodes() -> None:
    api = FakeApi()
    api.put_pool("dev-workers", "s-4vcpu-8gb", 2)
    reconcile(api)
    api.make_ready()
    assert _sizes(api, "dev-workers") == ["s-4vcpu-8gb"] * 2
    # Destroyed and deployed again, with another size, before the controller's next pass.
    del api.pools["dev-workers"]
    uid = api.put_pool("dev-workers", "s-8vcpu-16gb", 2)
    reconcile(api)
    nodes = api.list("nodes", selector=f"{POOL_LABEL}=dev-workers")
    assert [n["metadata"]["labels"][SIZE_LABEL] for n in nodes] == ["s-8vcpu-16gb"] * 2
    assert all(n["metadata"]["ownerReferences"][0]["uid"] == uid for n in nodes)
    assert api.pools["dev-workers"]["status"] == {"nodes": 2, "readyNodes": 0}
    api.make_ready()
    want = f"{round(catalog.size('s-8vcpu-16gb').allocatable_cpu * 1000)}m"
    assert all(n["status"]["allocatable"]["cpu"] == want for n in api.nodes.values())


def test_a_pool_made_again_with_its_size_gets_nodes_of_its_own() -> None:
    api = FakeApi()
    api.put_pool("dev-workers", "s-2vcpu-4gb", 2)
    reconcile(api)
    api.make_ready()
    old = set(api.nodes)
    del api.pools["dev-workers"]
    uid = api.put_pool("dev-workers", "s-2vcpu-4gb", 2)
    reconcile(api)  # the old ones go; the names they had are not reused in this pass
    assert len(api.nodes) == 2 and not old & set(api.nodes)
    assert all(n["metadata"]["ownerReferences"][0]["uid"] == uid for n in api.nodes.values())
    assert all("status" not in n for n in api.nodes.values())  # booting, not Ready


def test_a_pod_bound_during_the_pass_goes_with_its_node() -> None:
    api = FakeApi()
    api.put_pool("dev-workers", "s-2vcpu-4gb", 2)
    reconcile(api)
    api.make_ready()
    api.pools["dev-workers"]["spec"]["nodeCount"] = 1
    # The scheduler binds a pod to the node the pass removes, after the pass listed the
    # pods and before the node is gone.
    api.before_node_delete = lambda node: api.bind("late", node)
    reconcile(api)
    assert len(api.nodes) == 1
    assert not api.pods, "a pod is left bound to a node that no longer exists"


def test_a_pod_bound_to_a_node_that_is_gone_is_deleted_in_the_next_pass() -> None:
    # The scheduler's cache can lag behind a deletion and bind a pod to the node after the
    # pass has deleted it and its pods.
    api = FakeApi()
    api.put_pool("dev-workers", "s-2vcpu-4gb", 1)
    reconcile(api)
    api.make_ready()
    (node,) = api.nodes
    api.bind("kept", node)
    api.bind("ghost", "dev-workers-s-2vcpu-4gb-9")
    reconcile(api)
    assert list(api.pods) == [("ns", "kept")]


def test_replaced_nodes_are_all_cordoned_before_the_first_goes() -> None:
    # Else the pods of the first one deleted are rescheduled onto the next one to go.
    api = FakeApi()
    api.put_pool("dev-workers", "s-2vcpu-4gb", 2)
    reconcile(api)
    api.make_ready()
    old = set(api.nodes)
    api.pools["dev-workers"]["spec"]["size"] = "s-4vcpu-8gb"
    reconcile(api)  # the new nodes boot
    api.make_ready()
    seen: list[set[str]] = []

    def check(node: str) -> None:
        cordoned = {n for n, v in api.nodes.items() if v.get("spec", {}).get("unschedulable")}
        seen.append(cordoned)

    api.before_node_delete = check
    reconcile(api)  # the new ones are Ready: the old ones go
    assert not old & set(api.nodes)
    assert seen and seen[0] == old
