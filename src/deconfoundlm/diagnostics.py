"""Diagnostics of the confounding in a log (all cross-validated, seeded).

- confounder strength: share of outcome deviance explained by the confounders alone;
- entanglement: cross-validated R^2 of predicting each confounder from the text embedding
  (for a categorical confounder, of its most frequent levels' indicators);
- overlap: share of the embedding's variance left within confounder strata.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_predict

from deconfoundlm import families
from deconfoundlm.confounders import time_values
from deconfoundlm.data import ConfounderSpec
from deconfoundlm.glm import AdditiveGLM


def confounder_deviance_share(family: str, psi: sp.spmatrix, targets: np.ndarray,
                              cv: int = 5, seed: int = 0) -> float:
    """1 - deviance(confounders only, cross-fitted) / deviance(intercept only)."""
    folds = KFold(cv, shuffle=True, random_state=seed)
    eta = cross_val_predict(AdditiveGLM(family, n_text=0, seed=seed), psi, targets, cv=folds)
    y, n, w = targets[:, 0], targets[:, 1], targets[:, 2]
    null = families.deviance(family, np.full(len(y), families.null_eta(family, y, n, w)), y, n, w)
    return float(1.0 - families.deviance(family, eta, y, n, w) / null) if null > 0 else 0.0


def _confounder_target(col: pd.Series, spec: ConfounderSpec, max_levels: int = 20) -> np.ndarray:
    if spec.type == "numeric":
        return pd.to_numeric(col).to_numpy(float)[:, None]
    if spec.type == "time":
        return time_values(col)[:, None]
    top = col.astype(str).value_counts().index[:max_levels]
    return np.column_stack([(col.astype(str) == lv).to_numpy(float) for lv in top])


def entanglement(phi: np.ndarray, confounders: pd.DataFrame, specs, cv: int = 5,
                 seed: int = 0) -> dict[str, float]:
    """Cross-validated R^2 of each confounder from the text embedding (0 = not entangled)."""
    folds = KFold(cv, shuffle=True, random_state=seed)
    out = {}
    for spec in specs:
        target = _confounder_target(confounders[spec.column], spec)
        pred = cross_val_predict(RidgeCV(alphas=np.logspace(-2, 3, 6)), phi, target, cv=folds)
        out[spec.column] = float(r2_score(target, pred, multioutput="variance_weighted"))
    return out


def overlap(phi: np.ndarray, psi: sp.spmatrix, cv: int = 5, seed: int = 0) -> float:
    """Share of the embedding's total variance not predictable from the confounders.

    Near 1: texts vary freely within confounder strata (good overlap); near 0: the
    confounders determine the text and its effect cannot be separated from theirs.
    """
    folds = KFold(cv, shuffle=True, random_state=seed)
    res = phi - cross_val_predict(Ridge(alpha=1e-2), psi, phi, cv=folds)
    total = float(np.sum((phi - phi.mean(0)) ** 2))
    return float(np.sum(res**2) / total) if total > 0 else 0.0
