"""Speed of SimpleK8sWebApp-v1 and -v0 on the sim backend, against CartPole-v1 in the same run.

Both envs run the same loop (``gym.make`` with its default wrappers, reset when an
episode ends) under random actions. Random actions change a knob on almost every step
(in ``delta`` mode the node size on two steps in three, which replaces the node pool),
so every step reschedules the cluster: the worst case. SimpleK8sWebApp-v0 also runs
under two policies closer to what a trained autoscaler does:

- *HPA rule*: the ``hpa`` baseline (the Kubernetes HPA on replicas, a cluster-autoscaler
  rule on the node count). Its actions are recorded in a first pass and replayed in the
  timed one, so the figure is the env's speed, not the rule's.
- *hold*: every knob kept.

The twin is the compiled core (``infragym._twin_core``, built by ``pip install -e .``);
the Python twin earlier versions of this benchmark compared it with was retired. With the
default reward a whole step runs in the env kernel (``infragym.envs.kernel``, one call
into the core a step); a v1 row forces the env's Python step (``use_kernel = False``) for
comparison. The last column says which ran each row: ``kernel`` or ``Python step``.

Every loop resets when an episode ends (120 steps), and resets run in Python: the
``resets`` column is the share of the loop's time spent in them (a reset whose load
variant misses the graph cache reruns the layer programs under mocks), and ``w/o resets``
the ratio with that share taken out: the speed of the steps themselves.

The v1 rows run v1's asynchronous actuation: random actions over every scenario family,
random actions on a real trace (``trace-conv``), and the HPA rule replayed.

Then the vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point")``): v1
under random actions at the first ``--vector-envs`` size, in env-steps/s against
CartPole-v1's single-env steps/s (the target is 10x), and the resident memory per env at
each size (the growth of the process's RSS from making and resetting the vector env,
divided by its envs; Linux only).

The graph cache is warmed first (one mock run of the layers per scenario variant, about
20 ms each, is a reset cost an agent pays once per variant, not a step cost).

    python benchmarks/bench_sim.py [--steps N] [--repeats R] [--vector-envs N ...]
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import gymnasium as gym
import numpy as np

import infragym  # noqa: F401  (registers the envs)
from infragym.agents.baselines import make_agent


def steps_per_second(env, steps: int, policy) -> tuple[float, float]:
    """Steps/s of the loop (resets included), and the share of its time in resets."""
    env.reset(seed=0)
    clock = time.perf_counter
    resetting = 0.0
    start = clock()
    for i in range(steps):
        _, _, term, trunc, _ = env.step(policy(i))
        if term or trunc:
            began = clock()
            env.reset()
            resetting += clock() - began
    elapsed = clock() - start
    return steps / elapsed, resetting / elapsed


def vector_steps_per_second(vec, env_steps: int) -> tuple[float, float]:
    """Env-steps/s of a vector env under random actions, over about ``env_steps``
    env-steps, and the share of its time in the envs' resets (autoresets)."""
    vec.reset(seed=0)
    vec.action_space.seed(0)
    actions = [vec.action_space.sample() for _ in range(100)]
    steps = max(1, env_steps // vec.num_envs)
    clock = time.perf_counter
    resetting = [0.0]

    def timed(reset):
        def run(**kwargs):
            began = clock()
            try:
                return reset(**kwargs)
            finally:
                resetting[0] += clock() - began

        return run

    envs = vec.unwrapped.envs
    for env in envs:  # each env's reset timed (an instance attribute shadows the method)
        env.reset = timed(env.reset)
    start = clock()
    for i in range(steps):
        vec.step(actions[i % 100])  # the vector env resets ended envs itself
    elapsed = clock() - start
    for env in envs:
        del env.reset
    return steps * vec.num_envs / elapsed, resetting[0] / elapsed


def rss_mib() -> float:
    """The process's resident memory now (MiB, from /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def recorded_hpa_actions(env, steps: int) -> list[np.ndarray]:
    """The ``hpa`` baseline's actions over ``steps`` steps of the timed loop's episodes.

    Same seed, same resets: replaying them reproduces the agent's trajectory exactly.
    """
    agent = make_agent("hpa")
    actions = []
    obs, info = env.reset(seed=0)
    agent.reset(env)
    for _ in range(steps):
        action = agent.act(obs, info)
        actions.append(action)
        obs, _, term, trunc, info = env.step(action)
        if term or trunc:
            obs, info = env.reset()
            agent.reset(env)
    return actions


def random_policy(env):
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(1000)]
    return lambda i: actions[i % 1000]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds; each loop's best round is reported"
    )
    parser.add_argument(
        "--vector-envs",
        type=int,
        nargs="*",
        default=[256, 4096],
        help="vector env sizes: memory per env at each, env-steps/s at the first",
    )
    args = parser.parse_args()

    cart = gym.make("CartPole-v1")
    env = gym.make("SimpleK8sWebApp-v0")
    v1 = gym.make("SimpleK8sWebApp-v1")
    v1_step = gym.make("SimpleK8sWebApp-v1")
    v1_step.unwrapped.use_kernel = False  # the Python step
    v1_trace = gym.make("SimpleK8sWebApp-v1", scenarios=["trace-conv"])
    start = time.perf_counter()
    for seed in range(200):  # every scenario variant, so resets hit the graph cache
        env.reset(seed=seed)
    for seed in range(400):
        v1.reset(seed=seed)
    warm = time.perf_counter() - start
    step_s = env.unwrapped.step_seconds
    hold = np.ones(len(env.unwrapped.knobs), dtype=np.int64)
    hpa_actions = recorded_hpa_actions(env, args.steps)
    loops = {
        "CartPole-v1, random actions": (cart, random_policy(cart)),
        "SimpleK8sWebApp-v0, random actions": (env, random_policy(env)),
        "SimpleK8sWebApp-v0, HPA rule (replayed)": (env, hpa_actions.__getitem__),
        "SimpleK8sWebApp-v0, hold (no knob change)": (env, lambda i: hold),
        "SimpleK8sWebApp-v1, random actions": (v1, random_policy(v1)),
        "  the same, Python step, random (v1)": (v1_step, random_policy(v1_step)),
        "SimpleK8sWebApp-v1, trace-conv, random": (v1_trace, random_policy(v1_trace)),
        "SimpleK8sWebApp-v1, HPA rule (replayed)": (
            v1,
            recorded_hpa_actions(v1, args.steps).__getitem__,
        ),
    }
    # Rounds interleave the loops, so that a slow spell of a shared machine hits all of
    # them; the best round of each is its speed with the least interference.
    best = dict.fromkeys(loops, 0.0)
    reset_share = dict.fromkeys(loops, 0.0)
    for _ in range(args.repeats):
        for name, (e, policy) in loops.items():
            sps, share = steps_per_second(e, args.steps, policy)
            if sps > best[name]:
                best[name], reset_share[name] = sps, share

    print(f"warm-up: 600 resets in {warm:.1f} s (graph cache filled)")
    print(f"best of {args.repeats} interleaved rounds of {args.steps:,} steps")
    print(
        f"{'':42}{'steps/s':>10}{'ratio':>9}{'sim s / wall s':>17}{'resets':>8}"
        f"{'w/o resets':>12}  step"
    )
    cart_sps = best.pop("CartPole-v1, random actions")
    print(f"{'CartPole-v1, random actions':42}{cart_sps:>10,.0f}{1:>9.3f}")
    for name, sps in best.items():
        engine = "kernel" if loops[name][0].unwrapped._kernel else "Python step"
        ratio, share = sps / cart_sps, reset_share[name]
        print(
            f"{name:42}{sps:>10,.0f}{ratio:>9.3f}{sps * step_s:>17,.0f}{share:>8.0%}"
            f"{ratio / (1 - share):>12.3f}  {engine}"
        )
    print("targets: v0 ratio >= 0.3, sim s / wall s >= 1,000,000; v1 ratio >= 0.6")
    for i, n in enumerate(args.vector_envs):
        gc.collect()
        before = rss_mib()
        vec = gym.make_vec(
            "SimpleK8sWebApp-v1", num_envs=n, vectorization_mode="vector_entry_point"
        )
        vec.reset(seed=0)
        per_env = (rss_mib() - before) * 1024 / n
        if i == 0:
            sps, share = max(vector_steps_per_second(vec, args.steps) for _ in range(args.repeats))
            ratio = sps / cart_sps
            name = f"SimpleK8sWebApp-v1 vector env, N={n}, random"
            print(
                f"{name:42}{sps:>10,.0f}{ratio:>9.3f}{sps * step_s:>17,.0f}{share:>8.0%}"
                f"{ratio / (1 - share):>12.3f}  kernel"
            )
            print("vector target: ratio >= 10 (env-steps/s against CartPole's single-env steps/s)")
        print(f"vector env, N={n:,}: {per_env:,.0f} KiB resident memory per env")
        vec.close()
        del vec


if __name__ == "__main__":
    main()
