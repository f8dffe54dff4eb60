"""The Upworthy files the benchmark scripts hand to the CLI, as a user would: the reliably
randomized packages of the bundled archive, as an observational log (one package drawn per test)
and as A/B tests (every package).

    .venv/bin/python benchmarks/upworthy_files.py all OUT --random-state 11
        OUT/log.csv (one package per test) and OUT/ab.csv (every package)
    .venv/bin/python benchmarks/upworthy_files.py by-2015 OUT [--ground N]
        OUT/observational_before_2015.csv (one package per test before 2015, random_state 0),
        OUT/ab_tests_2015.csv (every package of 2015) and, with --ground, OUT/ab_tests_before_2015.csv
        (every package of N tests before 2015, drawn with seed 0)
"""

from __future__ import annotations

import argparse

import numpy as np

from deconfoundlm.logs import upworthy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("split", choices=["all", "by-2015"])
    ap.add_argument("out")
    ap.add_argument("--random-state", type=int, default=0, help="the draw of each test's logged package")
    ap.add_argument("--ground", type=int, default=None, help="by-2015: also N tests before 2015 as A/B tests")
    args = ap.parse_args()
    out = args.out
    pk = upworthy.load_packages()
    pk = pk[upworthy.reliable(pk)]
    if args.split == "all":
        pk.groupby("test_id").sample(1, random_state=args.random_state).to_csv(f"{out}/log.csv", index=False)
        pk.to_csv(f"{out}/ab.csv", index=False)
        return
    early, late = pk[pk["test_week"] < 201501], pk[pk["test_week"] >= 201501]
    early.groupby("test_id").sample(1, random_state=args.random_state).to_csv(
        f"{out}/observational_before_2015.csv", index=False)
    if args.ground is None:
        late.to_csv(f"{out}/ab_tests_2015.csv", index=False)
        print(f"observational log: {early['test_id'].nunique()} tests before 2015; A/B tests of 2015: "
              f"{late['test_id'].nunique()} tests, {len(late)} packages")
        return
    tests = np.random.default_rng(0).choice(np.sort(early["test_id"].unique()), args.ground, replace=False)
    early[early["test_id"].isin(tests)].to_csv(f"{out}/ab_tests_before_2015.csv", index=False)
    late.to_csv(f"{out}/ab_tests_2015.csv", index=False)
    print(f"observational log: {early['test_id'].nunique()} tests before 2015; A/B tests for grounding: "
          f"{args.ground} of them; A/B tests of 2015 (evaluation): {late['test_id'].nunique()}")


if __name__ == "__main__":
    main()
