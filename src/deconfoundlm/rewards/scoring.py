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
                chunk: int = 10_000, progress: bool = True, at: pd.DataFrame | None = None) -> tuple[pd.DataFrame, int]:
    """``df`` with a float column ``reward`` (``reward_se`` with ``se``; ``predicted``, the predicted
    outcome under the one-row confounder setting ``at``) and the number of rows
    whose text is missing: they are scored as the empty text (every row keeps a finite reward, and
    the output keeps the input's rows). ``df`` itself is not modified."""
    check_text_column(df[text])
    out = df.copy()
    missing = out[text].isna().to_numpy()
    texts = out[text].astype(str).where(~missing, "").tolist()
    phi = encode_in_chunks(features, texts, chunk=chunk, progress=progress)
    out["reward"] = np.asarray(estimator.score(phi), dtype=float)
    if se:
        out["reward_se"] = np.asarray(estimator.score_se(phi), dtype=float)
    if at is not None:
        out["predicted"] = np.asarray(estimator.predict_outcome(phi, at), dtype=float)
    return out, int(missing.sum())
