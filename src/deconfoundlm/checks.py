"""Checks of option values shared by several commands (one place, one wording)."""

from __future__ import annotations

import numpy as np

from deconfoundlm.errors import UserError

MAX_SEED = 2**32 - 1


def check_seed(seed: int, flag: str = "--seed") -> int:
    """Seeds are integers in [0, 2**32 - 1] (what numpy and torch accept)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise UserError(f"{flag} {seed!r}: must be an integer from 0 to {MAX_SEED}")
    return int(seed)


def check_folds(cv: int, n_rows: int, flag: str = "--cv") -> None:
    """K-fold cross-validation needs at least 2 folds and 2 rows per fold."""
    if cv < 2:
        raise UserError(f"{flag} {cv}: cross-validation needs at least 2 folds")
    if cv > n_rows // 2:
        raise UserError(f"{flag} {cv}: too many folds for {n_rows} usable rows (at most {max(n_rows // 2, 2)})")
