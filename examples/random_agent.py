"""Run a random agent on SimpleK8sWebApp-v1 (the digital twin) and print what it sees.

python examples/random_agent.py
"""

import gymnasium as gym

import infragym  # noqa: F401  (registers the environments)

env = gym.make("SimpleK8sWebApp-v1", render_mode="ansi")
obs, info = env.reset(seed=0)
print(f"scenario: {info['scenario']}, knobs: {info['knobs']}")
total = 0.0
for step in range(20):
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    total += reward
    m = info["metrics"]
    print(
        f"step {step:2d}  reward {reward:+.2f}  p95 {m['latency_p95'] * 1000:7.1f} ms  "
        f"errors {m['error_ratio']:.1%}  ${m['cost_hourly']:.3f}/h  knobs {info['knobs']}"
    )
print(env.render())
print(f"return over 20 steps: {total:.2f}")
env.close()
