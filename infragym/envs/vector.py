"""A vector env of SimpleK8sWebApp envs stepped in one call into the compiled core.

``gym.make_vec("SimpleK8sWebApp-v1", num_envs=N, vectorization_mode="vector_entry_point")``
builds :class:`SimpleK8sWebAppVectorEnv`. Its :meth:`~SimpleK8sWebAppVectorEnv.step`
sends the actions of every env the env kernel runs (the sim backend on the compiled
core, the default reward: :mod:`infragym.envs.kernel`) to the core in one call, which
steps them all and writes their observations, rewards, truncations and info data into
arrays; the infos are batched from those arrays. Envs the kernel does not run take their
own Python step (their twins advanced in one call too: :func:`infragym.twin.twin.advance_all`).
Resets (and ``NEXT_STEP`` autoresets) run per env in Python, which then hands the env to
the kernel again. The N envs are the N envs ``gym.make`` would give, with the same seeds:
the same episodes bit for bit (``tests/envs/test_vector.py``).

Conventions: Gymnasium 1.x's ``NEXT_STEP`` autoreset (an env that ended is reset by the
next ``step``, which returns its reset observation with reward 0 and ignores its action),
``reset(seed=s)`` seeds env ``i`` with ``s + i`` (a list gives one seed per env), and the
infos in the form :meth:`gymnasium.vector.VectorEnv._add_info` gives them (a ``_key``
mask beside each key), as :class:`gymnasium.vector.SyncVectorEnv` does. One difference:
in a step where the kernel stepped every env, the masks of equal content are one shared
read-only array (built once, not one copy per key); a step with resets or Python steps
gives each key a writable mask of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, create_empty_array

from infragym.backends.sim import SimBackend
from infragym.envs.kernel import KernelBatch
from infragym.errors import ConfigError
from infragym.twin.twin import advance_all


class SimpleK8sWebAppVectorEnv(VectorEnv):
    """``num_envs`` SimpleK8sWebApp envs of one id, stepped together.

    Args:
        num_envs: How many envs.
        env_id: Which environment (``SimpleK8sWebApp-v0`` or ``-v1``).
        **kwargs: The env's arguments (as for ``gym.make``), the same for every env.

    Raises:
        ConfigError: ``num_envs`` is not a positive integer, or an unknown id.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, env_id: str = "SimpleK8sWebApp-v1", **kwargs: Any) -> None:
        from infragym.envs import ENV_IDS

        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ConfigError(f"num_envs must be a positive integer, got {num_envs!r}")
        if env_id not in ENV_IDS:
            raise ConfigError(f"unknown env id {env_id!r}; valid: {sorted(ENV_IDS)}")
        make_env = load_env_creator(ENV_IDS[env_id]["entry_point"])
        self.envs = [make_env(**kwargs) for _ in range(num_envs)]
        self.num_envs = num_envs
        first = self.envs[0]
        self.render_mode = first.render_mode
        self.metadata = {**first.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._observations = create_empty_array(self.single_observation_space, num_envs)
        self._rewards = np.zeros(num_envs, dtype=np.float64)
        self._terminations = np.zeros(num_envs, dtype=np.bool_)
        self._truncations = np.zeros(num_envs, dtype=np.bool_)
        self._autoreset = np.zeros(num_envs, dtype=np.bool_)
        self._kernel = KernelBatch([e.unwrapped for e in self.envs])

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env: env ``i`` with ``seed + i`` (or ``seed[i]``) and ``options``."""
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ConfigError(
                    f"a list of seeds needs one per env ({self.num_envs}), got {len(seeds)}"
                )
        infos: dict[str, Any] = {}
        for i, (env, one) in enumerate(zip(self.envs, seeds, strict=True)):
            self._observations[i], info = env.reset(seed=one, options=options)
            self._kernel.attach(i)
            infos = self._add_info(infos, info, i)
        self._terminations[:] = self._truncations[:] = self._autoreset[:] = False
        self._rewards[:] = 0.0
        return self._observations.copy(), infos

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env; the envs that ended at the last step are reset instead.

        The envs the kernel runs step in one call into the core
        (:class:`~infragym.envs.kernel.KernelBatch`); the others take their own Python
        step, their twins advanced in one call too.
        """
        envs = self.envs
        kernel = self._kernel
        actions = np.asarray(actions)
        stepping = ~self._autoreset
        for i in np.flatnonzero(stepping & ~kernel.attached):  # after a copy, say
            kernel.attach(int(i))
        batched = stepping & kernel.attached
        everyone = bool(batched.all())  # the usual step: no resets, no Python steps
        # Every env stepped by the kernel: nothing adds to the infos after it, so their
        # ``_key`` masks can be one read-only array.
        infos = kernel.step(actions, stepping, shared=everyone)
        if everyone:
            np.copyto(self._observations, kernel.obs)
            np.copyto(self._rewards, kernel.rewards)
            np.copyto(self._truncations, kernel.truncated.view(np.bool_))
            self._terminations[:] = False
        else:
            self._observations[batched] = kernel.obs[batched]
            self._rewards[batched] = kernel.rewards[batched]
            self._truncations[batched] = kernel.truncated[batched].view(np.bool_)
            self._terminations[batched] = False
        others: list[tuple[int, Any]] = []  # (env, layers updated) of the Python steps
        reset_infos: dict[int, dict[str, Any]] = {}
        for i in [] if everyone else np.flatnonzero(~batched).tolist():
            if self._autoreset[i]:
                self._observations[i], reset_infos[i] = envs[i].reset()
                kernel.attach(i)
                self._rewards[i] = 0.0
                self._terminations[i] = self._truncations[i] = False
            else:
                others.append((i, envs[i]._act(actions[i])))
        self._advance([envs[i] for i, _ in others])
        for i, layers in others:
            obs, reward, terminated, truncated, info = envs[i]._after_advance(layers)
            self._observations[i], self._rewards[i] = obs, reward
            self._terminations[i], self._truncations[i] = terminated, truncated
            reset_infos[i] = info
        for i in sorted(reset_infos):
            infos = self._add_info(infos, reset_infos[i], i)
        self._autoreset = self._terminations | self._truncations
        return (
            self._observations.copy(),
            self._rewards.copy(),
            self._terminations.copy(),
            self._truncations.copy(),
            infos,
        )

    def _advance(self, envs: list[Any]) -> None:
        """Advance the envs' backends by a step: the twins in one call into the core."""
        if not envs:
            return
        seconds = float(envs[0].step_seconds)
        if all(type(e.backend) is SimBackend for e in envs):
            advance_all([e.backend._twin() for e in envs], seconds)
        else:
            for env in envs:
                env.backend.advance(env.step_seconds)

    def close_extras(self, **kwargs: Any) -> None:
        """Close every env (and its backend)."""
        for env in self.envs:
            env.close()


def vector_v0(num_envs: int, **kwargs: Any) -> SimpleK8sWebAppVectorEnv:
    """SimpleK8sWebApp-v0's vector entry point."""
    return SimpleK8sWebAppVectorEnv(num_envs, env_id="SimpleK8sWebApp-v0", **kwargs)


def vector_v1(num_envs: int, **kwargs: Any) -> SimpleK8sWebAppVectorEnv:
    """SimpleK8sWebApp-v1's vector entry point."""
    return SimpleK8sWebAppVectorEnv(num_envs, env_id="SimpleK8sWebApp-v1", **kwargs)
