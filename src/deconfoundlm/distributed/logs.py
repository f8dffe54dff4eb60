"""A log spread over a Dask cluster: read, validated, encoded and turned into solver blocks
partition by partition on the workers. The client holds only per-partition summaries (the
confounder design is fitted from merged summaries, exactly as in memory) and, for diagnostics, a
bounded seeded sample; text embeddings stay on the workers (spilled to their disks by Dask when
memory is short).

Rows keep the log's order (partitions in file order, rows in partition order), so each row's
global number, and with it its cross-validation fold, is the same as in memory.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deconfoundlm.errors import UserError
from deconfoundlm.glm.families import auto_family, check_log_family, get_family, is_binary, is_count
from deconfoundlm.glm.folds import diagnostic_sample, hash_folds
from deconfoundlm.glm.path import Block, add_results
from deconfoundlm.glm.targets import pack_targets
from deconfoundlm.logs.roles import ColumnRoles
from deconfoundlm.logs.validate import ObservationalLog, no_rows_left, validate_log, warn_drop
from deconfoundlm.options import label
from deconfoundlm.progress import disable

_encoders: dict[str, Any] = {}  # per worker process: each model is loaded once


def _register_sizes() -> None:
    """Tell Dask how large our objects are: it spills by these sizes, and an object it cannot
    measure counts as a few bytes (never spilled) and ends as unmanaged memory."""
    from dask.sizeof import sizeof

    @sizeof.register(Block)
    def _block_size(b: Block) -> int:
        return int(sum(x.nbytes for x in (b.phi, b.psi, b.targets, b.fold) if x is not None))

    @sizeof.register(ObservationalLog)
    def _log_size(log: ObservationalLog) -> int:
        texts = sum(len(t) for t in log.texts) + 56 * len(log.texts)
        arrays = sum(x.nbytes for x in (log.outcome, log.trials, log.weights) if x is not None)
        return int(texts + arrays + sizeof(log.frame) + sizeof(log.confounders))


_register_sizes()


# -- reading ----------------------------------------------------------------------------------
CSV_BLOCK_BYTES = 2**26  # a CSV or JSONL file is split into blocks of about this size


def read_frame(data: str | Path, columns: list[str]) -> Any:
    """A Dask DataFrame of ``columns`` from a Parquet file, a directory or glob of Parquet files,
    or one CSV / JSONL file (read in blocks). Missing columns: a UserError listing the others."""
    import dask.dataframe as dd

    from deconfoundlm.logs.tables import (
        check_parquet_parts,
        parquet_parts,
        table_columns,
        table_format,
    )
    from deconfoundlm.logs.validate import require_columns

    data = str(data)
    files = parquet_parts(data)
    try:
        if files is not None:

            # Every part readable and holding the first part's columns (one pass over the footers).
            require_columns(check_parquet_parts(files), columns, data)
            return dd.read_parquet(files, columns=columns)
        if Path(data).is_dir() or any(ch in data for ch in "*?["):
            raise UserError(f"{data}: no Parquet files found (a directory or glob given to {label('dask')} must hold "
                            "*.parquet files)")
        fmt = table_format(data)
        require_columns(table_columns(data), columns, data)
        if fmt == "parquet":
            return dd.read_parquet(data, columns=columns, split_row_groups=True)
        if fmt == "csv":
            return dd.read_csv(data, usecols=columns, dtype=object, blocksize=CSV_BLOCK_BYTES, keep_default_na=True)
        return dd.read_json(data, lines=True, blocksize=CSV_BLOCK_BYTES)[columns]
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt or unreadable file
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{data}: cannot be read as a table ({first})") from None


# -- on the workers ---------------------------------------------------------------------------
def _recorded(fn, *args, **kwargs) -> tuple[Any, list[str], str | None]:
    """Run ``fn`` on a worker: (result, warning messages, the UserError's message or None)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn(*args, **kwargs)
        except UserError as exc:
            return None, [str(w.message) for w in caught], str(exc)
    return result, [str(w.message) for w in caught], None


# -- CSV column types -------------------------------------------------------------------------
# A CSV is read as text on the cluster (a block's guessed types could contradict another's). In
# memory, pandas infers each 100,000-row chunk's column types and concatenation unifies them
# (int with float: float; anything with text: object); the same happens here per block, so a
# column of week codes stays numeric and a float column's levels read "1.0" on both paths.
def _reparsed(pdf: pd.DataFrame) -> pd.DataFrame:
    """A text block parsed by pandas' own CSV type inference (as ``pd.read_csv`` would)."""
    import io

    return pd.read_csv(io.StringIO(pdf.to_csv(index=False)))


def _csv_types(pdf: pd.DataFrame) -> dict[str, str] | None:
    return {c: str(t) for c, t in _reparsed(pdf).dtypes.items()} if len(pdf) else None  # empty: no evidence


def _unify_types(types: list[dict[str, str] | None]) -> dict[str, str]:
    """The column types of the blocks concatenated (pandas' rules for int64 / float64 / bool /
    object)."""
    out: dict[str, str] = {}
    types = [t for t in types if t is not None]
    for col in types[0] if types else []:
        seen = {t[col] for t in types}
        if len(seen) == 1:
            out[col] = seen.pop()
        elif seen <= {"int64", "float64"}:
            out[col] = "float64"
        else:
            out[col] = "object"
    return out


def csv_types(client: Any, source: str, ddf: Any) -> dict[str, str] | None:
    """For a CSV source, the column types pandas gives the whole file read in blocks (one pass
    over the blocks on the cluster); None for other formats (their types are in the file)."""
    import dask

    from deconfoundlm.logs.tables import parquet_parts, table_format

    if parquet_parts(source) is not None or table_format(source) != "csv":
        return None
    return _unify_types(client.gather(client.compute([dask.delayed(_csv_types)(p) for p in ddf.to_delayed()])))


def typed_block(pdf: pd.DataFrame, types: dict[str, str] | None, *, text_as_str: bool = False) -> pd.DataFrame:
    """A text block of a CSV with the whole file's column types (see :func:`csv_types`). A column
    of mixed types keeps each block's own values (as pandas' concatenation does), or with
    ``text_as_str`` the file's text (for Parquet output, which needs one type per column)."""
    if types is None:
        return pdf
    parsed = _reparsed(pdf).set_axis(pdf.index)
    for col, t in types.items():
        parsed[col] = pdf[col] if (t == "object" and text_as_str) else parsed[col].astype(t)
    return parsed


def _validate(pdf: pd.DataFrame, roles: ColumnRoles, source: str, types: dict[str, str] | None = None,
              row_offset: int = 0) -> tuple[ObservationalLog | None, dict]:
    drops: dict[str, int] = {}
    pdf = typed_block(pdf, types)
    log, _, error = _recorded(validate_log, pdf.reset_index(drop=True), roles, source, whole=False, drops=drops,
                              row_offset=row_offset)
    return log, {"drops": drops, "error": error, "raw_rows": len(pdf)}


def _first(pair: tuple) -> Any:
    return pair[0]


def _summary(pair: tuple) -> dict[str, Any]:
    log, info = pair
    if log is None:
        return {"n": 0, **info}
    y = log.outcome
    rate = y / log.trials if log.trials is not None else y
    return {
        "n": len(log), **info,
        "binary": is_binary(y),
        "count": is_count(y),
        "rate_min": float(rate.min()) if len(y) else np.inf, "rate_max": float(rate.max()) if len(y) else -np.inf,
        "weight_sum": float(log.weights.sum()) if log.weights is not None else float(len(y)),
    }


def _check_family(log: ObservationalLog | None, family: str) -> tuple[Any, list[str], str | None]:
    if log is None or not len(log):
        return None, [], None
    return _recorded(check_log_family, log, family)


def _confounder_summary(log: ObservationalLog | None, design) -> tuple[Any, list[str], str | None]:
    """A partition's summary for fitting the confounder design (see
    :meth:`~deconfoundlm.features.confounders.ConfounderDesign.summarize`), with up to two of
    each confounder's distinct values (for the whole log's "constant confounder" check)."""
    if log is None or not len(log):
        return None, [], None

    def summarize():
        conf = log.confounders
        return {"design": design.summarize(conf),
                "distinct": {c.column: _two_distinct(conf[c.column]) for c in design.specs}}
    return _recorded(summarize)


def _two_distinct(values: Any) -> list:
    return pd.unique(pd.Series(values, dtype=object))[:2].tolist()


def _merge_confounder_summaries(a: tuple, b: tuple) -> tuple:
    from deconfoundlm.features.confounders import ConfounderDesign

    for part in (a, b):
        if part[2]:
            return part  # a partition's error (the first in log order)
    if a[0] is None or b[0] is None:
        return (b[0] if a[0] is None else a[0]), a[1] + b[1], None
    distinct = {c: _two_distinct(list(a[0]["distinct"][c]) + list(b[0]["distinct"][c])) for c in a[0]["distinct"]}
    return ({"design": ConfounderDesign.merge_summaries(a[0]["design"], b[0]["design"]), "distinct": distinct},
            a[1] + b[1], None)


def worker_encoder(name: str, identity: dict | None) -> Any:
    """The encoder on this worker (loaded once per process), checked against the identity the
    client recorded: every worker must see the same model."""
    from deconfoundlm.features.text import get_encoder
    from deconfoundlm.progress import PROGRESS  # noqa: I001

    PROGRESS["bars"] = False  # a worker's bars would interleave with the client's
    if name not in _encoders:
        enc = get_encoder(name)
        if identity is not None:
            now = enc.identity()
            if not now.same_model(identity):
                raise UserError(f"encoder {name!r} differs on a Dask worker: the client has "
                                f"{str(identity.get('content_hash'))[:12]}, the worker {now.content_hash[:12]}; "
                                "install the same model on every worker")
        _encoders[name] = enc
    return _encoders[name]


def _make_block(log: ObservationalLog | None, design, encoder: str, identity: dict | None, offset: int,
                cv: int, seed: int, n_text: int, n_conf: int) -> Block:
    from deconfoundlm.features.text import encode_in_chunks

    if log is None or not len(log):
        return Block(np.zeros((0, n_text), np.float32), np.zeros((0, n_conf)) if n_conf else None,
                     np.zeros((0, 4)), np.zeros(0, np.int16))
    # Small chunks: a hashing or tokenizer pass over 10,000 texts stays well under a worker's memory.
    phi = encode_in_chunks(worker_encoder(encoder, identity), log.texts, chunk=10_000, progress=False)
    psi = design.transform(log.confounders).toarray() if design is not None and n_conf else None
    targets = pack_targets(log.outcome, log.trials, log.weights)
    return Block(phi, psi, targets, hash_folds(np.arange(offset, offset + len(log)), cv, seed))


def _sample_rows(log: ObservationalLog | None, offset: int, n_rows: int, size: int, seed: int) -> dict | None:
    """The rows of a partition that fall in the seeded diagnostic sample (their embeddings are
    taken from the block later: :func:`_sample_phi`)."""
    if log is None or not len(log):
        return None
    rows = np.arange(offset, offset + len(log))
    picked = np.flatnonzero(diagnostic_sample(rows, n_rows, size, seed))
    return {"picked": picked, "texts": [log.texts[i] for i in picked],
            "frame": log.frame.iloc[picked].reset_index(drop=True),
            "confounders": log.confounders.iloc[picked].reset_index(drop=True),
            "outcome": log.outcome[picked], "trials": None if log.trials is None else log.trials[picked],
            "weights": None if log.weights is None else log.weights[picked]}


def _sample_phi(block: Block, rows: dict | None) -> np.ndarray | None:
    return None if rows is None else block.phi[rows["picked"]]


SLICE_ROWS = 16_384


def _over_slices(block: Block, fn, *args) -> dict[str, np.ndarray]:
    """``fn`` summed over slices of a block: a pass's float64 temporaries stay those of 16,384
    rows whatever the partition size."""
    out = None
    for i in range(0, max(len(block), 1), SLICE_ROWS):
        sl = slice(i, i + SLICE_ROWS)
        part = fn(Block(block.phi[sl], None if block.psi is None else block.psi[sl], block.targets[sl],
                        block.fold[sl]), *args)
        out = part if out is None else add_results(out, part)
    return out


# -- the client's view ------------------------------------------------------------------------
def _tree(client: Any, parts: list, combine) -> Any:
    """The future of ``combine`` applied pairwise in a tree over the futures ``parts`` (in order:
    neighbours are combined, so an order-sensitive ``combine`` sees the log's order)."""
    while len(parts) > 1:
        parts = [client.submit(combine, parts[i], parts[i + 1], pure=False) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


class DaskBlocks:
    """Solver blocks held by the workers (see :class:`~deconfoundlm.glm.path.Blocks`):
    each pass maps a function over them and sums the results in a tree on the cluster."""

    def __init__(self, client: Any, futures: list, n_text: int, n_conf: int) -> None:
        from tqdm.auto import tqdm

        self.client, self.futures, self.n_text, self.n_conf = client, futures, n_text, n_conf
        self._bar = tqdm(desc="fitting on the cluster", unit="pass", disable=disable())

    def close(self) -> None:
        self._bar.close()

    def map_reduce(self, fn, *args):
        self._bar.update(1)
        client = self.client
        shared = [client.scatter(a, broadcast=True, hash=False) if isinstance(a, np.ndarray) and a.size > 1000
                  else a for a in args]
        parts = [client.submit(_over_slices, b, fn, *shared, pure=False) for b in self.futures]
        return _tree(client, parts, add_results).result()


@dataclass
class DistributedLog:
    """A validated log on the cluster: one future per partition (its ObservationalLog)."""

    client: Any
    roles: ColumnRoles
    logs: list  # futures of (ObservationalLog | None, info)
    counts: list[int]
    summaries: list[dict]
    source: str

    def __len__(self) -> int:
        return int(sum(self.counts))

    @property
    def offsets(self) -> list[int]:
        return [int(v) for v in np.concatenate([[0], np.cumsum(self.counts)[:-1]])]

    def partition_logs(self) -> list:
        return self.client.map(_first, self.logs, pure=False)

    def resolve_family(self, family: str) -> str:
        """``auto`` decided on the whole log as in memory; the family's checks run per partition."""
        s = [x for x in self.summaries if x["n"]]
        if family == "auto":
            family = auto_family(self.roles.trials is not None, all(x["binary"] for x in s),
                                 all(x["count"] for x in s))
        family = get_family(family).name
        checked = self.client.gather(self.client.map(_check_family, self.partition_logs(), family=family, pure=False))
        for _, _messages, error in checked:
            if error:
                raise UserError(error)
        _reemit(m for _, messages, _ in checked for m in messages)
        return family

    def fit_design(self, design) -> Any:
        """Fit the confounder design on every row without gathering the rows: each partition is
        summarized on its worker (level counts, distinct values with counts) and the summaries
        are merged in a tree; the same design as fitting on the whole log in memory."""
        client = self.client
        parts = client.map(_confounder_summary, self.partition_logs(), design=design, pure=False)
        summary, messages, error = _tree(client, parts, _merge_confounder_summaries).result()
        if error:
            raise UserError(error)
        _reemit(messages)
        for spec in self.roles.confounders:
            seen = summary["distinct"][spec.column]
            if len(seen) < 2:
                raise UserError(f"confounder {spec.column!r} has a single level ({seen[0]!r}); "
                                "a constant cannot confound anything: drop it")
        return design.fit_summary(summary["design"])

    def blocks(self, design, encoder: str, identity: dict | None, cv: int, seed: int, n_text: int,
               sample_rows: int = 0) -> DaskBlocks:
        """Encode every partition on the workers and keep the solver blocks there. The
        validated partitions are then released (their texts are not needed any more): what
        :meth:`sample` (``sample_rows`` rows at most) and :meth:`fingerprint` return is taken
        first."""
        from distributed import as_completed
        from tqdm.auto import tqdm

        n_conf = design.width() if design is not None else 0
        logs = self.partition_logs()
        futures = [self.client.submit(_make_block, lf, design, encoder, identity, off, cv, seed, n_text, n_conf,
                                      pure=False)
                   for lf, off in zip(logs, self.offsets, strict=True)]
        for f in tqdm(as_completed(futures), total=len(futures), desc=f"encoding on the cluster ({encoder})",
                      unit="partition", disable=disable()):
            if f.status == "error":
                f.result()  # raises the worker's error here
        self._sample = [self.client.submit(_sample_rows, lf, off, len(self), sample_rows, seed, pure=False)
                        for lf, off in zip(logs, self.offsets, strict=True)] if sample_rows else []
        # The sample's embeddings now, while the blocks are fresh (not in a late pass over spilled ones).
        self._sample_phi = [self.client.submit(_sample_phi, b, r, pure=False)
                            for b, r in zip(futures, self._sample, strict=True)] if sample_rows else []
        self.client.gather(self._sample_phi)
        self._fingerprint = self.fingerprint()
        self.logs, logs = [], None  # the workers drop the validated partitions
        return DaskBlocks(self.client, futures, n_text, n_conf)

    def sample(self, blocks: DaskBlocks) -> tuple[ObservationalLog, np.ndarray] | None:
        """The seeded diagnostic sample chosen in :meth:`blocks` as an in-memory log and its
        embeddings."""
        if not getattr(self, "_sample", None):
            return None
        phis = self.client.gather(self._sample_phi)
        parts = self.client.gather(self._sample)
        keep = [i for i, p in enumerate(parts) if p is not None and len(p["texts"])]
        if not keep:
            return None
        parts = [parts[i] for i in keep]
        cat = {k: (np.concatenate([p[k] for p in parts]) if parts[0][k] is not None else None)
               for k in ("outcome", "trials", "weights")}
        log = ObservationalLog(
            texts=[t for p in parts for t in p["texts"]], outcome=cat["outcome"],
            confounders=pd.concat([p["confounders"] for p in parts], ignore_index=True), roles=self.roles,
            trials=cat["trials"], weights=cat["weights"],
            frame=pd.concat([p["frame"] for p in parts], ignore_index=True))
        return log, np.concatenate([phis[i] for i in keep]).astype(np.float64)

    def texts_among(self, texts: list[str]) -> set[str]:
        """Which of ``texts`` the log holds (each partition answers for its rows; only the texts
        found cross the network). Before :meth:`blocks`, which releases the rows."""
        wanted = frozenset(map(str, texts))
        found: set[str] = set()
        if wanted:
            for part in self.client.gather(self.client.map(_texts_among, self.partition_logs(), texts=wanted,
                                                           pure=False)):
                found |= part
        return found

    def fingerprint(self) -> str:
        """The log's data fingerprint, the same as in memory for the same rows: a hash of every
        row's hash, fed partition by partition in order (8 bytes a row cross the network)."""
        import hashlib

        if getattr(self, "_fingerprint", None):
            return self._fingerprint
        h = hashlib.sha256()
        for future in self.client.map(_row_hashes, self.partition_logs(), pure=False):
            h.update(future.result())
            future.release()
        return h.hexdigest()[:16]


def _texts_among(log: ObservationalLog | None, texts: frozenset) -> set:
    return set() if log is None else {t for t in map(str, log.texts) if t in texts}


def _row_hashes(log: ObservationalLog | None) -> bytes:
    return b"" if log is None or not len(log) else log.row_hashes()


def _reemit(messages) -> None:
    from deconfoundlm.errors import DataWarning

    for m in dict.fromkeys(messages):
        warnings.warn(m, DataWarning, stacklevel=3)


def load_distributed_log(client: Any, data: str | Path, roles: ColumnRoles) -> DistributedLog:
    """Read and validate ``data`` on the cluster; the checks of the whole log (no rows left, an
    outcome without variation, a constant confounder) run on the partitions' summaries."""
    source = str(data)
    import dask

    ddf = read_frame(data, roles.columns())
    # Read and validate in one task per partition: the raw partition is dropped as soon as its
    # validated rows exist, never all partitions at once.
    types = csv_types(client, source, ddf)
    parts = ddf.to_delayed()
    logs = client.compute([dask.delayed(_validate)(part, roles, source, types) for part in parts])
    summaries = client.gather(client.map(_summary, logs, pure=False))
    for i, s in enumerate(summaries):
        if s["error"]:  # the first bad partition in log order, validated again to name the log's row
            offset = int(sum(x["raw_rows"] for x in summaries[:i]))
            again = client.compute(dask.delayed(_validate)(parts[i], roles, source, types, offset)).result()
            raise UserError(again[1]["error"] or s["error"])
    drops: dict[str, int] = {}
    for s in summaries:
        for why, n in s["drops"].items():
            drops[why] = drops.get(why, 0) + n
    for why, n in drops.items():
        warn_drop(n, why)
    counts = [s["n"] for s in summaries]
    if sum(counts) == 0:
        raise no_rows_left(source, drops)
    full = [s for s in summaries if s["n"]]
    if min(s["rate_min"] for s in full) == max(s["rate_max"] for s in full):
        raise UserError(f"outcome column {roles.outcome!r} has no variation (all rows equal)")
    if roles.weights is not None and sum(s["weight_sum"] for s in full) <= 0:
        raise UserError(f"weights column {roles.weights!r} sums to zero")
    return DistributedLog(client, roles, logs, counts, summaries, source)
