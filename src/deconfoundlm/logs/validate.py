"""The validated observational log: every column checked against its role before any work."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deconfoundlm.errors import DataWarning, UserError
from deconfoundlm.logs import values as confounder_values
from deconfoundlm.logs.roles import ColumnRoles
from deconfoundlm.logs.tables import iter_table, table_columns

MAX_ABS = 1e15  # larger magnitudes overflow squares (gaussian) and rates (poisson): ask to rescale


@dataclass
class ObservationalLog:
    """A validated log: parallel arrays, one entry per kept row."""

    texts: list[str]
    outcome: np.ndarray
    confounders: pd.DataFrame
    roles: ColumnRoles
    trials: np.ndarray | None = None
    weights: np.ndarray | None = None
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def groups(self) -> np.ndarray | None:
        """Cluster labels (``--group``) as strings, missing ones as their own level."""
        if self.roles.group is None:
            return None
        return self.frame[self.roles.group].astype(str).to_numpy()

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """A hash of the columns used, so an artifact records exactly which data it saw."""
        import hashlib

        h = hashlib.sha256()
        h.update(self.row_hashes())
        return h.hexdigest()[:16]

    def row_hashes(self) -> bytes:
        """Each row's 64-bit hash of the columns used, in order: the fingerprint of a log split
        into parts is the hash of its parts' row hashes in order (the same as of the whole)."""
        used = self.frame[self.roles.columns()]
        return pd.util.hash_pandas_object(used, index=False).values.tobytes()


def require_columns(available: list[str], wanted: list[str], source: str) -> None:
    """Fail with the list of available columns when a wanted one is missing."""
    missing = [c for c in wanted if c not in available]
    if missing:
        raise UserError(
            f"{source}: column {missing[0]!r} not found; available columns: "
            + ", ".join(map(str, available))
        )


def numeric_column(series: pd.Series, role: str, row_offset: int = 0) -> pd.Series:
    """A numeric column as float; non-numeric or infinite values are a UserError naming them
    (missing values stay NaN for the caller to drop with a warning)."""
    original = series
    if series.dtype == bool:
        series = series.astype(float)
    if series.dtype == object:  # lists / dicts from JSONL or Parquet are not numbers
        series = series.where(series.map(_is_scalar), other="<non-scalar>")
        blank = series.map(lambda v: isinstance(v, str) and not v.strip())
        series = series.where(~blank, other=None)  # an empty cell is missing, as in a CSV
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if bad.any():
        example = original[bad].iloc[0]
        raise UserError(
            f"{role} column {series.name!r} is not numeric (e.g. value {_show(example)} "
            f"in {int(bad.sum())} row(s))"
        )
    values = values.astype(float)
    inf = np.isinf(values.to_numpy())
    if inf.any():
        raise UserError(
            f"{role} column {series.name!r} has {int(inf.sum())} infinite value(s) "
            f"(e.g. {float(values[inf].iloc[0])} in row {row_offset + int(np.flatnonzero(inf)[0])}); "
            "give finite numbers or leave the cell empty to drop the row"
        )
    huge = np.abs(np.nan_to_num(values.to_numpy())) > MAX_ABS
    if huge.any():
        raise UserError(
            f"{role} column {series.name!r} has values as large as {np.nanmax(np.abs(values.to_numpy())):.3g} "
            f"(above {MAX_ABS:.0e}); rescale it (e.g. to thousands) so the fit stays finite"
        )
    return values


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bytes, int, float, bool, np.generic, pd.Timestamp)) \
        or v is pd.NaT


def _kind(v: Any) -> str:
    if isinstance(v, (list, tuple, np.ndarray)):
        return "list"
    return "dict" if isinstance(v, dict) else type(v).__name__


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_text_column(series: pd.Series) -> None:
    """Texts are strings: a list / dict cell is an error, a numeric column a warning."""
    kept = series[series.notna()]
    odd = ~kept.map(_is_scalar) if kept.dtype == object else pd.Series(False, index=kept.index)
    if odd.any():
        example = kept[odd].iloc[0]
        raise UserError(
            f"text column {series.name!r} holds {_kind(example)} values, not strings "
            f"(e.g. {_show(example)} in {int(odd.sum())} row(s))"
        )
    if len(kept) and (pd.api.types.is_numeric_dtype(kept) or kept.map(
            lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool)).all()):
        warnings.warn(f"text column {series.name!r} holds numbers, not texts; is it the right column?",
                      DataWarning, stacklevel=3)


def warn_drop(n: int, why: str) -> None:
    """The warning for ``n`` dropped rows (nothing when n is 0)."""
    if n:
        warnings.warn(f"dropped {n} row(s): {why}", DataWarning, stacklevel=3)


def no_rows_left(source: str, drops: dict[str, int]) -> UserError:
    """The error of a table whose every row was dropped, naming why (counts by reason)."""
    why = "; ".join(f"{n} row(s) with {reason}" for reason, n in drops.items())
    return UserError(f"{source}: no usable rows left" + (f" ({why})" if why else ""))


def validate_log(df: pd.DataFrame, roles: ColumnRoles, source: str = "data", *, whole: bool = True,
                 drops: dict[str, int] | None = None, row_offset: int = 0) -> ObservationalLog:
    """Check a table against its column roles and return the kept rows as a log.

    Rows with a missing text or outcome, or with a missing / non-positive number of trials,
    are dropped with a warning that says how many. Everything else that is wrong raises a
    :class:`UserError` naming the column and the value.

    For one partition of a larger log (the distributed path): ``whole=False`` skips the checks
    that only the whole log can answer (an outcome without variation, a constant confounder, no
    rows left), ``drops`` collects the dropped-row counts by reason instead of warning, and
    ``row_offset`` (the partition's first row in the log) makes row numbers in errors the log's.
    """
    dropped: dict[str, int] = {}

    def _warn_drop(n: int, why: str) -> None:
        if n:
            dropped[why] = dropped.get(why, 0) + n
        if drops is None:
            warn_drop(n, why)
        elif n:
            drops[why] = drops.get(why, 0) + n

    dup = df.columns[df.columns.duplicated()]
    if len(dup):
        raise UserError(f"{source}: duplicate column name {str(dup[0])!r}; column names must be unique")
    require_columns(list(df.columns), roles.columns(), source)
    if whole and not len(df):
        raise UserError(f"{source}: the table has no rows (only a header); there is nothing to learn from")
    df = df[roles.columns()].copy()

    check_text_column(df[roles.text])
    outcome = numeric_column(df[roles.outcome], "outcome", row_offset)
    keep = df[roles.text].notna() & outcome.notna()
    _warn_drop(int((~keep).sum()), f"missing text or outcome ({roles.text!r}, {roles.outcome!r})")

    trials = None
    if roles.trials is not None:
        trials = numeric_column(df[roles.trials], "trials", row_offset)
        bad = keep & ~(trials > 0)
        _warn_drop(int(bad.sum()), f"missing, zero or negative trials in {roles.trials!r}")
        keep &= trials > 0

    weights = None
    if roles.weights is not None:
        weights = numeric_column(df[roles.weights], "weights", row_offset)
        if (weights[keep] < 0).any():
            raise UserError(f"weights column {roles.weights!r} has negative values")
        bad = keep & weights.isna()
        _warn_drop(int(bad.sum()), f"missing weight in {roles.weights!r}")
        keep &= weights.notna()

    for spec in roles.confounders:
        col = df[spec.column]
        if spec.type == "categorical":
            odd = col.notna() & ~col.map(_is_scalar)
            if odd.any():
                raise UserError(f"categorical confounder {spec.column!r} holds "
                                f"{_kind(col[odd].iloc[0])} values (e.g. {_show(col[odd].iloc[0])})")
        if spec.type == "numeric":
            df[spec.column] = numeric_column(col, "numeric confounder", row_offset)
        if spec.type != "categorical":
            bad = keep & df[spec.column].isna()
            _warn_drop(int(bad.sum()), f"missing {spec.type} confounder {spec.column!r}")
            keep &= df[spec.column].notna()

    df = df[keep].reset_index(drop=True)
    if len(df) == 0 and whole:
        raise no_rows_left(source, dropped)
    outcome = outcome[keep].to_numpy()
    if trials is not None:
        trials = trials[keep].to_numpy()
        rate = outcome / trials
        no_variation = len(rate) and np.ptp(rate) == 0
    else:
        no_variation = len(outcome) and np.ptp(outcome) == 0
    if no_variation and whole:
        raise UserError(f"outcome column {roles.outcome!r} has no variation (all rows equal)")
    if weights is not None:
        weights = weights[keep].to_numpy()
        if weights.sum() <= 0 and whole:
            raise UserError(f"weights column {roles.weights!r} sums to zero")

    conf = df[[c.column for c in roles.confounders]].copy()
    for spec in roles.confounders if whole else ():
        if conf[spec.column].nunique(dropna=False) < 2:
            raise UserError(
                f"confounder {spec.column!r} has a single level ({conf[spec.column].iloc[0]!r}); "
                "a constant cannot confound anything: drop it"
            )

    for spec in roles.confounders:  # fail here, on the user's column, not inside the fit
        parse = {"time": confounder_values.time_values, "hour": confounder_values.hour_values,
                 "weekday": confounder_values.weekday_values}
        if spec.type in parse:
            parse[spec.type](conf[spec.column])
    texts = df[roles.text].astype(str).tolist()
    return ObservationalLog(
        texts=texts, outcome=outcome, confounders=conf, roles=roles,
        trials=trials, weights=weights, frame=df,
    )


def load_log(path: str | Path, roles: ColumnRoles) -> ObservationalLog:
    """Read a CSV / Parquet / JSONL log and validate it against ``roles``."""
    require_columns(table_columns(path), roles.columns(), str(path))
    # Only the columns with a role are read, chunk by chunk, so wide or long logs stay small.
    chunks = list(iter_table(path, columns=roles.columns()))
    df = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=roles.columns())
    return validate_log(df, roles, source=str(path))
