"""Benchmark (not a test): the demo's learning curve with the grounding strength fixed instead of
chosen by cross-validation. For each split of the demo (MiniLM, 5 splits) and each N, the log's
deconfounded reward grounded on N A/B tests at every strength of the grid (and "none": the log's
reward rescaled), scored on the held-out significant pairs: how much better than the CV choice a
strength picked in hindsight could do. The tests-only reward at N is printed for reference.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/grounding_strengths.py [--sizes 100 200 400] [--out CSV]

About 8 minutes on 2 CPUs with the embedding cache warm (17 grounded fits per split and N).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from deconfoundlm.evaluation import demo
from deconfoundlm.evaluation.ab_curve import SplitData
from deconfoundlm.evaluation.candidates import CandidateConfig
from deconfoundlm.evaluation.evaluate import pair_correct
from deconfoundlm.glm import grounding as solver
from deconfoundlm.rewards import grounding

ROWS: list[dict] = []


def strengths_curve(data: SplitData, sizes, family: str, *, cv: int, seed: int) -> list[dict]:
    """In place of the demo's split_curve: the same tests in the same order (seeded), every strength."""
    labels, code = np.unique(data.tests, return_inverse=True)
    order = np.random.default_rng([seed, 17]).permutation(labels)
    rank = np.empty(len(labels), dtype=np.int64)
    rank[np.searchsorted(labels, order)] = np.arange(len(order))
    row_rank = rank[code.ravel()]
    fit = solver.fit_grounded
    for size in sizes:
        if size is None:
            continue
        rows = np.flatnonzero(row_rank < size)
        codes = np.unique(data.tests[rows], return_inverse=True)[1]
        ab = grounding.ABFeatures(data.x[rows], codes, data.y[rows], None if data.n is None else data.n[rows], None,
                                  arm=None if data.arm is None else data.arm[rows])
        own = grounding.fit_tests_only(ab, family=family, cv=cv, seed=seed).text_effect(data.eval_x, None)
        ROWS.append({"split_seed": seed, "tests": size, "strength": "tests only",
                     "accuracy": float(pair_correct(own, data.pairs).mean())})
        choices = {"cv": fit, "none": partial(fit, alphas=())}
        choices.update({f"{a:.4g}": partial(fit, alphas=(a,), uncorrected=False) for a in sorted(solver.ALPHAS)[::-1]})
        for name, chooser in choices.items():
            grounding.fit_grounded = chooser
            try:
                est = copy.deepcopy(data.log_reward)
                grounding.ground_reward(est, data.log_x, ab, family=family, cv=cv, seed=seed)
            finally:
                grounding.fit_grounded = fit
            ROWS.append({"split_seed": seed, "tests": size, "strength": name,
                         "accuracy": float(pair_correct(est.reward(data.eval_x), data.pairs).mean())})
    return []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--out", default=None, help="CSV of every split, N and strength")
    args = ap.parse_args()
    demo.split_curve = strengths_curve
    cfg = demo.DemoConfig(candidates=CandidateConfig(stories=0), curve_sizes=tuple(args.sizes))
    with tempfile.TemporaryDirectory() as tmp:
        demo.run_demo(Path(tmp) / "demo", cfg)
    df = pd.DataFrame(ROWS)
    if args.out:
        df.to_csv(args.out, index=False)
    table = df.groupby(["strength", "tests"], sort=False)["accuracy"].mean().unstack("tests")
    print("\nmean pairwise accuracy over the demo's 5 splits (held-out significant pairs)")
    print(table.round(4).to_string())
    fixed = table.drop(index=["cv", "none", "tests only"])
    for n in table.columns:
        best = fixed[n].idxmax()
        print(f"N={n}: CV choice {table.loc['cv', n]:.4f}; best single strength in hindsight {best} "
              f"{fixed.loc[best, n]:.4f}; tests only {table.loc['tests only', n]:.4f} "
              f"(margin {fixed.loc[best, n] - table.loc['tests only', n]:+.4f})")


if __name__ == "__main__":
    main()
