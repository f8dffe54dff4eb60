"""Benchmark (not a test): how much it matters that the log holds a text of the A/B tests.

On the demo's splits the log is one package of each training test, and the A/B tests are all the
reliably randomized packages of the same tests: the log's reward has seen the outcome of one arm
of every test it is grounded on and calibrated against. Here each test's prior is also taken
from a log fit that did not see that test's log row (5 folds over the tests, the log's chosen
penalty kept: cross-fitting), and the learning curve's "log + tests" point and the calibration
slope are compared between the two priors (the grounded reward is s * r_log + correction in both,
with r_log the log's reward on all its rows).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/grounding_in_sample.py [--sizes 50 100 200 400]

About 3 minutes on 2 CPUs with the embedding cache warm.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from deconfoundlm.evaluation import demo
from deconfoundlm.evaluation.ab_curve import SplitData
from deconfoundlm.evaluation.candidates import CandidateConfig
from deconfoundlm.evaluation.evaluate import pair_correct
from deconfoundlm.evaluation.upworthy_rewards import package_features
from deconfoundlm.glm.folds import hash_folds
from deconfoundlm.logs import upworthy
from deconfoundlm.pipeline import fit_reward
from deconfoundlm.rewards.grounding import ABFeatures, ground_reward

K = 5
ROWS: list[dict] = []


def cross_fitted_prior(obs: pd.DataFrame, ab: pd.DataFrame, x: np.ndarray, enc, alpha: float, seed: int,
                       cv: int) -> np.ndarray:
    """Each A/B row's log reward from the fold model that left out its test's log row."""
    obs = obs.reset_index(drop=True)
    labels = np.unique(obs["test_id"].to_numpy())
    fold_of = dict(zip(labels, hash_folds(np.arange(len(labels)), K, seed), strict=True))
    fold_obs = obs["test_id"].map(fold_of).to_numpy()
    fold_ab = ab["test_id"].map(fold_of).fillna(-1).to_numpy()
    prior = np.full(len(ab), np.nan)
    for k in range(K):
        fold = fit_reward(obs[fold_obs != k], text="headline", outcome="clicks", trials="impressions",
                          confounders=("test_week:time",), method="deconfound", family="binomial", encoder=enc,
                          seed=seed, cv=cv, params={"alphas": (alpha,)}, diagnose=False, se=False)
        prior[fold_ab == k] = fold.estimator.reward(x[fold_ab == k])
    return prior


def learning_curve_split(pk, enc, fits, obs, train_tests, arms, pairs, seed, cfg):
    ab = pk[pk["test_id"].isin(train_tests) & upworthy.reliable(pk)].reset_index(drop=True)
    f = package_features(ab, enc)
    log = fits["deconfound"].estimator
    data = SplitData(log_reward=log, log_x=enc.encode(obs["headline"].astype(str).tolist()), x=f.x,
                     tests=ab["test_id"].to_numpy(), y=f.y, n=f.n, w=None,
                     eval_x=enc.encode(arms["text"].astype(str).tolist()).astype(np.float64), pairs=pairs, arm=f.arm)
    priors = {"in-sample": log.reward(f.x), "cross-fitted": cross_fitted_prior(obs, ab, f.x, enc, log.alpha_, seed,
                                                                               cfg.cv)}
    labels, code = np.unique(data.tests, return_inverse=True)
    order = np.random.default_rng([seed, 17]).permutation(labels)  # the curve's nested samples (ab_curve.split_curve)
    rank = np.empty(len(labels), dtype=np.int64)
    rank[np.searchsorted(labels, order)] = np.arange(len(order))
    row_rank = rank[code.ravel()]
    for size in [*cfg.curve_sizes, None]:
        use = len(order) if size is None else min(size, len(order))
        rows = np.flatnonzero(row_rank < use)
        codes = np.unique(data.tests[rows], return_inverse=True)[1]
        ab_rows = ABFeatures(data.x[rows], codes, data.y[rows], data.n[rows], None, arm=data.arm[rows])
        for name, prior in priors.items():
            grounded = copy.deepcopy(log)
            grounded.reward = lambda X, _p=prior[rows]: _p  # the prior the grounding fits with
            info = ground_reward(grounded, data.log_x, ab_rows, family="binomial", cv=cfg.cv, seed=seed)
            del grounded.reward
            ROWS.append({"split": seed, "tests": "all" if size is None else size, "prior": name,
                         "accuracy": float(pair_correct(grounded.reward(data.eval_x), data.pairs).mean()),
                         "calibration_slope": info["calibration"]["slope"]})
    return []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400])
    args = ap.parse_args()
    demo.learning_curve_split = learning_curve_split
    demo.log_worth = lambda table: None  # no curve table is returned here
    cfg = demo.DemoConfig(candidates=CandidateConfig(stories=0), curve_sizes=tuple(args.sizes))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            demo.run_demo(Path(tmp) / "demo", cfg)
        except (KeyError, ValueError, TypeError, AttributeError):
            pass  # the demo's own curve table is empty here; the rows above are what is measured
    df = pd.DataFrame(ROWS)
    order = [*args.sizes, "all"]
    assert len(df) == cfg.splits * len(order) * 2, "a split did not finish: see the demo's error above"
    table = df.groupby(["tests", "prior"])[["accuracy", "calibration_slope"]].mean().unstack("prior")
    table = table.reindex(order)
    print("\nmean over the demo's 5 splits: log + tests accuracy on the held-out significant pairs and the log's "
          "calibration slope on the tests it is grounded on, with the log's reward in-sample on them (as shipped) "
          "or cross-fitted")
    print(table.round(4).to_string())
    diff = (table["calibration_slope"]["cross-fitted"] - table["calibration_slope"]["in-sample"])
    print("calibration slope, cross-fitted minus in-sample: " + ", ".join(f"{n}: {d:+.3f}" for n, d in diff.items()))


if __name__ == "__main__":
    main()
