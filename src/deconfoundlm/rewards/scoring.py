"""Scoring one table of texts with a fitted reward estimator: the loop body shared by ``score``
in memory (:func:`deconfoundlm.pipeline.score_file`, chunk by chunk) and on a Dask cluster
(:mod:`deconfoundlm.distributed.score`, partition by partition)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deconfoundlm.features.text import Encoder, encode_in_chunks
from deconfoundlm.logs.validate import check_text_column
from deconfoundlm.rewards.base import RewardEstimator


def score_frame(df: pd.DataFrame, text: str, features: Encoder, estimator: RewardEstimator, *, se: bool = False,
                chunk: int = 10_000, progress: bool = True) -> tuple[pd.DataFrame, int]:
    """``df`` with a float column ``reward`` (and ``reward_se`` with ``se``) and the number of rows
    whose text is missing (their reward is left empty). ``df`` itself is not modified."""
    check_text_column(df[text])
    out = df.copy()
    missing = out[text].isna().to_numpy()
    scores, ses = np.full(len(out), np.nan), np.full(len(out), np.nan)
    if (~missing).any():
        phi = encode_in_chunks(features, out.loc[~missing, text].astype(str).tolist(), chunk=chunk,
                               progress=progress)
        scores[~missing] = estimator.score(phi)
        if se:
            ses[~missing] = estimator.score_se(phi)
    out["reward"] = scores
    if se:
        out["reward_se"] = ses
    return out, int(missing.sum())
