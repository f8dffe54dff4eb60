"""The learning curve ("what is the log worth?"): its summary, the crossing point, and the
benchmark subcommand end to end on a small log and tests."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import one_error_line, run_cli, write_log_and_tests
from scipy import stats

from deconfoundlm.evaluation.ab_curve import format_curve, log_worth, summarize_curve


def per_split(values: dict) -> pd.DataFrame:
    rows = []
    for (tests, curve), accs in values.items():
        for split, acc in enumerate(accs):
            rows.append({"split": split, "tests": tests if tests else 500 + split, "all": tests is None,
                         "curve": curve, "accuracy": acc})
    return pd.DataFrame(rows)


def test_summary_is_the_mean_with_a_t_interval_over_splits():
    table = summarize_curve(per_split({(50, "tests only"): [0.55, 0.6, 0.65], (50, "log only"): [0.7, 0.7, 0.7]}))
    row = table[table["curve"] == "tests only"].iloc[0]
    half = stats.t.ppf(0.975, 2) * np.std([0.55, 0.6, 0.65], ddof=1) / np.sqrt(3)
    assert row["accuracy"] == pytest.approx(0.6) and row["ci_low"] == pytest.approx(0.6 - half)
    assert row["splits"] == 3
    # "all" rows are one row whatever the number of tests in each split.
    table = summarize_curve(per_split({(None, "tests only"): [0.7, 0.72], (None, "log only"): [0.68, 0.68]}))
    assert len(table) == 2 and table["all"].all() and (table["tests"] == 500).all()


def test_log_worth_interpolates_in_log_tests():
    table = summarize_curve(per_split({
        (100, "tests only"): [0.60, 0.60], (400, "tests only"): [0.70, 0.70], (100, "log only"): [0.65, 0.65]}))
    worth = log_worth(table)
    assert worth["tests"] == 200 and "200" in worth["says"]  # halfway between 100 and 400 on log N
    assert "the log is worth about 200" in format_curve(table, worth)
    never = summarize_curve(per_split({(100, "tests only"): [0.6, 0.6], (100, "log only"): [0.7, 0.7]}))
    assert log_worth(never)["tests"] is None and "more than all" in log_worth(never)["says"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_log_and_tests(tmp_path_factory.mktemp("curve"), 1, 600, 600)


ARGS = ["--text", "headline", "--outcome", "clicks", "--trials", "impressions", "--confounder", "test_week:time",
        "--test", "test_id", "--encoder", "hashing", "--cv", "3"]


@pytest.mark.slow
def test_benchmark_ab_curve_writes_the_curve_and_its_report(small, capsys):
    out = small / "out"
    code, err, stdout = run_cli(["benchmark", "ab-curve", small / "log.csv", small / "ab.csv", *ARGS, "--sizes", "40",
                                 "--splits", "2", "--out", out], capsys)
    assert code == 0, err
    assert "the log is worth" in stdout
    table = pd.read_csv(out / "learning_curve.csv")
    assert set(table["curve"]) == {"tests only", "log + tests", "log only"}
    assert set(table.loc[~table["all"], "tests"]) == {40} and table["all"].any()
    assert table["accuracy"].between(0, 1).all() and (table["splits"] == 2).all()
    facts = json.loads((out / "learning_curve.json").read_text())
    assert facts["log_fingerprint"] and facts["ab_fingerprint"] and facts["test"] == "test_id"
    page = (out / "report.html").read_text()
    assert "What is the log worth" in page and "data:image/png" in page
    # The user's own data: not headed as a semi-synthetic benchmark, not attributed to the Upworthy archive.
    assert "Semi-synthetic" not in page and "Upworthy Research Archive" not in page
    assert "Significant held-out pairs per split" in page and "two-proportion z-test" in page
    # Same seed, same curve.
    code, err, _ = run_cli(["benchmark", "ab-curve", small / "log.csv", small / "ab.csv", *ARGS, "--sizes", "40",
                            "--splits", "2", "--out", small / "again"], capsys)
    assert code == 0, err
    pd.testing.assert_frame_equal(table, pd.read_csv(small / "again" / "learning_curve.csv"))


@pytest.mark.parametrize("bad, needle", [(["--splits", "1"], "--splits"), (["--sizes", "1,x"], "--sizes"),
                                         (["--heldout", "0.99"], "--heldout")])
def test_benchmark_ab_curve_bad_flags(small, bad, needle, capsys, tmp_path):
    code, err, _ = run_cli(["benchmark", "ab-curve", small / "log.csv", small / "ab.csv", *ARGS, *bad,
                            "--out", tmp_path / "o"], capsys)
    one_error_line(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_the_all_tests_point_reuses_a_fitted_tests_only_reward():
    """split_curve with the tests-only reward on all its tests already fitted (the demo's
    experimental reference) gives the same rows as fitting it there."""
    from deconfoundlm.evaluation.ab_curve import SplitData, split_curve
    from deconfoundlm.rewards.grounding import ABFeatures, tests_only_reward

    rng = np.random.default_rng(4)
    T, arms, p = 150, 3, 5
    x = rng.normal(size=(T * arms, p))
    tests = np.repeat(np.arange(100, 100 + T), arms)
    beta = rng.normal(size=p) * 0.3
    n = np.full(len(x), 500.0)
    y = rng.binomial(500, 1 / (1 + np.exp(-(-2.5 + 0.5 * rng.normal(size=T)[tests - 100] + x @ beta)))).astype(float)
    log_reward = tests_only_reward(ABFeatures(x[::2], np.unique(tests[::2], return_inverse=True)[1], y[::2], n[::2]),
                                   family="binomial", cv=3, seed=1)
    eval_x = rng.normal(size=(40, p))
    truth = eval_x @ beta
    pairs = pd.DataFrame({"i": np.arange(0, 40, 2), "j": np.arange(1, 40, 2), "test_id": np.arange(20)})
    pairs["sign"] = np.sign(truth[pairs["i"]] - truth[pairs["j"]])
    codes = np.unique(tests, return_inverse=True)[1]
    kw = dict(log_reward=log_reward, log_x=x[::2], x=x, tests=tests, y=y, n=n, w=None, eval_x=eval_x, pairs=pairs)
    own_all = tests_only_reward(ABFeatures(x, codes, y, n), family="binomial", cv=3, seed=7)
    fresh = split_curve(SplitData(**kw), [50, None], "binomial", cv=3, seed=7)
    reused = split_curve(SplitData(**kw, tests_only_all=own_all), [50, None], "binomial", cv=3, seed=7)
    assert fresh == reused
    assert [r["curve"] for r in reused if r["all"]] == ["tests only", "log + tests", "log only"]


def test_benchmark_ab_curve_compares_counts_with_exposures_as_rates(tmp_path, capsys):
    """--family poisson with --trials: the held-out pairs are tested as rates (the counts exceed
    their exposures: as successes out of trials no pair could be tested)."""
    rng = np.random.default_rng(8)
    words = "you why how this data news cats dogs facts record".split()

    def text():
        return " ".join(rng.choice(words, size=5))

    def rate(t):  # 'you' raises the rate, 'record' lowers it
        return np.exp(1.0 + 0.6 * ("you" in t.split()) - 0.6 * ("record" in t.split()))

    log = pd.DataFrame({"text": [text() for _ in range(800)], "slot": rng.choice(["top", "side"], 800),
                        "hours": rng.integers(2, 30, 800)})
    log["views"] = rng.poisson(log["hours"] * log["text"].map(rate) * np.where(log["slot"] == "top", 2.0, 1.0))
    ab = pd.DataFrame([{"test": f"e{t}", "text": x, "hours": h, "views": int(rng.poisson(h * rate(x)))}
                       for t in range(120) for x in (text(), text(), text()) for h in [int(rng.integers(5, 40))]])
    assert (ab["views"] > ab["hours"]).mean() > 0.5
    log.to_csv(tmp_path / "log.csv", index=False)
    ab.to_csv(tmp_path / "ab.csv", index=False)
    code, err, _ = run_cli(["benchmark", "ab-curve", tmp_path / "log.csv", tmp_path / "ab.csv", "--text", "text",
                            "--outcome", "views", "--trials", "hours", "--family", "poisson", "--confounder",
                            "slot:categorical", "--test", "test", "--encoder", "hashing", "--cv", "3", "--sizes",
                            "30", "--splits", "2", "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    facts = json.loads((tmp_path / "out" / "learning_curve.json").read_text())
    assert facts["pair_test"] == "exact test of two Poisson rates given their exposures"
    assert len(facts["held_out_pairs"]) == 2 and min(facts["held_out_pairs"]) >= 20
    table = pd.read_csv(tmp_path / "out" / "learning_curve.csv")
    assert table.loc[table["curve"] == "log only", "accuracy"].min() > 0.7
    assert "held-out pairs per split" in (tmp_path / "out" / "summary.md").read_text()
    page = (tmp_path / "out" / "report.html").read_text()
    assert "what is your log worth" in page and "exact test of two Poisson rates given their exposures" in page


def two_arm_tests(seed: int, T: int, pairs: int, p: int = 4):
    """T binomial tests of two texts (features, test codes, trials, clicks), a reward fitted on them
    standing in for the log's, and held-out features with ``pairs`` judged pairs."""
    from deconfoundlm.rewards.grounding import ABFeatures, tests_only_reward

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T * 2, p))
    tests = np.repeat(np.arange(T), 2)
    n = np.full(len(x), 400.0)
    y = rng.binomial(400, 1 / (1 + np.exp(-(-2.0 + x @ np.array([0.4, -0.3, 0.0, 0.2]))))).astype(float)
    log_reward = tests_only_reward(ABFeatures(x, tests, y, n), family="binomial", cv=3, seed=0)
    judged = pd.DataFrame({"i": 2 * np.arange(pairs), "j": 2 * np.arange(pairs) + 1, "test_id": np.arange(pairs),
                           "sign": np.where(np.arange(pairs) % 2, -1, 1)})
    return x, tests, n, y, log_reward, rng.normal(size=(10, p)), judged


def test_sizes_at_or_above_the_training_tests_give_the_all_point_once():
    """--sizes 200,400 with 60 training tests: one "all" point per curve (not three rows that the
    summary would count as three splits)."""
    from deconfoundlm.evaluation.ab_curve import SplitData, split_curve

    x, tests, n, y, log_reward, eval_x, pairs = two_arm_tests(5, 60, 3)
    data = SplitData(log_reward=log_reward, log_x=x, x=x, tests=tests, y=y, n=n, w=None, eval_x=eval_x, pairs=pairs)
    rows = split_curve(data, [20, 200, 400, None], "binomial", cv=3, seed=0)
    assert [(r["tests"], r["all"]) for r in rows if r["curve"] == "tests only"] == [(20, False), (60, True)]
    table = summarize_curve(pd.DataFrame([{"split": s, **r} for s in (0, 1) for r in rows]))
    assert len(table) == 6 and (table["splits"] == 2).all()


def test_a_sample_of_tests_without_evidence_keeps_the_logs_reward():
    """The first N tests of a split may all lack a success (the file holds enough other tests):
    the curve's point is the log's reward as it is and a tests-only reward that ranks nothing (it
    divided by zero)."""
    from deconfoundlm.evaluation.ab_curve import SplitData, split_curve

    x, tests, n, y, log_reward, eval_x, pairs = two_arm_tests(6, 40, 4)
    order = np.random.default_rng([0, 17]).permutation(np.arange(40))
    dead = np.isin(tests, order[:10])  # the first 10 tests of the curve's permutation: no click at all
    data = SplitData(log_reward=log_reward, log_x=x, x=x, tests=tests, y=np.where(dead, 0.0, y), n=n, w=None,
                     eval_x=eval_x, pairs=pairs)
    rows = {(r["tests"], r["curve"]): r for r in split_curve(data, [1, 10, None], "binomial", cv=3, seed=0)}
    log_only = rows[(1, "log only")]["accuracy"]
    for size in (1, 10):
        assert rows[(size, "log + tests")]["accuracy"] == log_only
        assert rows[(size, "log + tests")]["strength"] is None
        assert rows[(size, "tests only")]["accuracy"] == 0.5  # every pair a tie
    assert (40, "log + tests") in rows


def test_the_default_sizes_reach_the_command():
    """Without --sizes the curve takes 50,100,...,1600 (the CLI crashed: the default was not passed on)."""
    from deconfoundlm.cli import _config, build_parser
    from deconfoundlm.configs import CURVE_SIZES

    args = build_parser().parse_args(["benchmark", "ab-curve", "log.csv", "ab.csv", "--text", "t", "--outcome", "y",
                                      "--test", "g", "--out", "o"])
    assert _config(args).sizes == CURVE_SIZES == (50, 100, 200, 400, 800, 1600)
