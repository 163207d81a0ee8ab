"""infragym's Gymnasium environments, one module per environment id."""

from __future__ import annotations

ENV_IDS: dict[str, dict] = {
    "SimpleK8sWebApp-v0": {
        "entry_point": "infragym.envs.simple_k8s_web_app:SimpleK8sWebAppEnv",
        "max_episode_steps": 120,
        "vector_entry_point": "infragym.envs.vector:vector_v0",
    },
    "SimpleK8sWebApp-v1": {
        "entry_point": "infragym.envs.simple_k8s_web_app_v1:SimpleK8sWebAppV1Env",
        "max_episode_steps": 120,
        "vector_entry_point": "infragym.envs.vector:vector_v1",
    },
}
"""Environment id → registration keyword arguments."""


def register_envs() -> None:
    """Register every infragym environment with Gymnasium (idempotent).

    Called on ``import infragym``. Gymnasium 1.x has no plugin entry points; without the
    import, ``gym.make("infragym:SimpleK8sWebApp-v0")`` imports the package first.
    """
    from gymnasium.envs.registration import register, registry

    for env_id, kwargs in ENV_IDS.items():
        if env_id not in registry:
            register(id=env_id, **kwargs)
