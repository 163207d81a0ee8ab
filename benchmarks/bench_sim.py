"""Speed of SimpleK8sWebApp-v0 on the sim backend, against CartPole-v1 in the same run.

Prints steps/s of both (the same loop: random actions, reset when an episode ends,
Gymnasium's default wrappers), their ratio, and simulated seconds per wall second.

    python benchmarks/bench_sim.py [--steps N]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym

import infragym  # noqa: F401  (registers the envs)


def steps_per_second(env_id: str, steps: int, **kwargs) -> float:
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(0)
    env.reset(seed=0)
    for _ in range(200):  # warm-up: caches, first resets
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    actions = [env.action_space.sample() for _ in range(1000)]
    start = time.perf_counter()
    for i in range(steps):
        _, _, term, trunc, _ = env.step(actions[i % 1000])
        if term or trunc:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50_000)
    args = parser.parse_args()
    cart = steps_per_second("CartPole-v1", args.steps)
    sim = steps_per_second("SimpleK8sWebApp-v0", args.steps)
    step_seconds = gym.make("SimpleK8sWebApp-v0").unwrapped.step_seconds
    print(f"CartPole-v1          {cart:12,.0f} steps/s")
    print(f"SimpleK8sWebApp-v0   {sim:12,.0f} steps/s  (step = {step_seconds:.0f} simulated s)")
    print(f"ratio                {sim / cart:12.3f}   (target >= 0.3)")
    print(f"simulated s / wall s {sim * step_seconds:12,.0f}   (target >= 1,000,000)")


if __name__ == "__main__":
    main()
