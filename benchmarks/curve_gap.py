"""Print a `benchmark ab-curve` output's learning curve (mean over its splits) with two columns
more: "gap", log + tests minus the better of log only and tests only (the log-plus-tests issue's
bar: never below -0.005), and "margin", log + tests minus tests only.

    .venv/bin/python benchmarks/curve_gap.py TITLE CURVE_DIR
"""

from __future__ import annotations

import sys

import pandas as pd


def main() -> None:
    title, folder = sys.argv[1], sys.argv[2]
    d = pd.read_csv(f"{folder}/learning_curve_per_split.csv")
    t = d.groupby(["tests", "curve"])["accuracy"].mean().unstack("curve")
    t["gap"] = t["log + tests"] - t[["log only", "tests only"]].max(axis=1)
    t["margin"] = t["log + tests"] - t["tests only"]
    print(f"{title} (mean over {d['split'].nunique()} splits)")
    print(t.round(4).to_string(), end="\n\n")


if __name__ == "__main__":
    main()
