"""Reading tables by extension: CSV, Parquet, JSONL (whole or in chunks), with clean errors."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from deconfoundlm.checks import require_regular_file
from deconfoundlm.errors import UserError

TABLE_EXTENSIONS = (".csv", ".parquet", ".jsonl")


def parquet_parts(path: str | Path) -> list[str] | None:
    """The Parquet files of a partitioned table (a directory holding ``*.parquet`` files, or a
    glob), sorted by name: the table's row order. None when ``path`` is not one."""
    text, p = str(path), Path(path)
    if p.is_dir():
        return sorted(str(f) for f in p.rglob("*.parquet") if not f.name.startswith(("_", "."))) or None
    if any(ch in text for ch in "*?["):
        import glob

        return sorted(f for f in glob.glob(text, recursive=True) if f.endswith(".parquet")) or None
    return None


def check_parquet_parts(parts: list[str], columns: list[str] | None = None) -> list[str]:
    """Every part of a partitioned table is a regular, readable Parquet file holding ``columns``
    (default: the first part's columns): its footer is read, nothing else. Returns the first
    part's column names. A bad part is a UserError naming it."""
    import pyarrow.parquet as pq

    first: list[str] | None = None
    for part in parts:
        require_regular_file(part)
        try:
            names = [str(n) for n in pq.read_schema(part).names]
        except Exception as exc:  # noqa: BLE001 - a corrupt part
            raise UserError(f"{part}: not a readable Parquet file ({_first_line(exc)[:160]})") from None
        first = names if first is None else first
        wanted = first if columns is None else columns
        missing = [c for c in wanted if c not in names]
        if missing:
            raise UserError(f"{part}: column {missing[0]!r} not found, though "
                            f"{'the first part has it' if columns is None else 'it is needed'}; the parts of a "
                            "table must share their columns")
    return first or []


def table_format(path: str | Path) -> str:
    """The table format implied by a file name's extension (or a folder / glob of Parquet files)."""
    if parquet_parts(path) is not None:
        return "parquet"
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_EXTENSIONS:
        raise UserError(
            f"{path}: unknown file extension {suffix or '(none)'!r}; use one of "
            + ", ".join(TABLE_EXTENSIONS)
        )
    return suffix[1:]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _check_unique_names(names: list[Any], path: str | Path) -> None:
    seen: set[str] = set()
    for name in names:
        if str(name) in seen:
            raise UserError(f"{path}: duplicate column name {str(name)!r}; column names must be unique")
        seen.add(str(name))


def _csv_header(path: str | Path) -> list[str]:
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name.
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        return next(csv.reader(fh), [])


def _require_file(path: str | Path) -> None:
    p = Path(path)
    if parquet_parts(path) is not None:
        return
    require_regular_file(path)
    if p.is_dir():
        raise UserError(f"{path}: is a directory, not a data file (nor a folder of .parquet files)")
    if not p.is_file():
        raise UserError(f"{path}: no such file")


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read CSV, Parquet or JSONL (by extension). ``columns`` restricts what is loaded."""
    if columns is not None:
        table_columns(path)  # format, existence and unique names
    if columns is None:
        return _read_whole(path)
    chunks = list(iter_table(path, columns=columns))
    return pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=columns)


def _read_whole(path: str | Path) -> pd.DataFrame:
    names = table_columns(path)
    fmt = table_format(path)
    try:
        if fmt == "csv":
            df = pd.read_csv(path)
        elif fmt == "parquet":
            df = pd.read_parquet(parquet_parts(path) or path)
        else:
            df = pd.read_json(path, lines=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise UserError(f"{path}: could not read as {fmt} ({_first_line(exc)})") from exc
    if fmt == "csv" and len(df.columns) == len(names):
        df.columns = names  # pandas renames duplicates; the header was checked above
    return df


def iter_table(path: str | Path, columns: list[str] | None = None, chunksize: int = 100_000) -> Iterator[pd.DataFrame]:
    """Read a table in chunks of ``chunksize`` rows (bounded memory for large logs)."""
    fmt = table_format(path)
    _require_file(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for part in parquet_parts(path) or [path]:
                for batch in pq.ParquetFile(part).iter_batches(batch_size=chunksize, columns=columns):
                    yield batch.to_pandas()
        elif fmt == "csv":
            yield from pd.read_csv(path, usecols=columns, chunksize=chunksize)
        else:
            for chunk in pd.read_json(path, lines=True, chunksize=chunksize):
                if columns is not None:
                    missing = [c for c in columns if c not in chunk.columns]
                    for c in missing:  # a key absent from every record of this chunk
                        chunk[c] = None
                    chunk = chunk[columns]
                yield chunk
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise UserError(f"{path}: could not read as {fmt} ({_first_line(exc)})") from exc


def has_rows(path: str | Path) -> bool:
    """Whether a table holds at least one row (read from its first record or Parquet footers)."""
    for chunk in iter_table(path, chunksize=1):
        if len(chunk):
            return True
    return False


def table_columns(path: str | Path) -> list[str]:
    """Column names of a table without loading all of it; duplicate names are an error."""
    fmt = table_format(path)
    _require_file(path)
    try:
        if fmt == "csv":
            names = _csv_header(path)
            if not names:
                raise UserError(f"{path}: empty file (no header row)")
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            parts = parquet_parts(path)
            names = check_parquet_parts(parts) if parts is not None else list(pq.read_schema(path).names)
        else:
            if Path(path).stat().st_size == 0:
                raise UserError(f"{path}: empty file (no records)")
            names = list(pd.read_json(path, lines=True, nrows=50).columns)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise UserError(f"{path}: could not read as {fmt} ({_first_line(exc)})") from exc
    _check_unique_names(names, path)
    return [str(n) for n in names]
