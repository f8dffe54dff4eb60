"""A GLM's targets, by name: the outcome, the trials (or exposure), the sample weight and the
offset of each row. The solvers keep them as one float array of four columns, so that
cross-validation slices rows of X and y together (scikit-learn's ``fit(X, y)``); code reads and
writes the columns through :func:`unpack` and the named column indices, never by position."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

OUTCOME, TRIALS, WEIGHT, OFFSET = range(4)


class Targets(NamedTuple):
    """Views of the four columns of a packed targets array."""

    outcome: np.ndarray
    trials: np.ndarray
    weight: np.ndarray
    offset: np.ndarray


def pack_targets(y, trials=None, weights=None, offset=None) -> np.ndarray:
    """The (n, 4) targets array: ``y``; trials, weights (None: ones); offset (None: zeros)."""
    n = len(y)
    ones = np.ones(n)
    return np.column_stack([
        np.asarray(y, float),
        ones if trials is None else np.asarray(trials, float),
        ones if weights is None else np.asarray(weights, float),
        np.zeros(n) if offset is None else np.asarray(offset, float),
    ])


def unpack(targets: np.ndarray) -> Targets:
    """The named columns of a packed targets array (views: writing one writes the array)."""
    return Targets(targets[:, OUTCOME], targets[:, TRIALS], targets[:, WEIGHT], targets[:, OFFSET])
