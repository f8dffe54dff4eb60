"""The one fold scheme of the package: a seeded hash of each row's global row number.

Every cross-fit (the penalty path, the GridSearchCV fallback, partialling-out's nuisances, the
diagnostics) uses :func:`hash_folds`, so a log gives the same folds in memory and on a cluster,
however it is partitioned, with no shuffle and no gathering. :class:`HashFolds` is the same
scheme as a scikit-learn splitter.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _splitmix(rows: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of (global row number, seed): a uniform 64-bit hash per row."""
    with np.errstate(over="ignore"):
        x = np.asarray(rows, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def hash_folds(rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold (0..k-1, k at most 32,767) of each global row number: splitmix64 of (row, seed)
    modulo k."""
    if not 1 <= k <= np.iinfo(np.int16).max:
        raise ValueError(f"hash_folds: k={k} folds (1..32767)")
    return (_splitmix(rows, seed) % np.uint64(k)).astype(np.int16)


def hash_sample(rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whether each global row number is in a seeded sample of about ``fraction`` of the rows
    (the same rows however the log is partitioned)."""
    threshold = np.uint64(min(max(fraction, 0.0), 1.0) * float(2**53)) << np.uint64(11)
    picked = _splitmix(rows, seed) < threshold
    return picked | (fraction >= 1.0)


DIAGNOSTIC_ROWS = 50_000  # size of the seeded sample the diagnostics of a large log use


def diagnostic_sample(rows: np.ndarray, n_rows: int, size: int, seed: int) -> np.ndarray:
    """Whether each global row number of an ``n_rows``-row log is in the seeded diagnostic
    sample of about ``size`` rows: the same rows in memory and on a cluster."""
    return hash_sample(rows, size / max(n_rows, 1), seed + 7919)


class HashFolds:
    """A scikit-learn cross-validation splitter over :func:`hash_folds` (rows numbered 0..n-1).
    Empty folds are skipped."""

    def __init__(self, n_splits: int, seed: int = 0) -> None:
        self.n_splits, self.seed = int(n_splits), int(seed)

    def fold_of(self, n_rows: int) -> np.ndarray:
        return hash_folds(np.arange(n_rows), self.n_splits, self.seed)

    def split(self, X, y=None, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        fold = self.fold_of(X.shape[0])
        for f in range(self.n_splits):
            test = np.flatnonzero(fold == f)
            if len(test) and len(test) < len(fold):
                yield np.flatnonzero(fold != f), test

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits
