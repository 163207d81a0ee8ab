"""Train PPO on SimpleK8sWebApp-v1 and compare it with the default and a tuned HPA.

The same functions as ``infragym train``, ``infragym tune hpa`` and ``infragym evaluate``
(needs the ``rl`` extra; see the README's "Training" section for torch's CPU wheel):

    python examples/train_ppo.py --steps 200000
"""

import argparse

import gymnasium as gym

import infragym  # noqa: F401  (registers the envs)
from infragym.agents import specs
from infragym.agents.training import TrainConfig, train
from infragym.agents.tuning import save_tuned, tune_hpa
from infragym.evaluate import compare, evaluate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=24)
    args = parser.parse_args()

    # PPO on the train split, the best checkpoint on the validation split kept.
    config = TrainConfig(total_steps=args.steps, seed=args.seed, name=f"example-s{args.seed}")
    train(config, log=print)
    # The HPA tuned with the same budget in environment steps, on the same split.
    save_tuned(tune_hpa(budget_steps=args.steps, seed=args.seed), "runs/example-hpa.json")

    agents = [specs.make("hpa:runs/example-hpa.json"), specs.make("hpa"),
              specs.make(f"ppo:{config.run_dir}")]  # fmt: skip
    make_env = lambda: gym.make("SimpleK8sWebApp-v1", action_mode="absolute", split="test")  # noqa: E731
    scenarios = make_env().unwrapped.scenario_names
    results = evaluate(make_env, agents, args.episodes, seed=0, scenarios=scenarios)
    differences = compare(results)
    for r in results:
        d = differences[r.agent]["mean_cost_hourly"]
        print(
            f"{r.agent:24s} return {r.mean('ret'):7.1f}  SLO {r.mean('slo_attainment'):.1%}  "
            f"cost ${r.mean('mean_cost_hourly'):.3f}/h ({100 * d.value:+.1f} % "
            f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}] vs tuned hpa)"
        )


if __name__ == "__main__":
    main()
