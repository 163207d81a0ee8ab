"""Every layer, registered on import (one module per layer)."""

from stacks.layers import (  # noqa: F401  (importing registers)
    do_core,
    do_managed_k8s,
    k8s_core,
    k8s_heater,
    k8s_postgresql,
    k8s_prometheus,
    k8s_siege_engine,
    local_k8s,
)

# isort: split
# The droplet-based DigitalOcean layers (self-managed Kubernetes, Nomad, Swarm, support).
from stacks.layers import (  # noqa: F401  (importing registers)
    do_k8s_control_plane,
    do_k8s_minions,
    do_nomad,
    do_support,
    do_swarm_manager,
    do_swarm_worker,
)
