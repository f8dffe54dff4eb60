"""Benchmark (not a test): does the grounding's criterion agree with the learning curve's bar?

`benchmark ab-curve` on Upworthy files a user would hand in (`upworthy_files.py all`, each test's
logged package drawn with ``--random-state``), with every grounded fit recorded: its best held-out
deviance (5-fold CV over whole tests) next to that of the tests' own fit on the same rows and
folds (the tests-only path of the same solver). Prints the curve and, per N, in how many splits
the deviance prefers log + tests and in how many the pairwise accuracy on the held-out
significant pairs does.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/grounding_criterion.py DIR [--random-state 23] [--seed 23]

DIR receives log.csv, ab.csv and the curve's output. About 1.5 minutes on 2 CPUs with MiniLM's
embedding cache warm.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from deconfoundlm.evaluation.benchmark.ab_curve import run_curve_benchmark
from deconfoundlm.glm.grounding import ABRows
from deconfoundlm.rewards import grounding

FIT = grounding.fit_grounded
RECORD: list[dict] = []


def recording(rows, family, **kw):
    """The shipped fit; with a prior, also the tests' own path on the same rows and folds."""
    path = FIT(rows, family, **kw)
    if rows.prior is not None:
        own = FIT(ABRows(rows.x, None, rows.test, rows.y, rows.n, rows.w), family, **kw)
        RECORD.append({"tests": int(rows.informative(family).n_tests), "grounded_cv": min(path.cv_deviance),
                       "own_cv": min(own.cv_deviance)})
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--random-state", type=int, default=23)
    ap.add_argument("--seed", type=int, default=23)
    args = ap.parse_args()
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(Path(__file__).with_name("upworthy_files.py")), "all", str(d),
                    "--random-state", str(args.random_state)], check=True)
    grounding.fit_grounded = recording
    t = time.time()
    run_curve_benchmark(d / "log.csv", d / "ab.csv", text="headline", outcome="clicks", trials="impressions",
                        confounders=("test_week:time",), test="test_id", seed=args.seed, out=d / "curve",
                        force=True)
    took = time.time() - t
    per = pd.read_csv(d / "curve" / "learning_curve_per_split.csv")
    acc = per.pivot_table(index=["split", "tests"], columns="curve", values="accuracy").reset_index()
    rec = pd.DataFrame(RECORD)
    acc = acc.sort_values(["split", "tests"]).reset_index(drop=True)
    acc[["grounded_cv", "own_cv"]] = rec[["grounded_cv", "own_cv"]].to_numpy()  # one record per (split, N), in order
    acc["deviance prefers log + tests"] = acc["grounded_cv"] < acc["own_cv"]
    acc["accuracy prefers log + tests"] = acc["log + tests"] > acc["tests only"]
    table = acc.groupby("tests").agg(**{
        "log + tests": ("log + tests", "mean"), "tests only": ("tests only", "mean"), "log only": ("log only", "mean"),
        "deviance: log + tests better": ("deviance prefers log + tests", "sum"),
        "accuracy: log + tests better": ("accuracy prefers log + tests", "sum"), "splits": ("split", "size")})
    print(f"random state {args.random_state}, seed {args.seed}: {took:.0f} s for the curve")
    print(table.round(4).to_string())


if __name__ == "__main__":
    main()
