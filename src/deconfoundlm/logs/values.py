"""Reading confounder values from a log's columns: dates and YYYYWW week codes as days, hours of
day, weekdays. Data-in parsing shared by validation (errors named on the user's column) and the
confounder design (:mod:`deconfoundlm.features.confounders`)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from deconfoundlm.errors import UserError

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Day names and their standard abbreviations (lower case, no trailing period): nothing else is a day.
DAY_NAMES = {name: i for i, names in enumerate((
    ("monday", "mon"), ("tuesday", "tue", "tues"), ("wednesday", "wed", "weds"),
    ("thursday", "thu", "thur", "thurs"), ("friday", "fri"), ("saturday", "sat"), ("sunday", "sun")))
    for name in names}


def _week_codes(series: pd.Series) -> np.ndarray:
    name = series.name
    codes = series.to_numpy(dtype=float)
    if not np.isfinite(codes).all():
        raise UserError(f"time confounder {name!r}: non-finite value {codes[~np.isfinite(codes)][0]!r}")
    ints = codes.astype(np.int64)
    weeks, years = ints % 100, ints // 100
    ok = (ints == codes) & (weeks <= 53) & (years >= 1900) & (years <= 2200)
    if not ok.all():
        raise UserError(
            f"time confounder {name!r}: numeric value {codes[~ok][0]:g} is not a YYYYWW week "
            "code; give dates, or declare the column as numeric"
        )
    # Week WW of year YYYY starts about 7*WW days after Jan 1 (week 00 or 01 first, as
    # strftime's %U/%W and ISO weeks differ by at most a week; order is what matters).
    jan1 = {y: (dt.date(int(y), 1, 1) - dt.date(1970, 1, 1)).days for y in np.unique(years)}
    return np.array([jan1[y] for y in years], dtype=float) + 7.0 * weeks


def timestamps(series: pd.Series, kind: str = "time") -> pd.Series:
    """Parse dates / datetimes; aware values are converted to UTC, naive ones taken as given."""
    name = series.name
    if pd.api.types.is_datetime64_any_dtype(series):
        ts = pd.to_datetime(series)
    else:
        text = series.astype(str).where(series.notna())
        ts = _parse_fast(text)
        if ts is None:
            try:
                ts = pd.to_datetime(text, errors="coerce", format="mixed")
            except (ValueError, TypeError):  # several time zones (or aware and naive) in one column
                ts = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
        bad = ts.isna() & series.notna()
        if bad.any():
            raise UserError(
                f"{kind} confounder {name!r}: cannot parse {str(series[bad].iloc[0])[:60]!r} as a date/time"
            )
    return ts.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(ts.dt, "tz", None) is not None else ts


def _parse_fast(text: pd.Series) -> pd.Series | None:
    """One format for the whole column (inferred from its first value, vectorized): much faster
    than per-value parsing. None when some value does not fit it (then each value is parsed)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "could not infer format": the slow path handles it
            ts = pd.to_datetime(text, errors="coerce")
    except (ValueError, TypeError):
        return None
    if (ts.isna() & text.notna()).any():
        return None
    return ts


def time_values(series: pd.Series) -> np.ndarray:
    """A time confounder as days since 1970-01-01 (float): dates/datetimes (strings or datetime
    dtype) or integer ``YYYYWW`` week codes (WW 00-53)."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_datetime64_any_dtype(series):
        return _week_codes(series)
    ts = timestamps(series)
    return ((ts - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)).to_numpy(dtype=float)


def has_time_of_day(series: pd.Series) -> bool:
    """True when a time column's values carry a time of day (some are not at midnight)."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_datetime64_any_dtype(series):
        return False  # week codes
    ts = timestamps(series)
    return bool((ts.dt.normalize() != ts).any())


def hour_values(series: pd.Series) -> np.ndarray:
    """Hour of day in [0, 24): from timestamps (with minutes), or numbers in [0, 24)."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_datetime64_any_dtype(series):
        v = series.to_numpy(dtype=float)
        bad = ~np.isfinite(v) | (v < 0) | (v >= 24)
        if bad.any():
            raise UserError(f"hour confounder {series.name!r}: value {v[bad][0]:g} is not an hour in [0, 24)")
        return v
    ts = timestamps(series, "hour")
    return (ts.dt.hour + ts.dt.minute / 60.0 + ts.dt.second / 3600.0).to_numpy(dtype=float)


def weekday_values(series: pd.Series) -> np.ndarray:
    """Day of week 0 (Monday) .. 6 (Sunday): from timestamps, day names or numbers 0..6."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_datetime64_any_dtype(series):
        v = series.to_numpy(dtype=float)
        bad = ~np.isin(v, np.arange(7))
        if bad.any():
            raise UserError(f"weekday confounder {series.name!r}: value {v[bad][0]:g} is not 0 (Monday) .. 6")
        return v.astype(int)
    if not pd.api.types.is_datetime64_any_dtype(series):
        names = series.astype(str).str.strip().str.rstrip(".").str.lower()
        if names.isin(DAY_NAMES).all():
            return names.map(DAY_NAMES).to_numpy(dtype=int)
        if names.str.fullmatch(r"[a-z]+").all():  # words, but not all of them days
            bad = series[~names.isin(DAY_NAMES)].iloc[0]
            raise UserError(f"weekday confounder {series.name!r}: {str(bad)[:40]!r} is not a day name (Monday or Mon, "
                            "..., Sunday or Sun), a number 0 (Monday) .. 6 or a date")
    return timestamps(series, "weekday").dt.day_of_week.to_numpy(dtype=int)
