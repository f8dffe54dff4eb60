"""A simulated log with a known linear text effect and one confounder: the ground truth of the
solver's recovery tests, the standard-error coverage test and ``benchmarks/se_coverage.py``.

Five text features X; a confounder c ~ N(0, 1) shifts feature 0 (causal, entangled with c) and
feature 3 (no effect, spurious) and the outcome:

    eta = X . w + c,  w = (0.5, -0.3, 0.2, 0, 0)

gaussian: y = eta + N(0, 1); bernoulli: y ~ Bernoulli(logistic(eta)); binomial: 20-59 trials,
y ~ Binomial(trials, logistic(eta - 1)); poisson: 1-4 units of exposure read as ``trials``,
y ~ Poisson(trials exp(0.5 + 0.5 eta)) (the planted log-rate coefficients are then w / 2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TEXT_EFFECT = np.array([0.5, -0.3, 0.2, 0.0, 0.0])


def simulate_linear_log(family: str, n: int = 4000, seed: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray | None, np.ndarray]:
    """(X, y, confounders with column ``c``, trials or None, the planted text coefficients)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=n)
    X = rng.normal(size=(n, 5))
    X[:, 0] += 1.0 * c  # entangled: a causal feature drifts with c
    X[:, 3] += 1.0 * c  # spurious: no effect, but drifts with c
    w = TEXT_EFFECT.copy()
    eta = X @ w + 1.0 * c
    trials = None
    if family == "gaussian":
        y = eta + rng.normal(size=n)
    elif family == "poisson":
        trials = rng.integers(1, 5, size=n).astype(float)
        y = rng.poisson(trials * np.exp(0.5 + 0.5 * eta)).astype(float)
        w = 0.5 * w
    elif family == "bernoulli":
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    elif family == "binomial":
        trials = rng.integers(20, 60, size=n).astype(float)
        y = rng.binomial(trials.astype(int), 1 / (1 + np.exp(-(eta - 1.0)))).astype(float)
    else:
        raise ValueError(f"unknown family {family!r}")
    return X, y, pd.DataFrame({"c": c}), trials, w
