"""infragym: Gymnasium environments for operating cloud infrastructure.

Importing this package registers the environments (``SimpleK8sWebApp-v0``, ...). It
stays light: Pulumi, boto3 and torch are imported only where they are used.
"""

from infragym.envs import register_envs
from infragym.errors import InfraGymError

__all__ = ["InfraGymError", "register_envs", "register_scenario"]
__version__ = "0.1.0"

register_envs()


def __getattr__(name: str):
    # ``register_scenario`` pulls in pydantic and the workload models (about 0.25 s), so
    # it is imported on first use rather than with the package.
    if name == "register_scenario":
        from infragym.envs.scenarios import register_scenario

        return register_scenario
    raise AttributeError(f"module 'infragym' has no attribute {name!r}")
