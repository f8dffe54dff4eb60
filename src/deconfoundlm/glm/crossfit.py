"""Cross-fitted nuisances on the package's one fold scheme (:class:`~deconfoundlm.glm.folds.HashFolds`).

- :func:`confounder_offset`: the outcome's link-scale prediction from the confounder design
  alone, each row predicted by a model that did not see it (partialling-out's outcome nuisance,
  and the confounder strength of the diagnostics);
- :func:`residualize`: features minus their cross-fitted ridge prediction from the confounders
  (partialling-out's treatment nuisance, and the diagnostics' overlap).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import Ridge
from sklearn.model_selection import cross_val_predict

from deconfoundlm.glm.folds import HashFolds
from deconfoundlm.glm.model import AdditiveGLM

RESIDUALIZE_ALPHA = 1e-2


def confounder_offset(family: str, psi: sp.spmatrix, targets: np.ndarray, cv: int, seed: int) -> np.ndarray:
    """eta^(c) per row from a confounder-only GLM fitted outside the row's fold."""
    return cross_val_predict(AdditiveGLM(family, n_text=0, seed=seed), psi, targets, cv=HashFolds(cv, seed))


def residualize(X: np.ndarray, psi: sp.spmatrix | np.ndarray, cv: int, seed: int,
                alpha: float = RESIDUALIZE_ALPHA) -> np.ndarray:
    """X - E^[X | c], with E^[X | c] a ridge on the design cross-fitted on the hashed folds."""
    return X - cross_val_predict(Ridge(alpha=alpha), psi, X, cv=HashFolds(cv, seed))
