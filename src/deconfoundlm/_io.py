"""Reading tables by extension and writing outputs atomically (never half-written)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from deconfoundlm.errors import UserError

TABLE_EXTENSIONS = (".csv", ".parquet", ".jsonl")


def table_format(path: str | Path) -> str:
    """The table format implied by a file name's extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        raise UserError(
            f"{path}: unknown file extension {suffix or '(none)'!r}; use one of "
            + ", ".join(TABLE_EXTENSIONS)
        )
    return suffix[1:]


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read CSV, Parquet or JSONL (by extension). ``columns`` restricts what is loaded."""
    fmt = table_format(path)
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    try:
        if fmt == "csv":
            df = pd.read_csv(path, usecols=columns)
        elif fmt == "parquet":
            df = pd.read_parquet(path, columns=columns)
        else:
            df = pd.read_json(path, lines=True)
            if columns is not None:
                df = df[columns]
    except (ValueError, KeyError) as exc:  # pandas raises these for missing usecols
        raise UserError(f"{path}: could not read ({str(exc).splitlines()[0]})") from exc
    except (OSError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: could not read as {fmt} ({str(exc).splitlines()[0]})") from exc
    return df


def iter_table(path: str | Path, columns: list[str] | None = None, chunksize: int = 100_000) -> Iterator[pd.DataFrame]:
    """Read a table in chunks of ``chunksize`` rows (bounded memory for large logs)."""
    fmt = table_format(path)
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunksize, columns=columns):
                yield batch.to_pandas()
        elif fmt == "csv":
            yield from pd.read_csv(path, usecols=columns, chunksize=chunksize)
        else:
            for chunk in pd.read_json(path, lines=True, chunksize=chunksize):
                yield chunk if columns is None else chunk[columns]
    except (ValueError, KeyError, OSError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: could not read as {fmt} ({str(exc).splitlines()[0]})") from exc


class TableWriter:
    """Append chunks to a CSV / Parquet / JSONL file written atomically on ``close``."""

    def __init__(self, path: str | Path, force: bool = False) -> None:
        self.path = Path(path)
        self.fmt = table_format(self.path)
        check_output(self.path, force)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", suffix=self.path.suffix, dir=self.path.parent)
        os.close(fd)
        self._first = True
        self._parquet = None

    def write(self, df: pd.DataFrame) -> None:
        if self.fmt == "csv":
            df.to_csv(self.tmp, index=False, mode="w" if self._first else "a", header=self._first)
        elif self.fmt == "jsonl":
            with open(self.tmp, "w" if self._first else "a", encoding="utf-8") as fh:
                df.to_json(fh, orient="records", lines=True, force_ascii=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.tmp, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        self._first = False

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def table_columns(path: str | Path) -> list[str]:
    """Column names of a table without loading all of it (cheap for CSV and Parquet)."""
    fmt = table_format(path)
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    try:
        if fmt == "csv":
            return list(pd.read_csv(path, nrows=0).columns)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        return list(pd.read_json(path, lines=True, nrows=50).columns)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise UserError(f"{path}: could not read as {fmt} ({str(exc).splitlines()[0]})") from exc


def check_output(path: str | Path, force: bool) -> None:
    """Refuse to overwrite an existing output unless ``force``."""
    if Path(path).exists() and not force:
        raise UserError(f"{path}: output exists; pass --force to overwrite it")


def write_table(df: pd.DataFrame, path: str | Path, force: bool = False) -> None:
    """Write a table (format by extension) atomically: a temp file, then a rename."""
    path = Path(path)
    fmt = table_format(path)
    check_output(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_text(text: str, path: str | Path) -> None:
    """Write a text file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


@contextmanager
def atomic_directory(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    check_output(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".old-{path.name}-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
