"""A local real Kubernetes control plane with simulated (KWOK) nodes.

See :mod:`infragym.cluster.control_plane` for what runs and how, and
:mod:`infragym.cluster.stages` for what KWOK does with the nodes. The binaries come from
``scripts/install-kubernetes.sh``.
"""

from infragym.cluster.control_plane import (
    COMPONENTS,
    DEFAULT_DIR,
    ClusterStatus,
    LocalCluster,
    find_bin_dir,
    node_ready,
)

__all__ = [
    "COMPONENTS",
    "DEFAULT_DIR",
    "ClusterStatus",
    "LocalCluster",
    "find_bin_dir",
    "node_ready",
]
