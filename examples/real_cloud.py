"""Run SimpleK8sWebApp-v1 on real DigitalOcean through the Pulumi Automation API.

This creates billable resources (a DOKS cluster with a few nodes) and destroys them on
``close()``. If the process dies, list and remove what is left with
``infragym stacks list`` and ``infragym stacks destroy real``.

    export DIGITALOCEAN_TOKEN=...        # never printed
    export PULUMI_CONFIG_PASSPHRASE=...  # or let infragym generate ~/.infragym/passphrase
    python examples/real_cloud.py
"""

import os
import sys

import gymnasium as gym

import infragym  # noqa: F401

if not os.environ.get("DIGITALOCEAN_TOKEN"):
    sys.exit("set DIGITALOCEAN_TOKEN first (this example deploys to DigitalOcean)")

env = gym.make(
    "SimpleK8sWebApp-v1",
    backend="pulumi",
    backend_options={"deployment": "real"},
    render_mode="ansi",
)
try:
    obs, info = env.reset(seed=0, options={"scenario": "constant"})
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        print(env.render())
finally:
    env.close()  # destroys every stack the env created
