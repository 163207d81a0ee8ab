"""infragym: Gymnasium environments for operating cloud infrastructure.

Importing this package registers the environments (``SimpleK8sWebApp-v0``, ...). It
stays light: Pulumi, boto3 and torch are imported only where they are used.
"""

from infragym.envs import register_envs
from infragym.errors import InfraGymError

__all__ = ["InfraGymError", "register_envs"]
__version__ = "0.1.0"

register_envs()
