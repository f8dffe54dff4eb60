"""Confounder design psi(c): one-hot for categorical, spline basis for numeric and time.

All confounders enter additively (METHOD.md: no x-by-c interaction in DeconfoundLM). The
design's learned state (kept levels, knot positions) is plain JSON, so a saved reward model
can rebuild it without pickle.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import SplineTransformer

from deconfoundlm.errors import UserError
from deconfoundlm.logs.roles import ConfounderSpec

OTHER = "__other__"


def time_values(series: pd.Series) -> np.ndarray:
    """Convert a time confounder to days since 1970-01-01 (float).

    Accepts dates/datetimes (strings or datetime dtype) and integer ``YYYYWW`` week codes
    (WW 00-53).
    """
    name = series.name
    if pd.api.types.is_datetime64_any_dtype(series):
        ts = pd.to_datetime(series)
    elif pd.api.types.is_numeric_dtype(series):
        codes = series.to_numpy(dtype=float)
        if not np.isfinite(codes).all():
            raise UserError(f"time confounder {name!r}: non-finite value {codes[~np.isfinite(codes)][0]!r}")
        ints = codes.astype(np.int64)
        weeks, years = ints % 100, ints // 100
        ok = (ints == codes) & (weeks <= 53) & (years >= 1900) & (years <= 2200)
        if not ok.all():
            raise UserError(
                f"time confounder {name!r}: numeric value {codes[~ok][0]!r} is not a YYYYWW week "
                "code; give dates, or declare the column as numeric"
            )
        # Week WW of year YYYY starts about 7*WW days after Jan 1 (week 00 or 01 first, as
        # strftime's %U/%W and ISO weeks differ by at most a week; order is what matters).
        jan1 = {y: (dt.date(int(y), 1, 1) - dt.date(1970, 1, 1)).days for y in np.unique(years)}
        return np.array([jan1[y] for y in years], dtype=float) + 7.0 * weeks
    else:
        text = series.astype(str).where(series.notna())
        try:
            ts = pd.to_datetime(text, errors="coerce", format="mixed")
        except (ValueError, TypeError):  # several time zones (or aware and naive) in one column
            ts = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
        bad = ts.isna() & series.notna()
        if bad.any():
            raise UserError(
                f"time confounder {name!r}: cannot parse {str(series[bad].iloc[0])[:60]!r} as a date/time"
            )
    # Time-zone-aware values are converted to UTC; naive ones are taken as given.
    ts = ts.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(ts.dt, "tz", None) is not None else ts
    return ((ts - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)).to_numpy(dtype=float)


class ConfounderDesign:
    """psi(c) for a list of confounder specs.

    Parameters
    ----------
    specs : confounder columns and types.
    min_count : categorical levels seen fewer times are pooled into one ``__other__`` level
        (also used for levels unseen at fit time).
    n_knots : spline knots (at quantiles) for numeric and time confounders.
    """

    def __init__(self, specs: tuple[ConfounderSpec, ...] | list[ConfounderSpec],
                 min_count: int = 5, n_knots: int = 8, degree: int = 3) -> None:
        self.specs = tuple(specs)
        self.min_count = min_count
        self.n_knots = n_knots
        self.degree = degree

    # -- fit / transform -------------------------------------------------------------------
    def fit(self, conf: pd.DataFrame) -> ConfounderDesign:
        self.state_: list[dict[str, Any]] = []
        for spec in self.specs:
            col = conf[spec.column]
            if spec.type == "categorical":
                levels = col.astype(str).fillna("__missing__")
                counts = levels.value_counts()
                kept = sorted(counts[counts >= self.min_count].index.tolist())
                if len(kept) < len(counts):
                    kept.append(OTHER)
                if len(kept) < 2:
                    raise UserError(
                        f"confounder {spec.column!r}: fewer than 2 levels with at least "
                        f"{self.min_count} rows; nothing to adjust for"
                    )
                self.state_.append({"levels": kept})
            else:
                v = time_values(col) if spec.type == "time" else self._numeric(col, spec)
                q = np.unique(np.quantile(v, np.linspace(0, 1, self.n_knots)))
                if len(q) < 2:
                    raise UserError(f"confounder {spec.column!r} has a single value")
                self.state_.append({"knots": q.tolist()})
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
            else:
                v = time_values(col) if spec.type == "time" else self._numeric(col, spec)
                blocks.append(sp.csr_matrix(self._spline(st["knots"]).transform(v[:, None])))
        return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((len(conf), 0))

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
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ConfounderDesign:
        specs = [ConfounderSpec(c["column"], c["type"]) for c in cfg["confounders"]]
        design = cls(specs, cfg["min_count"], cfg["n_knots"], cfg["degree"])
        design.state_ = [
            {k: v for k, v in c.items() if k not in ("column", "type")} for c in cfg["confounders"]
        ]
        return design
