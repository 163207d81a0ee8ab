"""Print the leaderboard's Markdown table from ``infragym evaluate --output`` JSON files.

    python docs/leaderboard/table.py docs/leaderboard/results.json [more.json ...]

Several files (for example the baselines and the slower mpc run, on the same split,
seeds and scenarios) are merged; each file's differences are to its own reference, so
give every file the same reference agent first. Learned agents (``ppo:RUN``,
``maskable-ppo:RUN``, ...) with several runs also get a combined row, ``ppo (N seeds)``:
per episode, the mean over the seeds, with
its paired-bootstrap interval against the reference (over episodes; the seeds' spread is
in their own rows).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from infragym.agents.specs import LEARNED
from infragym.evaluate import paired_bootstrap


def ci(d: dict, scale: float, digits: int, unit: str = "") -> str:
    return (
        f"{d['value'] * scale:+.{digits}f}{unit} "
        f"[{d['low'] * scale:+.{digits}f}, {d['high'] * scale:+.{digits}f}]"
    )


def main(paths: list[str]) -> None:
    rows, seen, ref = [], set(), None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if ref is not None and data["reference"] != ref:
            sys.exit(f"{path}: reference {data['reference']!r}, expected {ref!r}")
        ref = data["reference"]
        for a in data["agents"]:
            if a["agent"] in seen:
                continue
            seen.add(a["agent"])
            rows.append(a)
    reference = next(a for a in rows if a["agent"] == ref)
    for algo in LEARNED:
        seeds = [a for a in rows if a["agent"].startswith(f"{algo}:")]
        if len(seeds) < 2:
            continue
        combined = {"agent": f"{algo} ({len(seeds)} seeds)", "episodes": {}, "means": {},
                    "vs_reference": {}, "wall_s": sum(a["wall_s"] for a in seeds)}  # fmt: skip
        for metric in reference["episodes"]:
            values = np.mean([a["episodes"][metric] for a in seeds], axis=0)
            combined["episodes"][metric] = values
            combined["means"][metric] = float(values.mean())
            relative = metric == "mean_cost_hourly"
            v, lo, hi = paired_bootstrap(values, reference["episodes"][metric], relative)
            combined["vs_reference"][metric] = {"value": v, "low": lo, "high": hi}
        rows.insert(rows.index(seeds[-1]) + 1, combined)
    print(f"| agent | return | Δ return vs {ref} | cost $/h | Δ cost | SLO attainment "
          "| Δ SLO (pp) | errors | wall s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for a in rows:
        m, d = a["means"], a["vs_reference"]
        is_ref = a["agent"] == ref
        print(
            f"| {a['agent']} | {m['ret']:.1f} | {'–' if is_ref else ci(d['ret'], 1, 1)} "
            f"| {m['mean_cost_hourly']:.4f} "
            f"| {'–' if is_ref else ci(d['mean_cost_hourly'], 100, 1, ' %')} "
            f"| {100 * m['slo_attainment']:.1f} % "
            f"| {'–' if is_ref else ci(d['slo_attainment'], 100, 1)} "
            f"| {100 * m['mean_error_ratio']:.2f} % | {a['wall_s']:.0f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
