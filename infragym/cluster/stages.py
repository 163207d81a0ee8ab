"""What KWOK does with the simulated nodes and their pods: its *stages*.

KWOK ships no behaviour of its own; each Stage (API ``kwok.x-k8s.io/v1alpha1``) says which
objects it matches (``selector``), after what ``delay``, and what it does (``next``:
a status template, finalizers, delete). The cluster gives KWOK:

- :data:`NODE_INITIALIZE`, written here: a Node that is not Ready becomes Ready after the
  delay in its :data:`READY_AFTER` annotation (a Go duration such as ``45s``; none means
  at once), with the capacity and allocatable given by its ``infragym.dev/*`` annotations
  (so a layer sets a node's size without writing its status, which Pulumi's ``Node``
  resource cannot do);
- the node heartbeat (with a lease) and the pod stages (ready, complete, delete) that the
  KWOK module itself carries, copied beside the binary by
  ``scripts/install-kubernetes.sh`` and read from there at run time.
"""

from __future__ import annotations

from pathlib import Path

from infragym.errors import ClusterError

MANAGED_ANNOTATION = "kwok.x-k8s.io/node"
"""KWOK manages the nodes annotated ``kwok.x-k8s.io/node: fake``."""

READY_AFTER = "infragym.dev/ready-after"
"""Node annotation: how long after KWOK first sees the node it becomes Ready (``30s``)."""

CAPACITY_CPU = "infragym.dev/capacity-cpu"
CAPACITY_MEMORY = "infragym.dev/capacity-memory"
ALLOCATABLE_CPU = "infragym.dev/allocatable-cpu"
ALLOCATABLE_MEMORY = "infragym.dev/allocatable-memory"
MAX_PODS = "infragym.dev/max-pods"

UPSTREAM_STAGES = (
    "node-heartbeat-with-lease.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)
"""The KWOK module's own stages the cluster uses (files in ``<bin dir>/kwok-stages``)."""

NODE_INITIALIZE = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: infragym-node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values:
      - 'True'
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: '.metadata.annotations["{READY_AFTER}"]'
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      {{{{ $a := .metadata.annotations }}}}
      conditions:
      {{{{ range NodeConditions }}}}
      - lastHeartbeatTime: {{{{ $now | Quote }}}}
        lastTransitionTime: {{{{ $now | Quote }}}}
        message: {{{{ .message | Quote }}}}
        reason: {{{{ .reason | Quote }}}}
        status: {{{{ .status | Quote }}}}
        type: {{{{ .type | Quote }}}}
      {{{{ end }}}}
      addresses:
      {{{{ with NodeIP }}}}
      - address: {{{{ . | Quote }}}}
        type: InternalIP
      {{{{ end }}}}
      - address: {{{{ .metadata.name | Quote }}}}
        type: Hostname
      {{{{ with NodePort }}}}
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{{{ . }}}}
      {{{{ end }}}}
      capacity:
        cpu: {{{{ or (index $a "{CAPACITY_CPU}") "1k" | Quote }}}}
        memory: {{{{ or (index $a "{CAPACITY_MEMORY}") "1Ti" | Quote }}}}
        pods: {{{{ or (index $a "{MAX_PODS}") "110" | Quote }}}}
      allocatable:
        cpu: {{{{ or (index $a "{ALLOCATABLE_CPU}") "1k" | Quote }}}}
        memory: {{{{ or (index $a "{ALLOCATABLE_MEMORY}") "1Ti" | Quote }}}}
        pods: {{{{ or (index $a "{MAX_PODS}") "110" | Quote }}}}
      nodeInfo:
        architecture: amd64
        bootID: ""
        containerRuntimeVersion: kwok
        kernelVersion: kwok
        kubeProxyVersion: kwok
        kubeletVersion: kwok
        machineID: ""
        operatingSystem: linux
        osImage: ""
        systemUUID: ""
      phase: Running
"""


def kwok_config(bin_dir: Path) -> str:
    """The ``--config`` document for KWOK: every stage, as one multi-document YAML.

    Raises:
        ClusterError: The KWOK module's stages are not beside the binary (rerun
            ``scripts/install-kubernetes.sh``).
    """
    docs = [NODE_INITIALIZE]
    for name in UPSTREAM_STAGES:
        path = bin_dir / "kwok-stages" / name
        if not path.is_file():
            raise ClusterError(
                f"KWOK's stage {name} is missing from {path.parent}; run "
                "scripts/install-kubernetes.sh to copy the stages from the KWOK module"
            )
        docs.append(path.read_text())
    return "---\n".join(d if d.endswith("\n") else d + "\n" for d in docs)
