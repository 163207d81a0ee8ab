"""The Kubernetes HPA rule and a cluster-autoscaler rule, acting through the env's knobs.

python examples/hpa_baseline.py
"""

import gymnasium as gym

import infragym  # noqa: F401
from infragym.agents.baselines import make_agent

env = gym.make("SimpleK8sWebApp-v1", action_mode="absolute")
agent = make_agent("hpa")  # HPA on heater replicas + cluster autoscaler on the node pool
obs, info = env.reset(seed=1, options={"scenario": "spikes"})
agent.reset(env, seed=1)
done, ret = False, 0.0
while not done:
    obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
    ret += reward
    done = terminated or truncated
print(f"return {ret:.1f}, episode cost ${info['cost_usd']:.3f}, final knobs {info['knobs']}")
env.close()
