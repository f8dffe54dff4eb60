"""Diagnostics of the confounding in a log (all cross-validated, seeded).

- confounder strength: share of outcome deviance explained by the confounders alone;
- entanglement: cross-validated R^2 of predicting each confounder from the text embedding
  (for a categorical confounder, of its most frequent levels' indicators);
- overlap: share of the embedding's variance left within confounder strata.

Cross-validated shares and R^2 below 0 (the held-out prediction is worse than the mean) are
reported as 0: no detectable explanatory power. Below ``MIN_ROWS`` rows nothing is estimated
(the value is None and a note says why): held-out estimates on a few dozen rows are noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from deconfoundlm.glm.crossfit import confounder_offset, residualize
from deconfoundlm.glm.families import get_family
from deconfoundlm.glm.folds import hash_folds
from deconfoundlm.glm.targets import unpack
from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.logs.values import hour_values, time_values, weekday_values

MIN_ROWS = 100


def too_few_rows(n: int) -> str:
    return (f"diagnostics not estimated: {n} rows are too few for cross-validated estimates "
            f"(need at least {MIN_ROWS})")


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation, or None when it is undefined (a constant input)."""
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    r = float(np.corrcoef(a, b)[0, 1])
    return r if np.isfinite(r) else None


def confounder_deviance_share(family: str, psi: sp.spmatrix, targets: np.ndarray,
                              cv: int = 5, seed: int = 0) -> float:
    """1 - deviance(confounders only, cross-fitted) / deviance(intercept only)."""
    eta = confounder_offset(family, psi, targets, cv, seed)
    y, n, w, _ = unpack(targets)
    fam = get_family(family)
    null = fam.deviance(np.full(len(y), fam.null_eta_of(y, n, w)), y, n, w)
    if not null > 0:
        return 0.0
    share = 1.0 - fam.deviance(eta, y, n, w) / null
    return float(np.clip(share, 0.0, 1.0)) if np.isfinite(share) else 0.0


def _confounder_target(col: pd.Series, spec: ConfounderSpec, max_levels: int = 20) -> np.ndarray:
    if spec.type == "numeric":
        return pd.to_numeric(col).to_numpy(float)[:, None]
    if spec.type == "time":
        return time_values(col)[:, None]
    if spec.type == "hour":
        angle = 2 * np.pi * hour_values(col) / 24
        return np.column_stack([np.sin(angle), np.cos(angle)])
    if spec.type == "weekday":
        days = weekday_values(col)
        return np.column_stack([(days == d).astype(float) for d in range(7)])
    top = col.astype(str).value_counts().index[:max_levels]
    return np.column_stack([(col.astype(str) == lv).to_numpy(float) for lv in top])


ENTANGLEMENT_ALPHAS = tuple(np.logspace(-2, 3, 6))


def entanglement(phi: np.ndarray, confounders: pd.DataFrame, specs, cv: int = 5,
                 seed: int = 0) -> dict[str, float]:
    """Cross-validated R^2 of each confounder from the text embedding (0 = not entangled).

    Ridge regression on the hashed folds of the fit (:func:`~deconfoundlm.glm.folds.hash_folds`);
    each outer fold's penalty is chosen by an inner cross-validation over the other folds. All of
    it comes from per-fold Gram matrices of [phi, targets], one pass over the rows."""
    targets = [_confounder_target(confounders[spec.column], spec) for spec in specs]
    widths = [t.shape[1] for t in targets]
    y = np.hstack(targets)
    x = np.asarray(phi, dtype=np.float64)
    fold = hash_folds(np.arange(len(x)), cv, seed)
    z = np.hstack([np.ones((len(x), 1)), x - x.mean(0), y - y.mean(0)])
    grams = np.stack([z[fold == f].T @ z[fold == f] for f in range(cv)])
    d = x.shape[1]
    present = [f for f in range(cv) if grams[f][0, 0] > 0]

    fits: dict[tuple[int, ...], tuple | None] = {}

    def ridge(train: list[int]) -> tuple | None:
        """A training set's centered, scaled normal equations in the eigenbasis: one
        decomposition serves every penalty (b = V (L + alpha)^-1 V' xy)."""
        key = tuple(train)
        if key not in fits:
            g = grams[train].sum(0)
            n = g[0, 0]
            if n < 2:
                fits[key] = None
            else:
                # Center on the training rows: the intercept is not penalized.
                mean = g[0, 1:] / n
                c = g[1:, 1:] - n * np.outer(mean, mean)
                xx, xy = c[:d, :d], c[:d, d:]
                scale = np.sqrt(np.maximum(np.diag(xx) / n, 1e-12))
                lam, vec = np.linalg.eigh(xx / np.outer(scale, scale))
                fits[key] = (mean, scale, np.maximum(lam, 0.0), vec, vec.T @ (xy / scale[:, None]))
        return fits[key]

    def sse(train: list[int], test: int, alpha: float) -> np.ndarray:
        fit = ridge(train)
        if fit is None:
            return np.full(y.shape[1], np.nan)
        mean, scale, lam, vec, proj = fit
        b = (vec @ (proj / (lam + alpha)[:, None])) / scale[:, None]
        h = grams[test]
        m = h[0, 0]
        # sum over the test rows of (y - mu_y - (x - mu_x) b)^2, per target column
        s1 = h[0, 1:]
        q = h[1:, 1:] - np.outer(s1, mean) - np.outer(mean, s1) + m * np.outer(mean, mean)
        qxx, qxy, qyy = q[:d, :d], q[:d, d:], q[d:, d:]
        return np.diag(qyy) - 2 * np.einsum("ij,ij->j", b, qxy) + np.einsum("ij,ik,kj->j", b, qxx, b)

    total = np.zeros(y.shape[1])
    for k in present:
        others = [f for f in present if f != k]
        inner = []
        for alpha in ENTANGLEMENT_ALPHAS:
            errs = [sse([f for f in others if f != j], j, alpha) for j in others]
            inner.append(np.nansum(errs, axis=0))
        best = np.argmin(np.stack(inner), axis=0)  # per target column, as RidgeCV does
        outer = np.stack([sse(others, k, a) for a in ENTANGLEMENT_ALPHAS])
        total += outer[best, np.arange(y.shape[1])]
    sst = ((y - y.mean(0)) ** 2).sum(0)
    out, start = {}, 0
    for spec, width in zip(specs, widths, strict=True):
        cols = slice(start, start + width)
        start += width
        denom = sst[cols].sum()
        r2 = 1.0 - total[cols].sum() / denom if denom > 0 else 0.0
        out[spec.column] = float(np.clip(r2, 0.0, 1.0)) if np.isfinite(r2) else 0.0
    return out


def overlap(phi: np.ndarray, psi: sp.spmatrix, cv: int = 5, seed: int = 0) -> float:
    """Share of the embedding's total variance not predictable from the confounders.

    Near 1: texts vary freely within confounder strata (good overlap); near 0: the
    confounders determine the text and its effect cannot be separated from theirs.
    """
    # A narrow design is solved dense (one Cholesky for every embedding column at once); a wide
    # sparse one (thousands of levels) iteratively.
    x = psi.toarray() if sp.issparse(psi) and psi.shape[1] <= 512 else psi
    res = residualize(phi, x, cv, seed)
    total = float(np.sum((phi - phi.mean(0)) ** 2))
    # Cross-fitted residuals can slightly exceed the total variance by chance: clip to [0, 1].
    return float(np.clip(np.sum(res**2) / total, 0.0, 1.0)) if total > 0 else 0.0


def confounded_ngrams(texts: list[str], naive: np.ndarray, deconfounded: np.ndarray, min_count: int = 20,
                      top: int = 15, z: float = 1.96) -> list[dict]:
    """Words / bigrams whose naive reward comes mostly from the confounder.

    For each n-gram: its effect under a reward = mean reward of texts with it minus without.
    The confounder's part is naive effect - deconfounded effect = the same contrast of
    d = r_naive - r_deconfounded, with a Welch standard error over texts (given the fitted
    rewards; it does not include the rewards' own estimation error). Listed when the part is
    distinguishable from zero (|part| > z SE) and larger in size than the deconfounded effect,
    largest first.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    if len(texts) < 2 * min_count:
        return []
    vec = CountVectorizer(ngram_range=(1, 2), min_df=min_count, binary=True, lowercase=True,
                          token_pattern=r"(?u)\b\w+\b")
    try:
        x = vec.fit_transform(texts).tocsc()
    except ValueError:  # no n-gram frequent enough
        return []
    naive, deconfounded = np.asarray(naive, float), np.asarray(deconfounded, float)
    d = naive - deconfounded
    n = len(texts)
    n_with = np.asarray(x.sum(0)).ravel()
    keep = (n_with >= min_count) & (n_with <= n - min_count)
    cols = np.flatnonzero(keep)
    if not len(cols):
        return []
    # Sums over texts with each n-gram, for all n-grams at once (sparse products).
    xk = x[:, cols]
    k = n_with[cols].astype(float)
    def contrast(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s_with = np.asarray(xk.T @ v).ravel()
        q_with = np.asarray(xk.T @ (v * v)).ravel()
        m1, m0 = s_with / k, (v.sum() - s_with) / (n - k)
        v1 = np.maximum(q_with / k - m1**2, 0) * k / np.maximum(k - 1, 1)
        v0 = np.maximum(((v * v).sum() - q_with) / (n - k) - m0**2, 0) * (n - k) / np.maximum(n - k - 1, 1)
        return m1 - m0, v1 / k + v0 / (n - k), m1
    e_naive = contrast(naive)[0]
    e_dec = contrast(deconfounded)[0]
    part, var, _ = contrast(d)
    se = np.sqrt(var)
    names = vec.get_feature_names_out()[cols]
    rows = []
    for j in np.flatnonzero((np.abs(part) > z * se) & (np.abs(part) > np.abs(e_dec))):
        rows.append({"ngram": str(names[j]), "count": int(k[j]), "naive_effect": float(e_naive[j]),
                     "deconfounded_effect": float(e_dec[j]), "confounder_part": float(part[j]),
                     "confounder_part_se": float(se[j])})
    rows.sort(key=lambda r: -abs(r["confounder_part"]))
    return rows[:top]


NGRAMS_MIN_SHARE = 0.01  # below this confounder deviance share the word list would be noise


def plain_warnings(report: dict) -> list[str]:
    """Warnings in plain words for the numbers that call for them."""
    out = []
    if report.get("confounder_deviance_share") is None:
        return [report.get("note") or too_few_rows(report.get("rows", 0))]
    if report["confounder_deviance_share"] < 0.01:
        out.append("The confounders explain almost none of the outcome (under 1% of deviance): "
                   "deconfounding will change little; check that the right confounders were given.")
    if report["overlap"] < 0.2:
        out.append(f"Poor overlap: only {report['overlap']:.0%} of the text embedding's variance is left "
                   "within confounder strata; the text effect is hard to separate from the confounders'.")
    for col, r2 in report["entanglement_r2"].items():
        if r2 > 0.3:
            out.append(f"Strong entanglement: the text predicts confounder {col!r} with CV R^2 {r2:.2f}; "
                       "invariance methods (odin, crm) would delete real signal here.")
    if report.get("reward_correlation") is None:
        out.append("The naive and deconfounded rewards cannot be compared: one of them is constant "
                   "(no text signal was found).")
    elif report["reward_correlation"] < 0.5:
        out.append(f"Naive and deconfounded rewards disagree (correlation {report['reward_correlation']:.2f}): "
                   "a naive reward would learn a lot from the confounders.")
    return out
