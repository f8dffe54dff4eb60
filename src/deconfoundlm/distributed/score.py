"""``score --dask``: every partition scored on the workers and written as partitioned Parquet
(the input's columns plus ``reward``, and ``reward_se`` with ``--se``), atomically: the output
folder appears only when every partition is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from deconfoundlm.configs import ScoreConfig
from deconfoundlm.errors import UserError
from deconfoundlm.rewards.scoring import score_frame


def _score_partition(pdf: pd.DataFrame, reward, text: str, se: bool, at: pd.DataFrame | None) -> pd.DataFrame:
    from deconfoundlm.distributed.logs import worker_encoder

    scored, _ = score_frame(pdf, text, reward.worker_features(worker_encoder), reward.estimator, se=se,
                            progress=False, at=at)
    return scored


def score_on_cluster(client: Any, reward, data: str | Path, cfg: ScoreConfig, inputs: list,
                     at: pd.DataFrame | None = None) -> int:
    """Score ``data`` with a loaded reward on the cluster into the Parquet folder ``cfg.out``
    (``at``: the confounder setting of ``predicted``, from :meth:`Reward.setting`)."""
    text, out, force, se = cfg.text, cfg.out, cfg.force, cfg.se
    import dask.dataframe as dd  # noqa: F401 - registers the Parquet engine

    from deconfoundlm.distributed.logs import csv_types, read_frame, typed_block
    from deconfoundlm.logs.tables import has_rows, iter_table, table_columns
    from deconfoundlm.outputs import PARQUET_DIR, PARQUET_MARKER, atomic_directory, write_marker

    if not has_rows(data):  # no partition to score: one empty part with the columns, as in memory
        empty = next(iter_table(data), None)
        if empty is None or text not in empty.columns:
            empty = pd.DataFrame({c: pd.Series(dtype=object) for c in table_columns(data)})
        if text not in empty.columns:
            raise UserError(f"{data}: column {text!r} not found; available columns: "
                            + ", ".join(map(str, empty.columns)))
        scored, _ = score_frame(empty, text, reward.features, reward.estimator, se=se, at=at)
        with atomic_directory(out, force=force, kind=PARQUET_DIR, inputs=inputs) as tmp:
            scored.to_parquet(tmp / "part.0.parquet", index=False)
            write_marker(tmp, "deconfoundlm-scores", name=PARQUET_MARKER, rows=0)
        return 0
    ddf = read_frame(data, table_columns(data))
    if text not in ddf.columns:
        raise UserError(f"{data}: column {text!r} not found; available columns: " + ", ".join(map(str, ddf.columns)))
    types = csv_types(client, str(data), ddf)
    if types is not None:  # a CSV: its numbers written as numbers, as in memory
        types = {c: types.get(c, "object") for c in ddf.columns}  # a header-only CSV has no typed block
        ddf = ddf.map_partitions(typed_block, types, text_as_str=True, meta={c: types[c] for c in ddf.columns})
    meta = {**ddf.dtypes.to_dict(), "reward": "f8", **({"reward_se": "f8"} if se else {}),
            **({"predicted": "f8"} if at is not None else {})}
    scored = ddf.map_partitions(_score_partition, reward.for_workers(), text, se, at, meta=meta)
    with atomic_directory(out, force=force, kind=PARQUET_DIR, inputs=inputs) as tmp:
        scored.to_parquet(tmp, write_index=False, write_metadata_file=False, compute=True)
        n = parquet_rows(tmp)
        write_marker(tmp, "deconfoundlm-scores", name=PARQUET_MARKER, rows=n)
    return n


def parquet_rows(folder: Path) -> int:
    """Rows written (from the Parquet footers; nothing is read back)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(folder.glob("*.parquet")))
