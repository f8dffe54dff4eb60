"""Choosing the text penalty by K-fold cross-validated deviance on the observational log
(scikit-learn's ``GridSearchCV``), then refitting on all rows."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold

from deconfoundlm.rewards.glm import AdditiveGLM, pack_features

DEFAULT_ALPHAS = {"linear": tuple(np.logspace(-4, 1, 6)), "mlp": (1e-3, 1e-2, 1e-1)}


MAX_CV_ROWS = 100_000


def search_alpha(estimator, X, y, alphas, cv: int, seed: int) -> GridSearchCV:
    """``GridSearchCV`` over ``alpha`` with seeded shuffled K-fold, refit on all of X."""
    search = GridSearchCV(estimator, {"alpha": list(alphas)}, cv=KFold(cv, shuffle=True, random_state=seed),
                          refit=True, error_score="raise")
    return search.fit(X, y)


def fit_cv(estimator: AdditiveGLM, phi: np.ndarray, psi: sp.spmatrix | None, y, alphas=None, cv: int = 5,
           seed: int = 0, max_cv_rows: int = MAX_CV_ROWS) -> tuple[AdditiveGLM, float, float]:
    """Choose ``alpha`` by K-fold cross-validated deviance on the observational log, then fit
    on all rows. Logs larger than ``max_cv_rows`` choose alpha on a seeded subsample of that
    size and refit on everything without packing (bounded memory).

    Returns (fitted model, alpha, CV deviance)."""
    alphas = alphas if alphas is not None else DEFAULT_ALPHAS[estimator.head]
    y = np.asarray(y, float)
    if len(alphas) == 1:  # nothing to choose: one fit on all rows, no cross-validation
        return clone(estimator).set_params(alpha=alphas[0]).fit_arrays(phi, psi, y), alphas[0], float("nan")
    if len(phi) <= max_cv_rows:
        search = search_alpha(estimator, pack_features(phi, psi), y, alphas, cv, seed)
        return search.best_estimator_, search.best_params_["alpha"], -search.best_score_
    rows = np.sort(np.random.default_rng(seed).choice(len(phi), max_cv_rows, replace=False))
    sub = search_alpha(estimator, pack_features(phi[rows], None if psi is None else psi[rows]), y[rows],
                       alphas, cv, seed)
    alpha = sub.best_params_["alpha"]
    return clone(estimator).set_params(alpha=alpha).fit_arrays(phi, psi, y), alpha, -sub.best_score_
