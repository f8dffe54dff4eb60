"""Benchmark (not a test): alternatives to the grounding of `fit-reward --ab`, each measured on the
demo's learning curve (MiniLM, the demo's 5 splits, held-out significant pairs) next to the
shipped model (the log's reward rescaled plus a ridge correction, its strength by 5-fold CV over
whole tests with the one-standard-error rule). None of them is shipped: the table of
``benchmarks/results/grounding_alternatives.txt`` says why.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/grounding_alternatives.py VARIANT [--sizes 50 100 200 400]

Variants (each changes the grounding; ``tests only`` changes too where it says so):

- ``williams``: extra-binomial variation (Williams 1982): each A/B row weighted by
  1 / (1 + (n - 1) phi), phi set so that the Pearson statistic of the tests' intercepts-only
  model (log + tests: intercepts and the rescaled log reward) equals its degrees of freedom.
  Both curves.
- ``evidence``: the strength that maximizes the Laplace approximation of the marginal likelihood
  (Gaussian prior on the correction, intercepts and scale flat; the binomial dispersion from the
  Pearson statistic of the rescaled log reward) instead of cross-validation. Log + tests only.
- ``pair-cv``: cross-validation scored by held-out pairwise agreement (significant pairs of the
  held-out folds, two-proportion z-test) instead of deviance; plain maximum. Log + tests only.
- ``subsample``: the CV choice bagged: 16 subsamples of 80% of the tests (without replacement),
  each grounded with its own CV, the corrections averaged (a linear reward again). Log + tests only.
- ``pooled``: no separate correction: one deconfounded fit on the log's rows and the A/B rows
  together (``fit_reward``, a categorical confounder with one level per test and one for the log,
  the week as before), scored as a fourth curve.
- ``log-penalty``: could the tests improve the log's reward by choosing its text penalty (chosen
  by the log's own cross-validated deviance)? The log's reward refitted at each of 13 penalties
  (1e-4 to 100), each scored alone (log only) and grounded on the same N tests as shipped; one
  row per log penalty.

About 1.5 (``williams``, ``evidence``), 2 (``pooled``, sizes 50 and 200), 3 (``log-penalty``) and 5
(``pair-cv``, ``subsample``) minutes on 2 CPUs with the embedding cache warm. Only the solver's public functions are used.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from deconfoundlm.evaluation import demo
from deconfoundlm.evaluation.candidates import CandidateConfig
from deconfoundlm.evaluation.evaluate import pair_correct
from deconfoundlm.glm import grounding as solver
from deconfoundlm.glm.families import get_family
from deconfoundlm.glm.folds import hash_folds
from deconfoundlm.logs import upworthy
from deconfoundlm.pipeline import fit_reward
from deconfoundlm.rewards import grounding

FIT = solver.fit_grounded
EXTRA: list[dict] = []  # the pooled curve's rows


def _fixed(rows, family, cv, seed, alpha):
    """The shipped fit at one strength (None: the log's reward rescaled)."""
    if alpha is None:
        return FIT(rows, family, cv=cv, seed=seed, alphas=())
    return FIT(rows, family, cv=cv, seed=seed, alphas=(alpha,), uncorrected=False)


# -- williams ------------------------------------------------------------------------------------
def _null_fit(rows, family):
    """eta = a_t (+ s * prior): the intercepts-only model of the rows (no text features), its
    linear predictor and residual degrees of freedom."""
    use_prior = rows.prior is not None
    bare = solver.ABRows(np.zeros((len(rows), 0)), rows.prior, rows.test, rows.y, rows.n, rows.w)
    fit = FIT(bare, family, alphas=() if use_prior else (1.0,)).fit
    eta = fit.intercepts[rows.test] + fit.text_effect(bare.x, bare.prior)
    return eta, len(rows) - rows.n_tests - int(use_prior)


def _pearson(rows, eta):
    mu = 1 / (1 + np.exp(-eta))
    return rows.w * (rows.y - rows.n * mu) ** 2 / (rows.n * mu * (1 - mu))


def williams(rows, family, **kw):
    rows = rows.informative(family)
    eta, df = _null_fit(rows, family)
    r2 = _pearson(rows, eta)
    excess = lambda phi: float(np.sum(r2 / (1 + (rows.n - 1) * phi))) - df  # noqa: E731
    lo, hi = 0.0, 1.0
    if excess(0.0) > 0:
        while excess(hi) > 0:
            hi *= 2
        for _ in range(60):
            lo, hi = ((lo + hi) / 2, hi) if excess((lo + hi) / 2) > 0 else (lo, (lo + hi) / 2)
    w = rows.w / (1 + (rows.n - 1) * (lo + hi) / 2 * (excess(0.0) > 0))
    return FIT(solver.ABRows(rows.x, rows.prior, rows.test, rows.y, rows.n, w), family, **kw)


# -- evidence --------------------------------------------------------------------------------------
def _log_evidence(rows, family, fit, k):
    """Laplace approximation (up to a constant) of the log marginal likelihood of the grounded
    model at ``fit``: the family's loss scaled by ``k`` (trials over dispersion), a Gaussian prior on
    the correction (the ridge), flat priors on the intercepts and the scale s."""
    fam = get_family(family)
    z = (rows.x - fit.mean) / fit.scale
    design = np.hstack([rows.prior[:, None], z]) if fit.alpha is not None else rows.prior[:, None]
    eta = fit.intercepts[rows.test] + fit.text_effect(rows.x, rows.prior)
    loss, _, d2 = fam.terms(eta, rows.y, rows.n)
    norm = fam.normaliser(float(rows.w.sum()), float(rows.w @ rows.n))
    curv = fam.curvature_of(rows.y, rows.n, rows.w)
    h = rows.w * d2 / norm
    d = np.bincount(rows.test, h, minlength=rows.n_tests)
    xbar = np.vstack([np.bincount(rows.test, h * c, minlength=rows.n_tests) for c in design.T]).T / d[:, None]
    xc = design - xbar[rows.test]
    schur = xc.T @ (h[:, None] * xc)
    obj = float(rows.w @ loss) / norm
    if fit.alpha is None:
        return -k * obj - 0.5 * np.linalg.slogdet(schur)[1] - 0.5 * np.log(d).sum()
    pen = np.diag(np.r_[0.0, np.full(z.shape[1], curv * fit.alpha)])
    obj += curv * fit.alpha * float(fit.beta @ fit.beta)
    return (-k * obj + 0.5 * z.shape[1] * np.log(2 * curv * fit.alpha)
            - 0.5 * np.linalg.slogdet(schur + 2 * pen)[1] - 0.5 * np.log(d).sum())


def evidence(rows, family, cv=5, seed=0, alphas=solver.ALPHAS, one_se=True, uncorrected=True):
    if rows.prior is None or len(alphas) <= 1:
        return FIT(rows, family, cv=cv, seed=seed, alphas=alphas, one_se=one_se, uncorrected=uncorrected)
    rows = rows.informative(family)
    eta, df = _null_fit(rows, family)
    phi = max(1.0, float(_pearson(rows, eta).sum()) / df)
    fam = get_family(family)
    k = fam.normaliser(float(rows.w.sum()), float(rows.w @ rows.n)) / phi
    fits = [_fixed(rows, family, 2, seed, a) for a in [None, *sorted(alphas, reverse=True)]]
    return fits[int(np.argmax([_log_evidence(rows, family, f.fit, k) for f in fits]))]


# -- pair-cv ---------------------------------------------------------------------------------------
def _pairs(rows):
    i, j = np.triu_indices(len(rows), 1)
    same = rows.test[i] == rows.test[j]
    i, j = i[same], j[same]
    pooled = (rows.y[i] + rows.y[j]) / (rows.n[i] + rows.n[j])
    se = np.sqrt(np.maximum(pooled * (1 - pooled) * (1 / rows.n[i] + 1 / rows.n[j]), 1e-300))
    z = (rows.y[i] / rows.n[i] - rows.y[j] / rows.n[j]) / se
    keep = np.abs(z) > 1.959964
    return i[keep], j[keep], np.sign(z[keep])


def pair_cv(rows, family, cv=5, seed=0, alphas=solver.ALPHAS, one_se=True, uncorrected=True):
    if rows.prior is None or len(alphas) <= 1:
        return FIT(rows, family, cv=cv, seed=seed, alphas=alphas, one_se=one_se, uncorrected=uncorrected)
    rows = rows.informative(family)
    grid = [None, *sorted(alphas, reverse=True)]
    k = max(2, min(cv, rows.n_tests))
    fold = hash_folds(np.arange(rows.n_tests), k, seed)[rows.test]
    score = np.zeros((k, len(grid)))
    for f in range(k):
        train, held = rows.subset(np.flatnonzero(fold != f)), rows.subset(np.flatnonzero(fold == f))
        i, j, sign = _pairs(held)
        for g, alpha in enumerate(grid):
            model = _fixed(train, family, 2, seed, alpha).fit  # one strength: its own CV chooses nothing
            agree = np.sign(np.diff(model.text_effect(held.x, held.prior)[np.c_[j, i]], axis=1).ravel()) * sign
            score[f, g] = float(((agree + 1) / 2).mean()) if len(i) else 0.5  # a tie counts one half
    return _fixed(rows, family, cv, seed, grid[int(np.argmax(score.mean(axis=0)))])


# -- subsample -------------------------------------------------------------------------------------
def subsample(rows, family, cv=5, seed=0, alphas=solver.ALPHAS, one_se=True, uncorrected=True, bags=16,
              share=0.8):
    full = FIT(rows, family, cv=cv, seed=seed, alphas=alphas, one_se=one_se, uncorrected=uncorrected)
    if rows.prior is None or len(alphas) <= 1:
        return full
    rows = rows.informative(family)
    rng = np.random.default_rng([seed, 99])
    scales, weights = [], []
    for b in range(bags):
        pick = rng.choice(rows.n_tests, int(round(share * rows.n_tests)), replace=False)
        fit = FIT(rows.subset(np.flatnonzero(np.isin(rows.test, pick))), family, cv=cv, seed=seed + b,
                  alphas=alphas, one_se=one_se, uncorrected=uncorrected).fit
        scales.append(fit.s)
        weights.append(fit.raw_weights())
    full.fit.s = float(np.mean(scales))
    full.fit.beta = np.mean(weights, axis=0) * full.fit.scale
    return full


# -- pooled ----------------------------------------------------------------------------------------
def pooled_split(sizes):
    learning_curve_split = demo.learning_curve_split

    def split(pk, enc, fits, obs, train_tests, arms, pairs, seed, cfg):
        out = learning_curve_split(pk, enc, fits, obs, train_tests, arms, pairs, seed, cfg)
        ab = pk[pk["test_id"].isin(train_tests) & upworthy.reliable(pk)].reset_index(drop=True)
        order = np.random.default_rng([seed, 17]).permutation(np.sort(ab["test_id"].unique()))
        held_x = enc.encode(arms["text"].astype(str).tolist()).astype(np.float64)
        for size in sizes:
            part = ab[ab["test_id"].isin(order[:size])].assign(source=lambda d: d["test_id"].astype(str))
            rows = pd.concat([obs.assign(source="log"), part], ignore_index=True)
            reward = fit_reward(rows, text="headline", outcome="clicks", trials="impressions",
                                confounders=("test_week:time", "source:categorical"), method="deconfound",
                                family="binomial", encoder=enc, seed=seed, cv=cfg.cv, diagnose=False, se=False,
                                params={"min_count": 1})
            EXTRA.append({"split": seed, "tests": size, "curve": "pooled",
                          "accuracy": float(pair_correct(reward.estimator.reward(held_x), pairs).mean())})
        return out

    return split


# -- log-penalty -----------------------------------------------------------------------------------
LOG_ALPHAS = tuple(float(a) for a in np.logspace(-4, 2, 13))


def log_penalty_split(sizes):
    def split(pk, enc, fits, obs, train_tests, arms, pairs, seed, cfg):
        ab = pk[pk["test_id"].isin(train_tests) & upworthy.reliable(pk)].reset_index(drop=True)
        x = grounding.ABFeatures(enc.encode(ab["headline"].astype(str).tolist()).astype(np.float64), ab["test_id"].to_numpy(),
                                 ab["clicks"].to_numpy(float), ab["impressions"].to_numpy(float),
                                 arm=np.unique(ab["headline"].astype(str).to_numpy(), return_inverse=True)[1])
        held_x = enc.encode(arms["text"].astype(str).tolist()).astype(np.float64)
        log_x = enc.encode(obs["headline"].astype(str).tolist()).astype(np.float64)
        order = np.random.default_rng([seed, 17]).permutation(np.sort(ab["test_id"].unique()))
        for alpha in LOG_ALPHAS:
            log = fit_reward(obs, text="headline", outcome="clicks", trials="impressions",
                             confounders=("test_week:time",), method="deconfound", family="binomial", encoder=enc,
                             seed=seed, cv=cfg.cv, diagnose=False, se=False, params={"alphas": (alpha,)}).estimator
            EXTRA.append({"split": seed, "log_alpha": alpha, "tests": "log only",
                          "accuracy": float(pair_correct(log.reward(held_x), pairs).mean())})
            for size in sizes:
                rows = np.flatnonzero(np.isin(x.test, order[:size]))
                part = grounding.ABFeatures(x.x[rows], np.unique(x.test[rows], return_inverse=True)[1], x.y[rows],
                                            x.n[rows], None, arm=x.arm[rows])
                grounded = copy.deepcopy(log)
                grounding.ground_reward(grounded, log_x, part, family="binomial", cv=cfg.cv, seed=seed)
                EXTRA.append({"split": seed, "log_alpha": alpha, "tests": f"log + {size} tests",
                              "accuracy": float(pair_correct(grounded.reward(held_x), pairs).mean())})
        print(f"split seed {seed}: the log's own CV chose {fits['deconfound'].estimator.alpha_:g}", flush=True)
        return []

    return split


VARIANTS = {"williams": williams, "evidence": evidence, "pair-cv": pair_cv, "subsample": subsample, "pooled": None,
            "log-penalty": None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400])
    args = ap.parse_args()
    if args.variant == "pooled":
        demo.learning_curve_split = pooled_split(args.sizes)
    elif args.variant == "log-penalty":
        demo.learning_curve_split = log_penalty_split(args.sizes)
    else:
        grounding.fit_grounded = VARIANTS[args.variant]
    cfg = demo.DemoConfig(candidates=CandidateConfig(stories=0), curve_sizes=tuple(args.sizes))
    with tempfile.TemporaryDirectory() as tmp:
        demo.run_demo(Path(tmp) / "demo", cfg)
        if args.variant == "log-penalty":  # one row per log penalty: its accuracy alone and grounded on N tests
            extra = pd.DataFrame(EXTRA)
            table = extra.groupby(["log_alpha", "tests"], sort=False)["accuracy"].mean().unstack("tests")
        else:
            per_split = pd.read_csv(Path(tmp) / "demo" / "learning_curve_per_split.csv")
            per_split = pd.concat([per_split[per_split["tests"].isin(args.sizes) & ~per_split["all"]],
                                   pd.DataFrame(EXTRA)])
            table = per_split.groupby(["tests", "curve"])["accuracy"].mean().unstack("curve")
    print(f"\n{args.variant}: mean pairwise accuracy over the demo's 5 splits (held-out significant pairs)")
    print(table.round(4).to_string())


if __name__ == "__main__":
    main()
