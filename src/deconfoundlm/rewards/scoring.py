"""Scoring one table of texts with a fitted reward estimator: the loop body shared by ``score``
in memory (:func:`deconfoundlm.pipeline.score_file`, chunk by chunk) and on a Dask cluster
(:mod:`deconfoundlm.distributed.score`, partition by partition)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from deconfoundlm.errors import DataWarning
from deconfoundlm.features.text import Encoder, encode_in_chunks
from deconfoundlm.logs.validate import check_text_column
from deconfoundlm.rewards.base import RewardEstimator


def text_list(texts: Sequence, what: str = "Reward.score") -> list[str]:
    """The texts of an API call as strings: one string is refused (it would be scored character by
    character); a missing text (None, NaN) is scored as the empty text, with a warning that says
    how many, as ``deconfoundlm score`` does for missing cells."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} takes a list of texts, not one string: use {what}([text])")
    out, missing = [], 0
    for t in texts:
        if t is None or (isinstance(t, float) and t != t) or t is pd.NA or t is pd.NaT:
            missing += 1
            out.append("")
        else:
            out.append(t if isinstance(t, str) else str(t))
    if missing:
        warnings.warn(f"{what}: {missing} missing text(s) (None or NaN) scored as the empty text", DataWarning,
                      stacklevel=3)
    return out


def score_frame(df: pd.DataFrame, text: str, features: Encoder, estimator: RewardEstimator, *, se: bool = False,
                chunk: int = 10_000, progress: bool = True, at: pd.DataFrame | None = None) -> tuple[pd.DataFrame, int]:
    """``df`` with a float column ``reward`` (``reward_se`` with ``se``; ``predicted``, the predicted
    outcome under the one-row confounder setting ``at``) and the number of rows
    whose text is missing: they are scored as the empty text (every row keeps a finite reward, and
    the output keeps the input's rows). ``df`` itself is not modified."""
    check_text_column(df[text])
    out = df.copy()
    if not len(out):  # an empty table scores to an empty table (as the API and the server answer [])
        for col in ("reward", *(["reward_se"] if se else []), *(["predicted"] if at is not None else [])):
            out[col] = np.zeros(0, dtype=float)
        return out, 0
    missing = out[text].isna().to_numpy()
    texts = out[text].astype(str).where(~missing, "").tolist()
    phi = encode_in_chunks(features, texts, chunk=chunk, progress=progress)
    out["reward"] = np.asarray(estimator.reward(phi), dtype=float)
    if se:
        out["reward_se"] = np.asarray(estimator.reward_se(phi), dtype=float)
    if at is not None:
        out["predicted"] = np.asarray(estimator.predict_outcome(phi, at), dtype=float)
    return out, int(missing.sum())
