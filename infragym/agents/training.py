"""Train stable-baselines3 agents on infragym environments (``infragym train``).

:func:`train` builds vectorised training envs on the ``train`` split, wraps them in
VecNormalize (and, if asked, VecFrameStack), learns with PPO (default), A2C, MaskablePPO
or RecurrentPPO, evaluates the deterministic policy on the ``validation`` split every
``eval_every`` steps and keeps the best checkpoint. A run directory ``runs/<name>/`` gets:

- ``best_model.zip`` and ``best_vecnormalize.pkl``: the checkpoint with the best
  validation return, and the normalisation statistics it was evaluated with;
- ``final_model.zip`` and ``final_vecnormalize.pkl``: the end of training;
- ``config.json``: everything needed to rebuild the run (:class:`TrainConfig`), the
  package versions, the wall time and the best validation return;
- ``curve.csv`` and ``curve.png``: the learning curve.

Algorithms: the v1 action space is ``MultiDiscrete``. PPO, A2C and sb3-contrib's
MaskablePPO and RecurrentPPO support it; DQN (and QR-DQN) need a single ``Discrete``
space, and SAC, TD3 and DDPG a ``Box``, so they are refused with that reason.

Seeds: the model, the training envs (``seed + i`` for env ``i``) and the validation
episodes (seeds ``VALIDATION_SEED ...``, the same for every run) are seeded, so a run
with the same config, on the same machine and package versions, repeats. Torch runs on
one thread unless ``torch_threads`` says otherwise: with its default (all cores) a small
MLP spends its time synchronising threads (80-90 steps/s against about 2,300 on 2
busy cores).

Needs the ``rl`` extra (stable-baselines3, sb3-contrib); torch is imported here, lazily.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infragym.agents.learned import (
    BEST_MODEL,
    BEST_STATS,
    CONFIG_FILE,
    FINAL_MODEL,
    FINAL_STATS,
    LearnedAgent,
    update_mask,
)
from infragym.errors import ConfigError

ALGOS = ("ppo", "a2c", "maskable-ppo", "recurrent-ppo")
"""Algorithms that fit a ``MultiDiscrete`` action space."""
UNFIT_ALGOS = {
    "dqn": "DQN needs a single Discrete action space; v1's is MultiDiscrete",
    "qrdqn": "QR-DQN needs a single Discrete action space; v1's is MultiDiscrete",
    "sac": "SAC needs a continuous (Box) action space; v1's is MultiDiscrete",
    "td3": "TD3 needs a continuous (Box) action space; v1's is MultiDiscrete",
    "ddpg": "DDPG needs a continuous (Box) action space; v1's is MultiDiscrete",
    "tqc": "TQC needs a continuous (Box) action space; v1's is MultiDiscrete",
}
VALIDATION_SEED = 50_000
"""Seed of the first validation episode (every run uses the same validation episodes)."""
RL_EXTRA_HINT = (
    "needs the rl extra: pip install -e '.[rl]' (stable-baselines3, sb3-contrib; "
    "see the README for torch's CPU wheel)"
)


@dataclass
class TrainConfig:
    """What ``infragym train`` runs; saved as ``config.json`` in the run directory.

    Attributes:
        env_id: The environment id.
        algo: One of :data:`ALGOS`.
        total_steps: Environment steps to train for (over all envs).
        n_envs: Parallel training envs.
        seed: Seed of the model and the training envs.
        action_mode: ``delta`` or ``absolute``.
        cost_weight: The env's ``cost_weight`` (v1).
        frame_stack: Observations stacked (1 = none).
        vec_env: ``dummy`` (one process) or ``subproc`` (one process per env).
        eval_every: Environment steps between validation evaluations (0 = only at the end).
        eval_episodes: Validation episodes per evaluation.
        torch_threads: Torch CPU threads.
        name: Run name (the directory under ``out_dir``).
        out_dir: Where run directories go.
        hyperparams: Keyword arguments of the algorithm, over :func:`default_hyperparams`.
        env_kwargs: More keyword arguments of ``gym.make``.
    """

    env_id: str = "SimpleK8sWebApp-v1"
    algo: str = "ppo"
    total_steps: int = 300_000
    n_envs: int = 4
    seed: int = 0
    action_mode: str = "delta"
    cost_weight: float = 1.0
    frame_stack: int = 1
    vec_env: str = "dummy"
    eval_every: int = 25_000
    eval_episodes: int = 12
    torch_threads: int = 1
    name: str = ""
    out_dir: str = "runs"
    hyperparams: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def check(self) -> TrainConfig:
        """This config, checked; fills ``name`` if empty.

        Raises:
            ConfigError: A value out of range or an algorithm that does not fit.
        """
        algo = self.algo.lower()
        if algo in UNFIT_ALGOS:
            raise ConfigError(f"algorithm {self.algo!r} does not fit: {UNFIT_ALGOS[algo]}")
        if algo not in ALGOS:
            from infragym.catalog import unknown_choice

            raise ConfigError(unknown_choice("algorithm", self.algo, ALGOS))
        self.algo = algo
        for attr, low in (("total_steps", 1), ("n_envs", 1), ("frame_stack", 1),
                          ("eval_episodes", 1), ("torch_threads", 1), ("eval_every", 0),
                          ("seed", 0)):  # fmt: skip
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{attr} must be an integer >= {low}, got {value!r}")
        if self.action_mode not in ("delta", "absolute"):
            raise ConfigError(
                f"action_mode must be 'delta' or 'absolute', got {self.action_mode!r}"
            )
        if self.vec_env not in ("dummy", "subproc"):
            raise ConfigError(f"vec_env must be 'dummy' or 'subproc', got {self.vec_env!r}")
        if not math.isfinite(self.cost_weight):
            raise ConfigError(f"cost_weight must be finite, got {self.cost_weight!r}")
        if algo == "recurrent-ppo" and self.frame_stack > 1:
            raise ConfigError("recurrent-ppo has its own memory: use frame_stack 1 with it")
        if not self.name:
            self.name = f"{self.algo}-{self.env_id.split('-')[-1]}-s{self.seed}"
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def default_hyperparams(config: TrainConfig) -> dict[str, Any]:
    """The algorithm's keyword arguments unless ``config.hyperparams`` overrides them.

    PPO: rollouts of 2 episodes per env (240 steps × n_envs), 10 epochs of minibatches
    of 240, γ = 0.99 (a horizon of about 100 steps = 50 minutes, the episode's length
    scale), a small entropy bonus against early collapse onto "keep".
    """
    if config.algo in ("ppo", "maskable-ppo", "recurrent-ppo"):
        return {
            "n_steps": 240,
            "batch_size": 240,
            "n_epochs": 10,
            "learning_rate": 3e-4,
            "gamma": 0.99,
            "gae_lambda": 0.95,
            "ent_coef": 0.01,
        }
    return {"n_steps": 8, "learning_rate": 7e-4, "gamma": 0.99, "ent_coef": 0.01}


def algo_class(algo: str):
    """The stable-baselines3 (or sb3-contrib) class of ``algo``.

    Raises:
        ConfigError: The ``rl`` extra is not installed.
    """
    try:
        if algo == "ppo":
            from stable_baselines3 import PPO as cls
        elif algo == "a2c":
            from stable_baselines3 import A2C as cls
        elif algo == "maskable-ppo":
            from sb3_contrib import MaskablePPO as cls
        elif algo == "recurrent-ppo":
            from sb3_contrib import RecurrentPPO as cls
        else:
            raise ConfigError(f"unknown algorithm {algo!r}; valid: {', '.join(ALGOS)}")
    except ImportError as exc:
        raise ConfigError(f"{algo} {RL_EXTRA_HINT} ({exc})") from None
    return cls


def _mask_wrapper(mode: str):
    """A wrapper class giving an env the ``action_masks()`` that MaskablePPO calls."""
    import gymnasium as gym

    class UpdateMask(gym.Wrapper):
        def action_masks(self):
            return update_mask(self.env.unwrapped, mode)

    return UpdateMask


def make_env_fn(config: TrainConfig, split: str, rank: int) -> Callable[[], Any]:
    """A function building one training env (for the vec env's workers)."""
    kwargs = dict(config.env_kwargs)
    kwargs.setdefault("action_mode", config.action_mode)
    if config.env_id.endswith("-v1"):
        kwargs.setdefault("split", split)
        kwargs.setdefault("cost_weight", config.cost_weight)
    mode, algo, seed = config.action_mode, config.algo, config.seed + rank

    def build():
        import gymnasium as gym
        from stable_baselines3.common.monitor import Monitor

        import infragym  # noqa: F401  (registers the envs)

        env = gym.make(config.env_id, **kwargs)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        env = Monitor(env)
        if algo == "maskable-ppo":
            env = _mask_wrapper(mode)(env)
        return env

    return build


def make_eval_env(config: TrainConfig, split: str = "validation"):
    """One env as the policy is evaluated on: ``split``, the run's action mode."""
    import gymnasium as gym

    import infragym  # noqa: F401

    kwargs = dict(config.env_kwargs)
    kwargs.setdefault("action_mode", config.action_mode)
    if config.env_id.endswith("-v1"):
        kwargs["split"] = split
        kwargs.setdefault("cost_weight", config.cost_weight)
    return gym.make(config.env_id, **kwargs)


def validate(agent: Any, config: TrainConfig, env=None) -> dict[str, float]:
    """Mean return, cost and SLO attainment of ``agent`` over the validation episodes."""
    from infragym.envs.rewards import SloAttainment
    from infragym.evaluate import run_episode

    own = env is None
    env = env or make_eval_env(config)
    try:
        stats = [
            run_episode(env, agent, VALIDATION_SEED + i, SloAttainment())
            for i in range(config.eval_episodes)
        ]
    finally:
        if own:
            env.close()
    n = len(stats)
    return {
        "val_return": sum(s.ret for s in stats) / n,
        "val_cost_hourly": sum(s.mean_cost_hourly for s in stats) / n,
        "val_slo": sum(s.slo_attainment for s in stats) / n,
    }


class _Validator(LearnedAgent):
    """A :class:`LearnedAgent` over the live model and VecNormalize of a training run."""

    def __init__(self, model, vecnorm, config: TrainConfig) -> None:  # no super(): no files
        self.model = model
        self.config = asdict(config)
        self.name = "validation"
        self.mode = config.action_mode
        self.frame_stack = config.frame_stack
        self.masking = config.algo == "maskable-ppo"
        self.recurrent = config.algo == "recurrent-ppo"
        self.run_dir = config.run_dir
        self.obs_rms = vecnorm.obs_rms if vecnorm.norm_obs else None
        self.clip_obs, self.epsilon = vecnorm.clip_obs, vecnorm.epsilon


def train(
    config: TrainConfig,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train, validate, checkpoint and write the run directory.

    Args:
        config: What to train (checked here).
        progress: Show a rich progress bar (steps/s, latest validation return).
        log: Called with one line per validation (for example ``print``).

    Returns:
        The summary saved in ``config.json``: the config, ``best_val_return``,
        ``best_step``, ``wall_s`` and versions.

    Raises:
        ConfigError: A bad config, a run directory that exists with a model in it, or the
            ``rl`` extra missing.
    """
    config.check()
    cls = algo_class(config.algo)
    import numpy as np
    import stable_baselines3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import (
        DummyVecEnv,
        SubprocVecEnv,
        VecFrameStack,
        VecNormalize,
    )

    torch.set_num_threads(config.torch_threads)
    run = config.run_dir
    if (run / FINAL_MODEL).exists() or (run / BEST_MODEL).exists():
        raise ConfigError(f"run directory {str(run)!r} already holds a model: pick another --name")
    run.mkdir(parents=True, exist_ok=True)

    fns = [make_env_fn(config, "train", i) for i in range(config.n_envs)]
    venv = SubprocVecEnv(fns) if config.vec_env == "subproc" else DummyVecEnv(fns)
    venv.seed(config.seed)
    if config.frame_stack > 1:
        venv = VecFrameStack(venv, config.frame_stack)
    venv = VecNormalize(venv, norm_obs=True, norm_reward=True, clip_obs=10.0, gamma=0.99)
    hyper = {**default_hyperparams(config), **config.hyperparams}
    if "gamma" in hyper:
        venv.gamma = hyper["gamma"]
    policy = "MlpLstmPolicy" if config.algo == "recurrent-ppo" else "MlpPolicy"
    model = cls(policy, venv, seed=config.seed, device="cpu", verbose=0, **hyper)

    summary: dict[str, Any] = {
        "config": asdict(config),
        "hyperparams": hyper,
        "versions": {
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "best_val_return": None,
        "best_step": None,
    }
    rows: list[dict[str, float]] = []
    eval_env = make_eval_env(config)
    start = time.perf_counter()
    best = {"ret": -math.inf}
    live_bar: list[Any] = []  # the progress bar while it runs

    def run_validation(step: int) -> dict[str, float]:
        validator = _Validator(model, venv, config)
        result = validate(validator, config, eval_env)
        recent = [ep["r"] for ep in list(model.ep_info_buffer)[-20:]]
        row = {
            "steps": step,
            "wall_s": round(time.perf_counter() - start, 2),
            "train_return": float(np.mean(recent)) if recent else math.nan,
            **result,
        }
        rows.append(row)
        if result["val_return"] > best["ret"]:
            best["ret"] = result["val_return"]
            summary["best_val_return"] = result["val_return"]
            summary["best_step"] = step
            model.save(str(run / BEST_MODEL))
            venv.save(str(run / BEST_STATS))
        _write_curve(run, rows)
        line = (
            f"step {step}: validation return {result['val_return']:.1f} "
            f"(cost {result['val_cost_hourly']:.3f} $/h, SLO {100 * result['val_slo']:.1f} %), "
            f"best {best['ret']:.1f}"
        )
        if live_bar:  # printed above the live progress bar, which stays at the bottom
            live_bar[0].console.print(line, markup=False, highlight=False)
        elif log:
            log(line)
        return row

    class Callback(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = config.eval_every or math.inf
            self.bar = None
            self.task = None
            self.last_val = "–"

        def _on_training_start(self) -> None:
            if progress:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )

                self.bar = Progress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]} steps/s"),
                    TextColumn("val return {task.fields[val]}"),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                )
                self.bar.start()
                live_bar.append(self.bar)
                self.task = self.bar.add_task(
                    config.name, total=config.total_steps, rate="–", val=self.last_val
                )

        def _on_step(self) -> bool:
            steps = self.num_timesteps
            if steps >= self.next_eval:
                self.next_eval += config.eval_every
                row = run_validation(steps)
                self.last_val = f"{row['val_return']:.1f}"
            if self.bar is not None:
                elapsed = time.perf_counter() - start
                self.bar.update(
                    self.task,
                    completed=min(steps, config.total_steps),
                    rate=f"{steps / max(elapsed, 1e-9):,.0f}",
                    val=self.last_val,
                )
            return True

        def _on_training_end(self) -> None:
            if self.bar is not None:
                self.bar.stop()
                live_bar.clear()

    try:
        model.learn(total_timesteps=config.total_steps, callback=Callback())
        if not rows or rows[-1]["steps"] != model.num_timesteps:
            run_validation(model.num_timesteps)
        model.save(str(run / FINAL_MODEL))
        venv.save(str(run / FINAL_STATS))
    finally:
        venv.close()
        eval_env.close()
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    summary["steps"] = int(model.num_timesteps)
    (run / CONFIG_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    _plot_curve(run, rows, config)
    return summary


def _write_curve(run: Path, rows: list[dict[str, float]]) -> None:
    with (run / "curve.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot_curve(run: Path, rows: list[dict[str, float]], config: TrainConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["steps"] for r in rows]
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True, dpi=100)
    axes[0].plot(steps, [r["val_return"] for r in rows], marker="o", label="validation")
    axes[0].plot(steps, [r["train_return"] for r in rows], alpha=0.6, label="train (last 20)")
    axes[0].set_ylabel("episode return")
    axes[0].legend(fontsize=8)
    axes[1].plot(steps, [r["val_cost_hourly"] for r in rows], marker="o", color="C2")
    axes[1].set_ylabel("validation cost $/h", color="C2")
    twin = axes[1].twinx()
    twin.plot(steps, [100 * r["val_slo"] for r in rows], marker="s", color="C3")
    twin.set_ylabel("validation SLO %", color="C3")
    axes[1].set_xlabel("environment steps")
    fig.suptitle(f"{config.name}: {config.algo} on {config.env_id}")
    fig.tight_layout()
    fig.savefig(run / "curve.png")
    plt.close(fig)
