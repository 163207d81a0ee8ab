"""The infragym error hierarchy.

Every error infragym raises on purpose derives from :class:`InfraGymError`, so callers
can catch one type. Errors from the Pulumi engine or from Prometheus are mapped onto
these classes with the original message kept, never swallowed.
"""

from __future__ import annotations


class InfraGymError(Exception):
    """Base class for every error infragym raises on purpose."""


class ConfigError(InfraGymError, ValueError):
    """A setting, layer or environment argument is invalid (raised before any cloud call)."""


class ActionError(InfraGymError, ValueError):
    """An action is outside the environment's action space."""


class CredentialsError(InfraGymError):
    """A credential (for example ``DIGITALOCEAN_TOKEN``) is missing or rejected."""


class BackendError(InfraGymError):
    """A backend failed to apply or observe infrastructure."""


class EngineError(BackendError):
    """The Pulumi engine reported an error; the engine's message is kept."""


class StackLockedError(EngineError):
    """Another update holds the stack's lock."""


class StateBackendError(BackendError):
    """The Pulumi state backend (file, S3 or Spaces) is unreachable or refused access."""


class ClusterError(BackendError):
    """The local Kubernetes control plane (``infragym cluster``) is missing, stopped or failed."""


class MetricsError(InfraGymError):
    """A metrics source failed."""


class PrometheusUnavailableError(MetricsError):
    """Prometheus could not be reached after retries."""


class QueryError(MetricsError):
    """Prometheus rejected a PromQL query."""
