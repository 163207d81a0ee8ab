"""Train PPO (stable-baselines3) on SimpleK8sWebApp-v0 and compare it with the HPA baseline.

Needs the ``rl`` extra: ``pip install torch`` first (the CPU wheel if you can get it;
PyPI's default Linux wheel is a 527 MB CUDA build plus several GB of NVIDIA libraries),
then ``pip install -e ".[rl]"``.

    python examples/train_ppo.py --steps 200000
"""

import argparse

import gymnasium as gym

import infragym  # noqa: F401
from infragym.agents.baselines import make_agent
from infragym.evaluate import evaluate


class PPOAgent:
    """Wraps a trained SB3 model in the agent interface ``evaluate`` drives."""

    name = "ppo"

    def __init__(self, model) -> None:
        self.model = model

    def reset(self, env, seed=None) -> None:
        pass

    def act(self, obs, info):
        action, _ = self.model.predict(obs, deterministic=True)
        return action


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--envs", type=int, default=4)
    args = parser.parse_args()

    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    vec = make_vec_env("SimpleK8sWebApp-v0", n_envs=args.envs, seed=0)
    model = PPO("MlpPolicy", vec, verbose=1, n_steps=240, batch_size=240, seed=0)
    model.learn(total_timesteps=args.steps)
    model.save("ppo_simple_k8s_web_app")

    for r in evaluate(
        lambda: gym.make("SimpleK8sWebApp-v0"),
        [PPOAgent(model), make_agent("hpa")],
        episodes=5,
        seed=100,
    ):
        print(
            f"{r.agent:6s} return {r.mean('ret'):7.1f}  SLO {r.mean('slo_attainment'):.1%}  "
            f"cost ${r.mean('mean_cost_hourly'):.3f}/h"
        )


if __name__ == "__main__":
    main()
