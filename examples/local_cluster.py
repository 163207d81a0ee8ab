"""Run SimpleK8sWebApp-v1 on a local Kubernetes control plane in place of DOKS.

``cluster="local-k8s"`` swaps the DOKS layers for the ``local-k8s`` layer: a control
plane on 127.0.0.1 (``infragym cluster up``) whose worker nodes KWOK simulates, sized
from the DOKS catalogue. The Pulumi engine, the Kubernetes provider, the controllers and
the scheduler are real; no container runs, so there are no request metrics (rates,
latency, errors, CPU use: NaN, listed in ``info["missing"]``), while replicas, nodes,
Pending pods and cost are measured. No cloud account is needed.

    bash scripts/install-kubernetes.sh
    export PATH="$(bash scripts/install-pulumi-cli.sh | tail -n 1):$PATH"
    python examples/local_cluster.py
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import gymnasium as gym
import numpy as np

import infragym  # noqa: F401  (registers the envs)
from infragym.cluster import LocalCluster

SHOWN = (
    "replicas_desired",
    "replicas_ready",
    "nodes_ready",
    "nodes_booting",
    "pods_pending",
    "cost_hourly",
)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="infragym-example-") as d:
        cluster = LocalCluster(f"{d}/cluster")
        print("starting the control plane...")
        cluster.up()
        env = gym.make(
            "SimpleK8sWebApp-v1",
            backend="pulumi",
            cluster="local-k8s",
            action_mode="absolute",
            # ready_after_s: a node's boot time (240 s is DigitalOcean's, the twin's).
            settings={"local-k8s": {"cluster_dir": f"{d}/cluster", "ready_after_s": 3}},
            backend_options={
                "deployment": "example",
                "state_url": f"file://{d}/state",
                "step_wait": False,  # no 30 s of wall time per step
            },
        )
        try:
            _, info = env.reset(seed=0, options={"scenario": "constant"})
            show("reset", info)
            for knobs in (
                {"heater_replicas": 8},
                {"node_count": 3},
                {"node_size": "s-8vcpu-16gb", "heater_cpu_limit": "750m"},
            ):
                _, _, _, _, info = env.step(action(env, info, knobs))
                env.unwrapped.backend.wait(600)  # the layer updates, run in the background
                time.sleep(5)  # the nodes boot (ready_after_s) and the scheduler places pods
                _, _, _, _, info = env.step(action(env, info, {}))  # observe, change nothing
                show(", ".join(f"{k}={v}" for k, v in knobs.items()), info)
            print("not measured on the local cluster:", ", ".join(info["missing"]))
        finally:
            env.close()  # destroys the stacks: nothing is left in the cluster
            cluster.down()


def action(env: gym.Env, info: dict[str, Any], knobs: dict[str, Any]) -> np.ndarray:
    """The absolute action that sets ``knobs`` and keeps the others."""
    wanted = {**info["knobs"], **knobs}
    return np.array([k.index_of(wanted[k.name]) for k in env.unwrapped.knobs])


def show(title: str, info: dict[str, Any]) -> None:
    metrics = ", ".join(f"{n} {info['metrics'][n]:g}" for n in SHOWN)
    print(f"{title}: {metrics}")


if __name__ == "__main__":
    main()
