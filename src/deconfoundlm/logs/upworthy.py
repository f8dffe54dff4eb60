"""The bundled Upworthy Research Archive (CC BY 4.0; see data/NOTICE) and its A/B ground truth.

Across tests, CTR is observational; within a test, headline packages were randomized. Tests
from ISO weeks 201326..201402 may not have been properly randomized (the archive's 2024
note) and are never used as experimental ground truth.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd
from scipy import stats

UNRELIABLE_WEEKS = (201326, 201402)  # inclusive, YYYYWW
# The ground-truth pairs of the Upworthy checks: two-proportion |z| > 1.96 (as a level for
# deconfoundlm.evaluation.evaluate.significant_pairs).
PAIR_ALPHA = float(2 * stats.norm.sf(1.96))


def packages_path():
    """The bundled parquet file (original column names, e.g. ``clickability_test_id``)."""
    return resources.files("deconfoundlm") / "assets" / "upworthy" / "upworthy_exploratory_packages.parquet"


def load_packages() -> pd.DataFrame:
    """All 22,666 exploratory packages (one row per headline package in an A/B test)."""
    with resources.as_file(packages_path()) as p:
        df = pd.read_parquet(p)
    return df.rename(columns={"clickability_test_id": "test_id"}).reset_index(drop=True)


def reliable(df: pd.DataFrame) -> pd.Series:
    """Rows whose test may serve as randomized ground truth."""
    lo, hi = UNRELIABLE_WEEKS
    return ~df["test_week"].between(lo, hi)
