"""Property-based tests of the readers and validators (hypothesis).

Random frames with NaN / inf / mixed types / duplicate names / empty strings must either give a
fit with finite outputs, or raise the tool's UserError: never anything else.
"""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deconfoundlm.errors import UserError
from deconfoundlm.logs.roles import ColumnRoles, ConfounderSpec
from deconfoundlm.logs.validate import DataWarning, load_log, validate_log
from deconfoundlm.pipeline import fit_reward

CELLS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-5, 1000),
    st.booleans(),
    st.sampled_from(["", " ", "0", "1", "nan", "inf", "-inf", "2016-01-01", "8/4/2016 11:52",
                     "2015-06-01T10:00+02:00", "You won't believe this", "10 facts", "a,b", "\"q\""]),
    st.text(max_size=12),
)


GOOD = {
    "t": st.sampled_from(["good news", "bad news", "10 cats", "why?", "you!", "", "A B C"]),
    "y": st.integers(0, 20),
    "n": st.integers(20, 40),
    "w": st.floats(0.1, 3.0),
}
GOOD_CONFOUNDER = {
    "categorical": st.sampled_from(["a", "b", "c", 1, 2]),
    "numeric": st.floats(-10, 10),
    "time": st.sampled_from(["2016-01-01", "2016-03-01", "2016-06-01 10:00", "2017-01-05"]),
}


ROLES = st.builds(
    lambda ctype, trials, weights: ColumnRoles(
        text="t", outcome="y", trials="n" if trials else None, weights="w" if weights else None,
        confounders=(ConfounderSpec("c", ctype),)),
    st.sampled_from(["categorical", "numeric", "time"]), st.booleans(), st.booleans())

RARE = st.sampled_from([False] * 9 + [True])


@st.composite
def frames(draw):
    """(frame, roles): the role columns t, y, n, w, c mostly well-typed, with random bad cells,
    sometimes a whole column of anything, sometimes a missing or a duplicated column."""
    roles = draw(ROLES)
    n = draw(st.integers(0, 60))
    columns, names = [], []
    for name, good in {**GOOD, "c": GOOD_CONFOUNDER[roles.confounders[0].type]}.items():
        if draw(RARE):
            continue  # a missing column
        kind = draw(st.sampled_from(["good"] * 6 + ["anything"]))
        values = draw(st.lists(good if kind == "good" else CELLS, min_size=n, max_size=n))
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2])) if n else 0):  # a few bad cells
            values[draw(st.integers(0, n - 1))] = draw(CELLS)
        columns.append(values)
        names.append(name)
    if names and draw(RARE):  # a duplicated name
        columns.append(columns[0])
        names.append(names[0])
    df = pd.DataFrame(dict(enumerate(columns)), index=range(n))
    df.columns = names
    return df, roles


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _finite_or_user_error(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            return fn()
    except UserError:
        return None


@pytest.mark.property
@SETTINGS
@given(case=frames())
def test_validate_log_is_finite_or_user_error(case):
    df, roles = case
    log = _finite_or_user_error(lambda: validate_log(df, roles))
    if log is None:
        return
    assert len(log) > 0 and len(log.texts) == len(log.outcome)
    assert np.isfinite(log.outcome).all()
    for arr in (log.trials, log.weights):
        assert arr is None or np.isfinite(arr).all()
    assert all(isinstance(t, str) for t in log.texts)


@pytest.mark.property
@SETTINGS
@given(case=frames(), ext=st.sampled_from(["csv", "jsonl", "parquet"]))
def test_readers_are_clean_or_user_error(tmp_path_factory, case, ext):
    df, roles = case
    path = tmp_path_factory.mktemp("prop") / f"log.{ext}"
    try:
        if ext == "csv":
            df.to_csv(path, index=False)
        elif ext == "jsonl":
            df.to_json(path, orient="records", lines=True)
        else:
            df.astype(str).to_parquet(path)
    except (ValueError, TypeError):  # a frame the writer itself refuses (e.g. duplicate names)
        return
    _finite_or_user_error(lambda: load_log(path, roles))


@pytest.mark.property
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=frames(), method=st.sampled_from(["naive", "deconfound"]))
def test_fit_is_finite_or_user_error(case, method):
    df, roles = case
    def fit():
        return fit_reward(df, text=roles.text, outcome=roles.outcome, trials=roles.trials,
                          weights=roles.weights, confounders=list(roles.confounders), method=method,
                          encoder="hashing-32", cv=2)

    reward = _finite_or_user_error(fit)
    if reward is None:
        return
    assert np.isfinite(reward.score(["good news", "why?", ""])).all()
    json.dumps(reward.metrics, allow_nan=False)  # strict JSON (None where not estimable)


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinite_outcome_is_a_user_error(value):
    df = pd.DataFrame({"t": ["a b", "c d"] * 20, "y": [1.0, 2.0] * 20, "c": list(range(40))})
    df.loc[3, "y"] = value
    with pytest.raises(UserError, match="infinite"):
        validate_log(df, ColumnRoles("t", "y", confounders=(ConfounderSpec("c", "numeric"),)))


def test_poisson_cv_deviance_stays_finite_when_a_fold_mean_underflows():
    # Found by the property test above: mostly-zero counts, one text, a numeric confounder whose
    # spline extrapolates; a held-out count where the fold model's mean underflows to 0 made the
    # CV deviance inf (and metrics.json non-strict). The deviance is now computed in log space.
    from deconfoundlm.glm import families

    y = np.array([2] + [0] * 14 + [1] + [0] * 5, dtype=float)
    c = [2.0] + [0.0] * 7 + [2.5] + [0.0] * 6 + [4.0, 0.0, 0.0, 0.0, 2.0, 1.0]
    df = pd.DataFrame({"t": ["good news"] * 21, "y": y, "c": c})
    reward = fit_reward(df, text="t", outcome="y", confounders=["c:numeric"], encoder="hashing-32", cv=2)
    assert reward.estimator.family_ == "poisson" and np.isfinite(reward.metrics["cv_deviance"])
    json.dumps(reward.metrics, allow_nan=False)
    d = families.get_family("poisson").unit_deviance(np.array([-800.0]), np.array([3.0]), np.array([1.0]))
    assert np.isfinite(d).all() and d[0] > 4000  # 2 * (3 * (log 3 + 800) - 3)
