"""Count outcomes (poisson) and calendar confounders (hour, weekday, time of day)."""

import json

import numpy as np
import pandas as pd
import pytest

from deconfoundlm import fit_reward, load_reward
from deconfoundlm.cli import main
from deconfoundlm.errors import UserError
from deconfoundlm.features.confounders import ConfounderDesign
from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.logs.validate import validate_log
from deconfoundlm.logs.values import hour_values, weekday_values


def stamps(n, with_time=True, seed=0):
    rng = np.random.default_rng(seed)
    base = pd.Timestamp("2016-01-04")  # a Monday
    minutes = rng.integers(0, 60 * 24 * 120, size=n) if with_time else 60 * 24 * rng.integers(0, 120, size=n)
    return pd.Series([base + pd.Timedelta(minutes=int(m)) for m in minutes], name="t")


def test_time_with_time_of_day_expands_to_trend_weekday_hour():
    t = stamps(500)
    design = ConfounderDesign([ConfounderSpec("t", "time")]).fit(pd.DataFrame({"t": t}))
    assert design.terms() == ["t: trend + weekday + hour"]
    psi = design.transform(pd.DataFrame({"t": t}))
    assert psi.shape[1] == design.width() == (8 + 3 - 1) + 7 + 6
    # the weekday block is a one-hot of the day of week
    wd = psi[:, 10:17].toarray()
    np.testing.assert_array_equal(wd.argmax(1), t.dt.day_of_week.to_numpy())
    assert json.dumps(design.to_config())  # plain JSON


def test_dates_without_time_stay_a_trend():
    t = stamps(300, with_time=False).dt.strftime("%Y-%m-%d")
    design = ConfounderDesign([ConfounderSpec("t", "time")]).fit(pd.DataFrame({"t": t}))
    assert design.terms() == ["t: trend"] and design.width() == 10


def test_hour_is_cyclic_and_weekday_accepts_names_numbers_and_timestamps():
    design = ConfounderDesign([ConfounderSpec("h", "hour")]).fit(pd.DataFrame({"h": [0.0, 6.0, 12.0, 18.0]}))
    psi = design.transform(pd.DataFrame({"h": [0.0, 23.999, 12.0]})).toarray()
    assert np.abs(psi[0] - psi[1]).max() < 1e-3  # midnight from both sides
    assert np.abs(psi[0] - psi[2]).max() > 0.3
    days = pd.Series(["Monday", "tue", "Sun"], name="d")
    np.testing.assert_array_equal(weekday_values(days), [0, 1, 6])
    np.testing.assert_array_equal(weekday_values(pd.Series([0, 1, 6], name="d")), [0, 1, 6])
    np.testing.assert_array_equal(weekday_values(pd.Series(["2016-01-04", "2016-01-10"], name="d")), [0, 6])
    with pytest.raises(UserError, match="'h'.*not an hour"):
        hour_values(pd.Series([3.0, 25.0], name="h"))
    abbreviated = pd.Series(["Tues.", "WEDS", "thurs", "Thu", "saturday"], name="d")
    np.testing.assert_array_equal(weekday_values(abbreviated), [1, 2, 3, 3, 5])


@pytest.mark.parametrize("word", ["Monkey", "Tuesdays", "Satan", "Sunshine", "Frisbee"])
def test_words_that_merely_start_like_a_day_are_not_days(word):
    with pytest.raises(UserError, match=f"'d'.*{word!r} is not a day name"):
        weekday_values(pd.Series(["Monday", word], name="d"))


def test_a_csv_with_a_byte_order_mark_keeps_its_first_column_name(tmp_path):
    from deconfoundlm.logs.roles import ColumnRoles
    from deconfoundlm.logs.validate import load_log

    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + b"headline,y\n" + b"".join(b"t%d,%d\n" % (i, i % 3) for i in range(20)))
    log = load_log(path, ColumnRoles(text="headline", outcome="y"))
    assert log.texts[:2] == ["t0", "t1"] and len(log) == 20


def test_aware_timestamps_are_converted_to_utc():
    hours = hour_values(pd.Series(["2016-01-01 10:00+02:00", "2016-01-01 10:00-05:00", "2016-01-01 10:00"],
                                  name="t"))
    np.testing.assert_allclose(hours, [8.0, 15.0, 10.0])


def _counts(n=3000, seed=0):
    """Counts whose level moves with posting hour and weekday; 'show' titles get more points
    because they are posted at busy hours; 'rust' titles get 1.5x points causally."""
    rng = np.random.default_rng(seed)
    t = stamps(n, seed=seed)
    hour = t.dt.hour.to_numpy() + t.dt.minute.to_numpy() / 60
    busy = np.cos(2 * np.pi * (hour - 16) / 24)  # attention peaks in the afternoon
    show = rng.random(n) < 1 / (1 + np.exp(-(2.5 * busy - 1)))
    rust = rng.random(n) < 0.3
    words = np.array(["new", "tool", "release", "notes", "build", "data"])
    titles = [" ".join(rng.choice(words, 4)) + (" rust" if r else "") + (" show" if s else "")
              for r, s in zip(rust, show, strict=True)]
    eta = 1.0 + np.log(1.5) * rust + 1.2 * busy + 0.3 * (t.dt.day_of_week.to_numpy() < 5)
    y = rng.poisson(np.exp(eta))
    return pd.DataFrame({"title": titles, "points": y, "created_at": t.dt.strftime("%m/%d/%Y %H:%M")})


def word_effect(reward, word):
    base = ["new tool release notes", "build data new tool", "notes data build release"]
    return float(np.mean(reward.score([b + " " + word for b in base]) - reward.score(base)))


def test_poisson_with_calendar_confounder_recovers_the_count_effect(tmp_path, capsys):
    df = _counts()
    path = tmp_path / "hn.csv"
    df.to_csv(path, index=False)
    code = main(["fit-reward", str(path), "--text", "title", "--outcome", "points", "--confounder",
                 "created_at:time", "--encoder", "hashing", "--cv", "3", "--out", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert code == 0
    assert "family: poisson (auto" in out and "created_at: trend + weekday + hour" in out
    dec = load_reward(tmp_path / "m")
    naive = fit_reward(df, text="title", outcome="points", method="naive", encoder="hashing", cv=3,
                       diagnose=False)
    assert naive.estimator.family_ == dec.estimator.family_ == "poisson"
    assert word_effect(naive, "show") > 0.3  # the posting hour leaks into the naive reward
    assert abs(word_effect(dec, "show")) < 0.15
    assert abs(word_effect(dec, "rust") - np.log(1.5)) < 0.15
    log = validate_log(df, dec.roles)
    labels = dec.deconfounded_labels(log)
    assert np.isfinite(labels).all() and len(labels) == len(log)


def test_poisson_exposure_is_read_from_trials(tmp_path):
    rng = np.random.default_rng(1)
    n = 2000
    exposure = rng.integers(1, 50, size=n).astype(float)
    good = rng.random(n) < 0.5
    c = rng.normal(size=n)
    y = rng.poisson(exposure * np.exp(-1 + 0.4 * good + 0.5 * c))
    df = pd.DataFrame({"text": np.where(good, "great news today", "plain news today"), "y": y, "e": exposure,
                       "c": c})
    r = fit_reward(df, text="text", outcome="y", trials="e", family="poisson", confounders=["c:numeric"],
                   encoder="hashing", cv=3, diagnose=False)
    diff = r.score(["great news today"])[0] - r.score(["plain news today"])[0]
    assert abs(diff - 0.4) < 0.1
    assert (df["y"] > df["e"]).any()  # counts above the exposure are fine for poisson


@pytest.mark.parametrize("family,values,needle", [
    ("poisson", [-1, 2, 3], "non-negative"),
    ("binomial", [5, 2, 3], "exceeds"),
])
def test_count_family_errors(family, values, needle):
    df = pd.DataFrame({"t": ["a b", "c d", "e f"] * 10, "y": values * 10, "n": [3, 3, 3] * 10,
                       "c": list(range(30))})
    with pytest.raises(UserError, match=needle):
        fit_reward(df, text="t", outcome="y", trials="n" if family == "binomial" else None, family=family,
                   confounders=["c:numeric"], encoder="hashing", cv=2)


def test_the_hour_term_has_one_name():
    design = ConfounderDesign([ConfounderSpec("created_at", "hour"), ConfounderSpec("t", "time")]).fit(
        pd.DataFrame({"created_at": ["2016-01-04 10:00", "2016-01-05 22:30", "2016-01-06 03:15"] * 4,
                      "t": ["2016-01-04 10:00", "2016-02-05 22:30", "2016-03-06 03:15"] * 4}))
    assert design.terms() == ["created_at: hour", "t: trend + weekday + hour"]
    config = design.to_config()
    assert config["confounders"][0]["type"] == "hour" and config["terms"][0] == "created_at: hour"
