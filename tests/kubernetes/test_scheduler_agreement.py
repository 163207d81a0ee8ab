"""The twin's scheduling agrees with the real kube-scheduler on random configurations.

200 configurations (:func:`infragym.cluster.scheduler_check.random_configs`, seed 0): a
workers pool of one DOKS size (1-5 nodes), sometimes a second pool of another size,
pods of another workload already on the workers, then the ``app`` Deployment (1-24
replicas, CPU 100m-1500m, memory 64Mi-2Gi), pinned to the workers or free to use both
pools. Each is deployed to the local cluster and built as a twin graph; the test
compares the Pending ``app`` pods and the ``app`` pods per node (per pool, sorted, since
nodes of a pool are interchangeable and differently named).

Thresholds, and why:

- **Pending count: every configuration.** Whether a pod fits is arithmetic on the same
  figures on both sides (requests against allocatable from the same catalogue, CPU in
  millicores and memory in MiB, exact in both), so any difference is a twin bug.
- **Pods per node: every configuration on one pool of identical nodes, and at least
  half of the others.** The twin places a pod on the node with the most free CPU share
  (ties to the first node); kube-scheduler scores nodes by the mean of free CPU and
  memory shares (NodeResourcesFit, LeastAllocated), by how balanced CPU and memory use
  would be (NodeResourcesBalancedAllocation) and by spreading a ReplicaSet's pods
  (default PodTopologySpread), and breaks ties at random. On one pool of identical nodes
  both fill the nodes evenly, so they must agree there. Only where the app may use two
  pools of different shapes (16 of the 200 configurations) can the scores rank nodes
  differently: ``docs/twin.md`` documents it as a known difference. Measured: 2 of the
  16 differ (by one pod between the pools); allowing half of them is the margin for
  kube-scheduler's random tie-breaks.
"""

from __future__ import annotations

import pytest

from infragym.cluster.api import ApiClient
from infragym.cluster.scheduler_check import compare, describe, random_configs

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(1200)]

CONFIGS = 200
MAY_DIFFER_THRESHOLD = 0.5
"""Share of the two-pool configurations whose pods per node may differ (see above)."""


def test_twin_agrees_with_kube_scheduler(k8s: ApiClient) -> None:
    configs = random_configs(CONFIGS, seed=0)
    rows = compare(k8s, configs, batch=40)
    assert len(rows) == CONFIGS
    pending = [(c, t, r) for c, t, r in rows if t.pending != r.pending]
    placement = [
        (c, t, r) for c, t, r in rows if t.pending == r.pending and t.per_pool != r.per_pool
    ]

    def show(bad: list) -> str:
        return "\n".join(
            f"  #{c.index} {describe(c)}: twin {t.pending} pending {t.per_pool}, "
            f"kubernetes {r.pending} pending {r.per_pool}"
            for c, t, r in bad[:20]
        )

    assert not pending, f"Pending counts differ in {len(pending)} configurations:\n{show(pending)}"
    # Pinned to one pool, or with only one pool: both fill identical nodes evenly.
    may_differ = [c for c in configs if not c.pinned and c.extra_size]
    one_pool = [x for x in placement if x[0] not in may_differ]
    assert not one_pool, f"placement differs on one pool of identical nodes:\n{show(one_pool)}"
    assert len(placement) <= MAY_DIFFER_THRESHOLD * len(may_differ), (
        f"pods per node differ in {len(placement)} of the {len(may_differ)} two-pool "
        f"configurations:\n{show(placement)}"
    )
