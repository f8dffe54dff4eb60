"""The bundled Upworthy Research Archive (CC BY 4.0; see data/NOTICE) and its A/B ground truth.

Across tests, CTR is observational; within a test, headline packages were randomized. Tests
from ISO weeks 201326..201402 may not have been properly randomized (the archive's 2024
note) and are never used as experimental ground truth.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

UNRELIABLE_WEEKS = (201326, 201402)  # inclusive, YYYYWW


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


def significant_pairs(df: pd.DataFrame, z_min: float = 1.96) -> pd.DataFrame:
    """Within-test pairs of different headlines whose CTR difference is significant.

    Two-proportion z-test with the pooled rate. Returns positional indices ``i``, ``j`` into
    ``df`` (reset index), the test id, and ``sign`` = sign(ctr_i - ctr_j).
    """
    df = df.reset_index(drop=True)
    left = df[["test_id", "headline", "clicks", "impressions"]].assign(i=np.arange(len(df)))
    pairs = left.merge(left, on="test_id", suffixes=("_i", "_j"))
    pairs = pairs[(pairs["i_i"] < pairs["i_j"]) & (pairs["headline_i"] != pairs["headline_j"])]
    ci, ni = pairs["clicks_i"].to_numpy(float), pairs["impressions_i"].to_numpy(float)
    cj, nj = pairs["clicks_j"].to_numpy(float), pairs["impressions_j"].to_numpy(float)
    p = (ci + cj) / (ni + nj)
    se = np.sqrt(p * (1 - p) * (1 / ni + 1 / nj))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (ci / ni - cj / nj) / se, 0.0)
    keep = np.abs(z) > z_min
    return pd.DataFrame({
        "i": pairs["i_i"].to_numpy()[keep], "j": pairs["i_j"].to_numpy()[keep],
        "test_id": pairs["test_id"].to_numpy()[keep], "sign": np.sign(z[keep]),
    })
