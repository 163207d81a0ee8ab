"""Every layer, registered on import (one module per layer)."""

from stacks.layers import (  # noqa: F401  (importing registers)
    do_core,
    do_managed_k8s,
    k8s_core,
    k8s_heater,
    k8s_prometheus,
    k8s_postgresql,
    k8s_siege_engine,
)
