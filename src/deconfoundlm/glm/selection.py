"""Choosing the text penalty by K-fold cross-validated deviance on the observational log, then
fitting on all rows.

Folds are assigned per row by a seeded hash of the row number
(:func:`~deconfoundlm.glm.folds.hash_folds`), the same in memory and on a cluster. Linear
additive heads (the default) are fitted from sufficient statistics along a warm-started penalty
path (:mod:`deconfoundlm.glm.path`), on every row of any size of log. MLP heads, the
confounder-input model and very wide confounder designs use scikit-learn's ``GridSearchCV`` over
L-BFGS / Adam fits; on logs over ``MAX_CV_ROWS`` rows they choose the penalty on a seeded
subsample and rescale it to the full log before the final fit (the loss is a per-row mean, so the
best penalty shrinks in proportion to 1 / n).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from deconfoundlm.glm.folds import HashFolds, hash_folds
from deconfoundlm.glm.model import AdditiveGLM, pack_features
from deconfoundlm.glm.path import InMemoryBlocks, eligible, fit_path, warn_unconverged

DEFAULT_ALPHAS = {"linear": tuple(np.logspace(-4, 1, 6)), "mlp": (1e-3, 1e-2, 1e-1)}


MAX_CV_ROWS = 100_000


def neg_deviance(estimator, X, y) -> float:
    """The scorer of every penalty search: minus the held-out mean deviance (greater is better,
    as scikit-learn's searches expect). Estimators expose ``deviance(X, y)``."""
    return -float(estimator.deviance(X, y))


def search_alpha(estimator, X, y, alphas, cv: int, seed: int) -> GridSearchCV:
    """``GridSearchCV`` over ``alpha`` on the hashed folds, refit on all of X."""
    search = GridSearchCV(estimator, {"alpha": list(alphas)}, cv=HashFolds(cv, seed), scoring=neg_deviance,
                          refit=True, error_score="raise")
    return search.fit(X, y)


def fit_cv(estimator: AdditiveGLM, phi: np.ndarray, psi: sp.spmatrix | None, y, alphas=None, cv: int = 5,
           seed: int = 0, max_cv_rows: int = MAX_CV_ROWS) -> tuple[AdditiveGLM, float, float]:
    """Choose ``alpha`` by K-fold cross-validated deviance on the observational log, then fit
    on all rows (see the module docstring). Returns (fitted model, alpha, CV deviance)."""
    alphas = alphas if alphas is not None else DEFAULT_ALPHAS[estimator.head]
    y = np.asarray(y, float)
    n_conf = 0 if psi is None else psi.shape[1]
    if eligible(estimator.head, estimator.interactions, n_conf):
        blocks = InMemoryBlocks(phi, psi, y, hash_folds(np.arange(len(phi)), cv, seed))
        fit = fit_path(blocks, estimator.family, alphas, cv, alpha_conf=estimator.alpha_conf)
        warn_unconverged(fit)
        return AdditiveGLM.from_path(fit, estimator.family, estimator.alpha_conf, estimator.seed), fit.alpha, \
            fit.cv_deviance
    if len(alphas) == 1:  # nothing to choose: one fit on all rows, no cross-validation
        return clone(estimator).set_params(alpha=alphas[0]).fit_arrays(phi, psi, y), alphas[0], float("nan")
    if len(phi) <= max_cv_rows:
        search = search_alpha(estimator, pack_features(phi, psi), y, alphas, cv, seed)
        return search.best_estimator_, search.best_params_["alpha"], -search.best_score_
    rows = np.sort(np.random.default_rng(seed).choice(len(phi), max_cv_rows, replace=False))
    sub = search_alpha(estimator, pack_features(phi[rows], None if psi is None else psi[rows]), y[rows],
                       alphas, cv, seed)
    alpha = sub.best_params_["alpha"] * max_cv_rows / len(phi)
    return clone(estimator).set_params(alpha=alpha).fit_arrays(phi, psi, y), alpha, -sub.best_score_
