"""Confounder design psi(c): one-hot for categorical, spline basis for numeric and time, and
calendar terms for posting hour and weekday.

- ``categorical``: one-hot (rare levels pooled);
- ``numeric``: cubic B-spline at quantile knots;
- ``time``: the trend, a spline of days since 1970. When the timestamps carry a time of day (not
  all at midnight), ``time`` expands to trend + weekday + hour, the calendar terms that drive
  attention on every feed;
- ``hour``: hour of day, a cyclic (periodic) cubic spline over 24 hours: 23:59 is next to 00:00;
  values are timestamps or numbers in [0, 24);
- ``weekday``: one-hot of Monday..Sunday; values are timestamps, day names (Mon, Monday) or
  numbers 0 (Monday) .. 6.

Timestamps with a time zone are converted to UTC (a column mixing zones included); naive ones
are taken as given. All confounders enter additively (docs/method.md: no x-by-c interaction). The
design's learned state (kept levels, knot positions, calendar terms) is plain JSON, so a saved
reward model can rebuild it without pickle.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import SplineTransformer

from deconfoundlm.errors import DataWarning, UserError
from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.logs.values import (
    WEEKDAYS,
    has_time_of_day,
    hour_values,
    time_values,
    timestamps,
    weekday_values,
)
from deconfoundlm.options import label

OTHER = "__other__"
HOUR_KNOTS = 7  # periodic knots at 0, 4, ..., 24 hours: 6 smooth cyclic basis functions


def _quantiles(values: np.ndarray, counts: np.ndarray, ps: np.ndarray) -> np.ndarray:
    """``np.quantile(v, ps)`` (linear method, bit for bit) of the values ``v`` given as sorted
    distinct ``values`` with their ``counts``: numpy's own indexing and interpolation rules, on
    order statistics read from the cumulative counts."""
    n = int(counts.sum())
    if n == 0:
        raise UserError("a confounder has no values")
    ends = np.cumsum(counts)

    def order_stat(i: np.ndarray) -> np.ndarray:  # the i-th smallest value (0-based)
        return values[np.searchsorted(ends, i, side="right")]

    virtual = (n - 1) * np.asarray(ps, dtype=float)
    prev = np.clip(np.floor(virtual), 0, n - 1).astype(np.intp)
    gamma = virtual - prev  # past the last value a == b, so any gamma gives it exactly
    a, b = order_stat(prev), order_stat(np.minimum(prev + 1, n - 1))
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return out


def _periodic_hours() -> SplineTransformer:
    knots = np.linspace(0, 24, HOUR_KNOTS)[:, None]
    return SplineTransformer(knots=knots, degree=3, extrapolation="periodic").fit(knots)


def _weekday_block(days: np.ndarray) -> sp.csr_matrix:
    rows = np.arange(len(days))
    return sp.csr_matrix((np.ones(len(days)), (rows, days)), shape=(len(days), 7))


class ConfounderDesign:
    """psi(c) for a list of confounder specs.

    Parameters
    ----------
    specs : sequence of ConfounderSpec
        The confounder columns and their types.
    min_count : int, default 5
        Categorical levels seen fewer times are pooled into one ``__other__`` level (also used
        for levels unseen at fit time).
    n_knots : int, default 8
        Spline knots (at quantiles) for numeric and time confounders.
    degree : int, default 3
        Degree of those splines.
    """

    def __init__(self, specs: tuple[ConfounderSpec, ...] | list[ConfounderSpec],
                 min_count: int = 5, n_knots: int = 8, degree: int = 3) -> None:
        self.specs = tuple(specs)
        self.min_count = min_count
        self.n_knots = n_knots
        self.degree = degree

    # -- fit / transform -------------------------------------------------------------------
    def fit(self, conf: pd.DataFrame) -> ConfounderDesign:
        return self.fit_summary(self.summarize(conf))

    def summarize(self, conf: pd.DataFrame) -> list[dict[str, Any]]:
        """What :meth:`fit` needs from these rows, per confounder: level counts, hour range,
        weekdays seen, or the distinct values with their counts (for exact quantile knots).
        Summaries of parts of a log combine with :meth:`merge_summaries`; fitting on the merged
        summary gives the same design as fitting on all the rows at once (how a log spread over a
        cluster is fitted without gathering its columns)."""
        out: list[dict[str, Any]] = []
        for spec in self.specs:
            col = conf[spec.column]
            if spec.type == "categorical":
                counts = col.astype(str).fillna("__missing__").value_counts()
                out.append({"level_counts": {str(k): int(v) for k, v in counts.items()}})
            elif spec.type == "hour":
                h = hour_values(col)
                out.append({"range": [float(h.min()), float(h.max())] if len(h) else [np.inf, -np.inf]})
            elif spec.type == "weekday":
                out.append({"days": np.unique(weekday_values(col)).astype(int).tolist()})
            else:
                if spec.type == "time" and not pd.api.types.is_numeric_dtype(col):
                    col = timestamps(col)  # parsed once for the trend and the time-of-day check
                v = time_values(col) if spec.type == "time" else self._numeric(col, spec)
                values, counts = np.unique(v, return_counts=True)
                st: dict[str, Any] = {"values": values, "counts": counts.astype(np.int64)}
                if spec.type == "time":
                    st["time_of_day"] = bool(len(col)) and has_time_of_day(col)
                out.append(st)
        return out

    @staticmethod
    def merge_summaries(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The summary of two parts' rows together (see :meth:`summarize`)."""
        out: list[dict[str, Any]] = []
        for x, y in zip(a, b, strict=True):
            if "level_counts" in x:
                counts = dict(x["level_counts"])
                for k, v in y["level_counts"].items():
                    counts[k] = counts.get(k, 0) + v
                out.append({"level_counts": counts})
            elif "range" in x:
                out.append({"range": [min(x["range"][0], y["range"][0]), max(x["range"][1], y["range"][1])]})
            elif "days" in x:
                out.append({"days": sorted(set(x["days"]) | set(y["days"]))})
            else:
                values, inverse = np.unique(np.concatenate([x["values"], y["values"]]), return_inverse=True)
                counts = np.zeros(len(values), np.int64)
                np.add.at(counts, inverse, np.concatenate([x["counts"], y["counts"]]))
                st = {"values": values, "counts": counts}
                if "time_of_day" in x:
                    st["time_of_day"] = x["time_of_day"] or y["time_of_day"]
                out.append(st)
        return out

    def fit_summary(self, summary: list[dict[str, Any]]) -> ConfounderDesign:
        """Fit from a (merged) :meth:`summarize` of the rows."""
        self.state_: list[dict[str, Any]] = []
        for spec, sm in zip(self.specs, summary, strict=True):
            if spec.type == "categorical":
                counts = sm["level_counts"]
                kept = sorted(k for k, v in counts.items() if v >= self.min_count)
                if len(kept) < len(counts):
                    kept.append(OTHER)
                if len(kept) < 2:
                    raise UserError(
                        f"confounder {spec.column!r}: fewer than 2 levels with at least "
                        f"{self.min_count} rows; nothing to adjust for (rarer levels share one; if "
                        f"{spec.column!r} names randomized A/B tests, fit their own reward with {label('test')} "
                        f"{spec.column} instead of {label('confounder')})"
                    )
                self.state_.append({"levels": kept})
            elif spec.type == "hour":
                if not sm["range"][1] > sm["range"][0]:
                    raise UserError(f"confounder {spec.column!r} has a single hour")
                self.state_.append({"period": 24})
            elif spec.type == "weekday":
                if len(sm["days"]) < 2:
                    raise UserError(f"confounder {spec.column!r} has a single weekday")
                self.state_.append({"levels": list(WEEKDAYS)})
            else:
                q = np.unique(_quantiles(sm["values"], sm["counts"], np.linspace(0, 1, self.n_knots)))
                if len(q) < 2:
                    raise UserError(f"confounder {spec.column!r} has a single value")
                st: dict[str, Any] = {"knots": q.tolist()}
                if spec.type == "time":
                    st["calendar"] = ["weekday", "hour"] if sm["time_of_day"] else []
                self.state_.append(st)
        return self

    @staticmethod
    def _numeric(col: pd.Series, spec: ConfounderSpec) -> np.ndarray:
        v = pd.to_numeric(col, errors="coerce")
        bad = v.isna() | ~np.isfinite(v.to_numpy(dtype=float))
        if bad.any():
            raise UserError(
                f"numeric confounder {spec.column!r}: value {col[bad].iloc[0]!r} is not a finite number"
            )
        return v.to_numpy(dtype=float)

    def _spline(self, knots: list[float]) -> SplineTransformer:
        k = np.asarray(knots)[:, None]
        return SplineTransformer(knots=k, degree=self.degree, extrapolation="linear").fit(k)

    def transform(self, conf: pd.DataFrame) -> sp.csr_matrix:
        """The sparse design matrix; blocks in spec order (see :meth:`block_names`)."""
        blocks = []
        for spec, st in zip(self.specs, self.state_, strict=True):
            col = conf[spec.column]
            if spec.type == "categorical":
                levels = st["levels"]
                index = {lv: i for i, lv in enumerate(levels)}
                other = index.get(OTHER)
                codes = np.array([index.get(s, other if other is not None else -1)
                                  for s in col.astype(str).fillna("__missing__")])
                valid = codes >= 0  # an unseen level with no pooled level contributes nothing
                rows = np.flatnonzero(valid)
                blocks.append(sp.csr_matrix(
                    (np.ones(len(rows)), (rows, codes[valid])), shape=(len(col), len(levels))
                ))
            elif spec.type == "hour":
                blocks.append(sp.csr_matrix(_periodic_hours().transform(hour_values(col)[:, None])))
            elif spec.type == "weekday":
                blocks.append(_weekday_block(weekday_values(col)))
            else:
                calendar = st.get("calendar", [])
                if calendar:  # parse the timestamps once for the trend and the calendar terms
                    col = timestamps(col)
                v = time_values(col) if spec.type == "time" else self._numeric(col, spec)
                blocks.append(sp.csr_matrix(self._spline(st["knots"]).transform(v[:, None])))
                if "weekday" in calendar:
                    blocks.append(_weekday_block(weekday_values(col)))
                if "hour" in calendar:
                    blocks.append(sp.csr_matrix(_periodic_hours().transform(hour_values(col)[:, None])))
        return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((len(conf), 0))

    def setting(self, values: dict[str, str]) -> pd.DataFrame:
        """One row of confounder values given as text (``--at week=201410``), checked: every
        confounder of the design is set, no other column; a number where the type takes one;
        a categorical level the fit has seen. Values outside the fitted range of a trend or a
        numeric confounder are allowed (the spline extrapolates linearly) with a warning."""

        columns = [s.column for s in self.specs]
        unknown = [c for c in values if c not in columns]
        if unknown:
            raise UserError(f"{label('at')} {unknown[0]}: not a confounder of this reward (its confounders: "
                            + ", ".join(columns) + ")")
        missing = [c for c in columns if c not in values]
        if missing:
            raise UserError(f"{label('at')}: set every confounder of this reward; {missing[0]!r} is missing "
                            f"(e.g. {label('at')} {missing[0]}=VALUE)")
        row: dict[str, Any] = {}
        for spec, st in zip(self.specs, self.state_, strict=True):
            text = str(values[spec.column]).strip()
            number = pd.to_numeric(pd.Series([text]), errors="coerce").iloc[0]
            if spec.type == "categorical":
                if text not in st["levels"] or text == OTHER:
                    shown = [lv for lv in st["levels"] if lv != OTHER]
                    raise UserError(f"{label('at')} {spec.column}={text}: a level the reward was not fitted on (it knows "
                                    + ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else "") + ")")
                row[spec.column] = text
                continue
            if spec.type == "numeric" and pd.isna(number):
                raise UserError(f"{label('at')} {spec.column}={text}: expected a number")
            row[spec.column] = number if not pd.isna(number) else text
        frame = pd.DataFrame([row])
        try:
            self.transform(frame)
        except (UserError, ValueError) as exc:
            raise UserError(f"{label('at')}: {' '.join(str(exc).split())}") from None
        for spec, st in zip(self.specs, self.state_, strict=True):
            given = str(values[spec.column]).strip()
            if spec.type == "time" and "hour" in st.get("calendar", []) and ":" not in given \
                    and not given.isdigit():
                warnings.warn(f"--at {spec.column}={given}: no time of day given, and this reward's {spec.column!r} "
                              f"has an hour-of-day term: taken as 00:00 (give e.g. {given}T14:00 for 2 pm)",
                              DataWarning, stacklevel=2)
            if spec.type in ("time", "numeric"):
                v = (time_values(frame[spec.column]) if spec.type == "time"
                     else frame[spec.column].to_numpy(float))[0]
                if not np.isfinite(v):
                    raise UserError(f"{label('at')} {spec.column}={values[spec.column]}: not a valid {spec.type} value")
                lo, hi = st["knots"][0], st["knots"][-1]
                if not lo <= v <= hi:
                    warnings.warn(f"--at {spec.column}={values[spec.column]} is outside the fitted range: the "
                                  f"{'trend' if spec.type == 'time' else 'spline'} is extrapolated linearly",
                                  DataWarning, stacklevel=2)
        return frame

    def effect_curves(self, beta: np.ndarray, points: int = 200) -> list[dict[str, Any]]:
        """g(c) term by term, from the fitted coefficients ``beta`` of this design's columns: per
        term ``{"column", "term", "kind", "x", "effect"}`` with the effect centered at its mean over
        ``x`` (the level is the intercept's). ``kind`` is "curve" (x: days since 1970 for a trend,
        the value for a numeric confounder, hours for an hour of day) or "levels" (x: level names,
        Monday..Sunday for a weekday)."""
        beta = np.asarray(beta, dtype=float)
        out: list[dict[str, Any]] = []
        start = 0

        def add(spec: ConfounderSpec, term: str, kind: str, x: list, basis: np.ndarray) -> None:
            nonlocal start
            effect = basis @ beta[start:start + basis.shape[1]]
            start += basis.shape[1]
            out.append({"column": spec.column, "term": term, "kind": kind, "x": list(x),
                        "effect": (effect - effect.mean()).tolist()})

        hours = np.linspace(0, 24, 97)[:-1]
        for spec, st in zip(self.specs, self.state_, strict=True):
            if spec.type == "categorical":
                add(spec, "categorical", "levels", st["levels"], np.eye(len(st["levels"])))
            elif spec.type == "weekday":
                add(spec, "weekday", "levels", list(WEEKDAYS), np.eye(7))
            elif spec.type == "hour":
                add(spec, "hour", "curve", hours.tolist(), _periodic_hours().transform(hours[:, None]))
            else:
                grid = np.linspace(st["knots"][0], st["knots"][-1], points)
                add(spec, "trend" if spec.type == "time" else "numeric", "curve", grid.tolist(),
                    self._spline(st["knots"]).transform(grid[:, None]))
                if "weekday" in st.get("calendar", []):
                    add(spec, "weekday", "levels", list(WEEKDAYS), np.eye(7))
                if "hour" in st.get("calendar", []):
                    add(spec, "hour", "curve", hours.tolist(), _periodic_hours().transform(hours[:, None]))
        if start != len(beta):
            raise UserError(f"the confounder coefficients ({len(beta)}) do not match the design ({start} columns)")
        return out

    def terms(self) -> list[str]:
        """The terms of the design in words, e.g. ``created_at: trend + weekday + hour``."""
        out = []
        for spec, st in zip(self.specs, self.state_, strict=True):
            if spec.type == "time":
                parts = ["trend"] + list(st.get("calendar", []))
                out.append(f"{spec.column}: " + " + ".join(parts))
            else:  # the type's own name, as in config.json and the docs ("hour" is the cyclic hour of day)
                out.append(f"{spec.column}: {spec.type}")
        return out

    def column_owners(self) -> list[str]:
        """For each design column, the confounder column it comes from."""
        out: list[str] = []
        for spec, st in zip(self.specs, self.state_, strict=True):
            out += [spec.column] * ConfounderDesign(
                [spec], self.min_count, self.n_knots, self.degree)._with_state([st]).width()
        return out

    def _with_state(self, state: list[dict[str, Any]]) -> ConfounderDesign:
        self.state_ = state
        return self

    def width(self) -> int:
        """Number of design columns."""
        n = 0
        for spec, st in zip(self.specs, self.state_, strict=True):
            if spec.type in ("categorical", "weekday"):
                n += len(st["levels"])
            elif spec.type == "hour":
                n += HOUR_KNOTS - 1
            else:
                n += len(st["knots"]) + self.degree - 1
                n += 7 * ("weekday" in st.get("calendar", [])) + (HOUR_KNOTS - 1) * ("hour" in st.get("calendar", []))
        return n

    def fit_transform(self, conf: pd.DataFrame) -> sp.csr_matrix:
        return self.fit(conf).transform(conf)

    # -- persistence -----------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        return {
            "min_count": self.min_count, "n_knots": self.n_knots, "degree": self.degree,
            "confounders": [
                {"column": s.column, "type": s.type, **st}
                for s, st in zip(self.specs, self.state_, strict=True)
            ],
            "terms": self.terms(),
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ConfounderDesign:
        specs = [ConfounderSpec(c["column"], c["type"]) for c in cfg["confounders"]]
        design = cls(specs, cfg["min_count"], cfg["n_knots"], cfg["degree"])
        design.state_ = [
            {k: v for k, v in c.items() if k not in ("column", "type")} for c in cfg["confounders"]
        ]
        return design
