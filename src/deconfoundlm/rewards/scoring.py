"""Scoring a table of texts with a saved reward model (reads and writes by extension)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from deconfoundlm.errors import UserError
from deconfoundlm.logs.tables import iter_table, table_columns, table_format
from deconfoundlm.logs.validate import DataWarning, check_text_column, require_columns
from deconfoundlm.outputs import TABLE_FILE, TableWriter, check_output
from deconfoundlm.rewards.reward import load_reward


def score_file(model_dir: str | Path, data: str | Path, *, text: str, out: str | Path,
               force: bool = False, chunksize: int = 100_000, se: bool = False, dask: str | None = None) -> int:
    """Write every input row and column plus a float column ``reward``; returns the row count.

    Reads, encodes, scores and writes chunk by chunk; the output appears only when complete.
    With ``dask`` (a scheduler address or ``local[:N]``) the partitions are scored on the
    cluster and ``out`` is a folder of Parquet files (:mod:`deconfoundlm.distributed.score`).
    """
    inputs = [data, model_dir]
    if dask is not None:
        return _score_on_cluster(model_dir, data, text=text, out=out, force=force, se=se, dask=dask, inputs=inputs)
    table_format(out)
    check_output(out, force, TABLE_FILE, inputs)
    columns = table_columns(data)
    require_columns(columns, [text], str(data))
    reward = load_reward(model_dir)
    if se and not reward.has_se:
        raise UserError(f"--se: {model_dir} has no standard errors (they exist for the linear heads of naive "
                        "and deconfound rewards)")
    if "reward" in columns:
        warnings.warn(f"{data}: existing column 'reward' is replaced", DataWarning, stacklevel=2)
    writer = TableWriter(out, force=force, inputs=inputs)
    n = n_missing = 0
    try:
        for df in tqdm(iter_table(data, chunksize=chunksize), desc="scoring", unit="chunk", disable=None):
            check_text_column(df[text])
            missing = df[text].isna().to_numpy()
            scores, ses = np.full(len(df), np.nan), np.full(len(df), np.nan)
            if (~missing).any():
                got = reward.score(df.loc[~missing, text].astype(str).tolist(), return_se=se)
                if se:
                    scores[~missing], ses[~missing] = got
                else:
                    scores[~missing] = got
            df["reward"] = scores.astype(float)
            if se:
                df["reward_se"] = ses
            writer.write(df)
            n, n_missing = n + len(df), n_missing + int(missing.sum())
    except BaseException:
        writer.abort()
        raise
    writer.close()
    if n_missing:
        warnings.warn(f"{n_missing} row(s) with a missing {text!r} get an empty reward", DataWarning, stacklevel=2)
    return n


def _score_on_cluster(model_dir, data, *, text: str, out, force: bool, se: bool, dask: str, inputs) -> int:
    from deconfoundlm.distributed.cluster import check_dask, dask_client
    from deconfoundlm.distributed.score import score_on_cluster
    from deconfoundlm.outputs import PARQUET_DIR

    check_dask(dask)
    if Path(out).suffix.lower() in (".csv", ".jsonl", ".json", ".parquet"):
        raise UserError(f"--out {out}: with --dask the scores are a folder of Parquet files; give a folder name")
    check_output(out, force, PARQUET_DIR, inputs)
    reward = load_reward(model_dir)
    if se and not reward.has_se:
        raise UserError(f"--se: {model_dir} has no standard errors (they exist for the linear heads of naive "
                        "and deconfound rewards)")
    with dask_client(dask) as client:
        return score_on_cluster(client, reward, data, text=text, out=out, force=force, inputs=inputs, se=se)
