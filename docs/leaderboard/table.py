"""Print the leaderboard's Markdown table from ``infragym evaluate --output`` JSON files.

    python docs/leaderboard/table.py docs/leaderboard/results.json [more.json ...]

Several files (for example the baselines and the slower mpc run, on the same split,
seeds and scenarios) are merged; each file's differences are to its own reference, so
give every file the same reference agent first.
"""

from __future__ import annotations

import json
import sys


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
