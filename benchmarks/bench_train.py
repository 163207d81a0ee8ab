"""PPO training speed on SimpleK8sWebApp-v1, against CartPole-v1 in the same process.

Trains PPO with ``infragym train``'s settings (MlpPolicy, rollouts of 240 steps per env,
10 epochs of minibatches of 240, VecNormalize, one torch thread) for ``--steps`` steps
on four envs, in a ``DummyVecEnv`` (one process) and a ``SubprocVecEnv`` (one process per
env), and splits the wall time three ways:

- *env*: inside the vec env's ``reset``/``step`` (for SubprocVecEnv: the parent waiting
  for its workers, pipes included);
- *policy*: the rest of rollout collection (the policy's forward pass, buffers);
- *update*: gradient steps (``train()``), the time outside rollouts.

The first reset (for SubprocVecEnv: starting the workers, which import
stable-baselines3 and torch, and the env) is reported apart as *start-up* and left out of
the steps/s and the split.

No validation runs (that is ``infragym train``'s, not the learner's, cost).

    python benchmarks/bench_train.py [--steps 20000] [--envs 4]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym


def bench(env_id: str, vec: str, steps: int, n_envs: int) -> dict[str, float]:
    """Train once; wall time and its split."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import (
        DummyVecEnv,
        SubprocVecEnv,
        VecEnvWrapper,
        VecNormalize,
    )

    torch.set_num_threads(1)

    class Timed(VecEnvWrapper):
        def __init__(self, venv) -> None:
            super().__init__(venv)
            self.env_s = 0.0
            self.first_reset_s: float | None = None

        def reset(self):
            t = time.perf_counter()
            out = self.venv.reset()
            if self.first_reset_s is None:  # worker start-up, imports: reported apart
                self.first_reset_s = time.perf_counter() - t
            else:
                self.env_s += time.perf_counter() - t
            return out

        def step_async(self, actions) -> None:
            t = time.perf_counter()
            self.venv.step_async(actions)
            self.env_s += time.perf_counter() - t

        def step_wait(self):
            t = time.perf_counter()
            out = self.venv.step_wait()
            self.env_s += time.perf_counter() - t
            return out

    class Rollouts(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rollout_s = 0.0
            self.t0 = 0.0

        def _on_rollout_start(self) -> None:
            self.t0 = time.perf_counter()

        def _on_rollout_end(self) -> None:
            self.rollout_s += time.perf_counter() - self.t0

        def _on_step(self) -> bool:
            return True

    def make(i: int):
        def build():
            import infragym  # noqa: F401

            kwargs = {"split": "train"} if env_id.startswith("SimpleK8s") else {}
            return gym.make(env_id, **kwargs)

        return build

    fns = [make(i) for i in range(n_envs)]
    raw = SubprocVecEnv(fns) if vec == "subproc" else DummyVecEnv(fns)
    timed = Timed(raw)
    venv = VecNormalize(timed)
    model = PPO(
        "MlpPolicy", venv, n_steps=240, batch_size=240, n_epochs=10, ent_coef=0.01,
        seed=0, device="cpu", verbose=0,
    )  # fmt: skip
    cb = Rollouts()
    start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=cb)
    wall = time.perf_counter() - start - (timed.first_reset_s or 0.0)
    venv.close()
    n = model.num_timesteps
    return {
        "steps": n,
        "wall_s": wall,
        "startup_s": timed.first_reset_s or 0.0,
        "steps_per_s": n / wall,
        "env_s": timed.env_s,
        "policy_s": cb.rollout_s - timed.env_s,
        "update_s": wall - cb.rollout_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--envs", type=int, default=4)
    args = parser.parse_args()
    import os

    import stable_baselines3
    import torch

    print(
        f"PPO, {args.envs} envs, {args.steps} steps, torch {torch.__version__} "
        f"(1 thread), stable-baselines3 {stable_baselines3.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    header = (
        f"{'env':<20} {'vec env':<10} {'steps/s':>8} {'env':>7} {'policy':>7} {'update':>7} "
        f"{'start-up s':>10}"
    )
    print(header)
    print("-" * len(header))
    for env_id in ("SimpleK8sWebApp-v1", "CartPole-v1"):
        for vec in ("dummy", "subproc"):
            r = bench(env_id, vec, args.steps, args.envs)
            w = r["wall_s"]
            print(
                f"{env_id:<20} {vec:<10} {r['steps_per_s']:>8.0f} "
                f"{100 * r['env_s'] / w:>6.0f}% {100 * r['policy_s'] / w:>6.0f}% "
                f"{100 * r['update_s'] / w:>6.0f}% {r['startup_s']:>10.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
