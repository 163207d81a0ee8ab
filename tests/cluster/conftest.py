"""The local control plane's fixtures (see :mod:`tests.cluster.fixtures`)."""

from tests.cluster.fixtures import k8s, k8s_bin_dir, local_cluster  # noqa: F401
