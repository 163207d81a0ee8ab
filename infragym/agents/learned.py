"""A trained stable-baselines3 policy as an :class:`~infragym.agents.base.Agent`.

:class:`LearnedAgent` loads a run directory written by ``infragym train``
(:mod:`infragym.agents.training`): the model, the VecNormalize statistics and the config
that says how the policy saw the environment (action mode, frame stack, masking). It
reproduces that view on any env with the same knobs, so ``infragym evaluate --agents
ppo:runs/x`` compares it with the baselines on identical seeds, and translates its actions
when the evaluation env runs in the other action mode (a delta policy's move becomes a
target knob value, which the env's codec encodes).

Heavy imports (torch, stable-baselines3) happen when a run is loaded.
"""

from __future__ import annotations

import json
import pickle
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from infragym.errors import ConfigError

CONFIG_FILE = "config.json"
BEST_MODEL = "best_model.zip"
BEST_STATS = "best_vecnormalize.pkl"
FINAL_MODEL = "final_model.zip"
FINAL_STATS = "final_vecnormalize.pkl"


def update_mask(env: Any, mode: str) -> np.ndarray:
    """The action mask of ``env`` (unwrapped v1): knobs of a layer with an update in flight
    may only keep their value.

    Args:
        env: The unwrapped environment (it has ``knobs``, ``codec`` and a backend queue).
        mode: The action mode the mask is for (``delta`` or ``absolute``).

    Returns:
        A flat boolean array: for each knob, one entry per value of its ``Discrete``.
    """
    in_flight = set(env.backend.queue.in_flight)
    index = env._knob_index
    parts = []
    for knob, i in zip(env.knobs, index, strict=True):
        n = 3 if mode == "delta" else len(knob.values)
        if knob.layer in in_flight:
            part = np.zeros(n, dtype=bool)
            part[1 if mode == "delta" else i] = True
        else:
            part = np.ones(n, dtype=bool)
        parts.append(part)
    return np.concatenate(parts)


def load_config(run_dir: str | Path) -> dict[str, Any]:
    """The config JSON of a run directory.

    Raises:
        ConfigError: No such directory, or no config in it.
    """
    run = Path(run_dir)
    path = run / CONFIG_FILE
    if not run.is_dir():
        raise ConfigError(f"no run directory {str(run)!r} (train one with `infragym train`)")
    if not path.is_file():
        raise ConfigError(f"{str(run)!r} is not an infragym run: no {CONFIG_FILE} in it")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc}") from None


class LearnedAgent:
    """A policy trained by ``infragym train``, acting deterministically.

    Args:
        run_dir: The run directory (``runs/<name>``).
        which: ``best`` (the checkpoint with the best validation return) or ``final``.
        name: The agent's name in tables (default ``ppo:<run name>``).
    """

    def __init__(self, run_dir: str | Path, which: str = "best", name: str | None = None) -> None:
        if which not in ("best", "final"):
            raise ConfigError(f"which must be 'best' or 'final', got {which!r}")
        self.run_dir = Path(run_dir)
        self.summary = load_config(self.run_dir)
        self.config = self.summary.get("config")
        if not isinstance(self.config, dict) or "algo" not in self.config:
            raise ConfigError(f"{str(self.run_dir)!r}: its {CONFIG_FILE} has no training config")
        model_file = self.run_dir / (BEST_MODEL if which == "best" else FINAL_MODEL)
        stats_file = self.run_dir / (BEST_STATS if which == "best" else FINAL_STATS)
        if not model_file.is_file():
            raise ConfigError(f"run {str(self.run_dir)!r} has no {model_file.name}")
        from infragym.agents.training import algo_class

        cls = algo_class(self.config["algo"])
        self.model = cls.load(str(model_file), device="cpu")
        self.obs_rms = None
        self.clip_obs = 10.0
        self.epsilon = 1e-8
        if stats_file.is_file():
            with stats_file.open("rb") as f:
                vecnorm = pickle.load(f)
            if vecnorm.norm_obs:
                self.obs_rms = vecnorm.obs_rms
                self.clip_obs = vecnorm.clip_obs
                self.epsilon = vecnorm.epsilon
        self.name = name or f"{self.config['algo']}:{self.run_dir.name}"
        self.mode = self.config["action_mode"]
        self.frame_stack = int(self.config.get("frame_stack", 1))
        self.masking = self.config["algo"] == "maskable-ppo"
        self.recurrent = self.config["algo"] == "recurrent-ppo"

    # ----------------------------------------------------------------- agent

    def reset(self, env: Any, seed: int | None = None) -> None:
        self.env = env.unwrapped
        self.frames: deque[np.ndarray] = deque(maxlen=self.frame_stack)
        self.state = None
        self.episode_start = np.ones((1,), dtype=bool)
        if self.mode not in ("delta", "absolute"):
            raise ConfigError(f"run {str(self.run_dir)!r} has an unknown action mode")
        if self.mode != self.env.codec.mode:
            from infragym.knobs import ActionCodec

            self.own_codec = ActionCodec(self.env.knobs, self.mode)
        else:
            self.own_codec = None

    def _features(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if self.frame_stack > 1:
            if not self.frames:  # VecFrameStack starts from zeros
                self.frames.extend([np.zeros_like(obs)] * self.frame_stack)
            self.frames.append(obs)
            obs = np.concatenate(list(self.frames))
        if self.obs_rms is not None:
            obs = np.clip(
                (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon),
                -self.clip_obs,
                self.clip_obs,
            ).astype(np.float32)
        return obs

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        features = self._features(observation)
        if self.recurrent:
            action, self.state = self.model.predict(
                features,
                state=self.state,
                episode_start=self.episode_start,
                deterministic=True,
            )
            self.episode_start = np.zeros((1,), dtype=bool)
        elif self.masking:
            mask = update_mask(self.env, self.mode)
            action, _ = self.model.predict(features, deterministic=True, action_masks=mask)
        else:
            action, _ = self.model.predict(features, deterministic=True)
        action = np.asarray(action, dtype=np.int64).reshape(-1)
        if self.own_codec is None:
            return action
        # Trained in the other mode: the knob values the policy asks for, in the env's mode.
        current = info["knobs"]
        index = [k.index_of(current[k.name]) for k in self.env.knobs]
        new = self.own_codec.decode_indices(action, index)
        wanted = {k.name: k.values[j] for k, j in zip(self.env.knobs, new, strict=True)}
        return self.env.codec.encode(wanted, current)
