"""Scoring a table of texts with a saved reward model (reads and writes by extension)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from deconfoundlm._io import check_output, read_table, table_columns, table_format, write_table
from deconfoundlm.data import DataWarning, require_columns
from deconfoundlm.pipeline import load_reward


def score_file(model_dir: str | Path, data: str | Path, *, text: str, out: str | Path,
               force: bool = False) -> int:
    """Write every input row and column plus a float column ``reward``; returns the row count."""
    table_format(out)
    check_output(out, force)
    reward = load_reward(model_dir)
    require_columns(table_columns(data), [text], str(data))
    df = read_table(data)
    if "reward" in df.columns:
        warnings.warn(f"{data}: existing column 'reward' is replaced", DataWarning, stacklevel=2)
    texts = df[text]
    missing = texts.isna()
    scores = np.full(len(df), np.nan)
    if (~missing).any():
        scores[~missing.to_numpy()] = reward.score(texts[~missing].astype(str).tolist())
    if missing.any():
        warnings.warn(f"{int(missing.sum())} row(s) with a missing {text!r} get an empty reward",
                      DataWarning, stacklevel=2)
    df["reward"] = scores.astype(float)
    write_table(df, out, force=force)
    return len(df)
