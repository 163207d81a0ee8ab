"""The twin's scheduling against the real kube-scheduler: the full agreement table.

Starts a local control plane in a temporary directory (binaries from
``scripts/install-kubernetes.sh``), deploys ``--configs`` random configurations
(:mod:`infragym.cluster.scheduler_check`) to it and to the twin, and prints one row per
configuration: the Pending ``app`` pods and the ``app`` pods per node (per pool, sorted)
on each side, and whether they agree. Then the agreement rates and the time taken.

    python benchmarks/bench_scheduler.py --configs 200 --seed 0
"""

from __future__ import annotations

import argparse
import tempfile
import time

from infragym.cluster import LocalCluster
from infragym.cluster.scheduler_check import Placement, compare, describe, random_configs


def _fmt(p: Placement) -> str:
    pools = " ".join(f"{k}:{v}" for k, v in p.per_pool.items())
    return f"pending {p.pending:>2} {pools}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=20)
    a = parser.parse_args()
    configs = random_configs(a.configs, a.seed)
    with tempfile.TemporaryDirectory(prefix="infragym-bench-sched-") as d:
        cluster = LocalCluster(d)
        t0 = time.monotonic()
        cluster.up(timeout=120)
        started = time.monotonic() - t0
        try:
            t1 = time.monotonic()
            rows = compare(cluster.client(timeout=30), configs, batch=a.batch)
            took = time.monotonic() - t1
        finally:
            cluster.down()
    pending_ok = placement_ok = 0
    print(f"{'#':>3}  {'agree':<9} {'configuration':<72} twin | kubernetes")
    for c, twin, real in rows:
        p_ok = twin.pending == real.pending
        n_ok = p_ok and twin.per_pool == real.per_pool
        pending_ok += p_ok
        placement_ok += n_ok
        flag = "yes" if n_ok else ("pending" if p_ok else "NO")
        print(f"{c.index:>3}  {flag:<9} {describe(c):<72} {_fmt(twin)} | {_fmt(real)}")
    n = len(rows)
    print()
    print(f"configurations:                 {n}")
    print(f"same Pending count:             {pending_ok}/{n} ({100 * pending_ok / n:.1f} %)")
    print(f"same Pending and pods per node: {placement_ok}/{n} ({100 * placement_ok / n:.1f} %)")
    print(f"cluster start {started:.1f} s; {n} configurations in {took:.1f} s")


if __name__ == "__main__":
    main()
