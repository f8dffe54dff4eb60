"""``deconfoundlm evaluate``: pairwise accuracy on a user's own A/B tests, checked against an
independent pair-by-pair computation (plain loops, scipy's own tests)."""

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import planted_log
from scipy import stats

from deconfoundlm import load_reward
from deconfoundlm.cli import main
from deconfoundlm.errors import UserError
from deconfoundlm.evaluation.evaluate import (
    cluster_bootstrap,
    evaluate,
    read_ab_tests,
    significant_pairs,
)


@pytest.fixture(scope="module")
def rewards(tmp_path_factory):
    """Two small rewards on the planted log ('alpha' raises the outcome): deconfound and naive."""
    d = tmp_path_factory.mktemp("rewards")
    log = d / "log.csv"
    planted_log(600).to_csv(log, index=False)
    for method, conf in (("naive", []), ("deconfound", ["--confounder", "c:numeric"])):
        assert main(["fit-reward", str(log), "--text", "text", "--outcome", "y", *conf, "--method", method,
                     "--encoder", "hashing", "--cv", "3", "--out", str(d / method)]) == 0
    return d / "naive", d / "deconfound"


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = "alpha the a you why how this is what cats dogs facts news".split()
    return [" ".join(rng.choice(words, size=5)) for _ in range(n)]


def ab_binomial(n_tests: int = 40, arms: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tests):
        for text in _texts(arms, seed * 1000 + t):
            n = int(rng.integers(500, 3000))
            p = 0.02 + 0.03 * ("alpha" in text) + 0.01 * rng.random()
            rows.append({"test": f"t{t}", "text": text, "clicks": int(rng.binomial(n, p)), "views": n})
    return pd.DataFrame(rows)


def independent_binomial_accuracy(df: pd.DataFrame, scores: dict[str, float], alpha: float) -> tuple[float, int]:
    """Pair by pair with plain Python: pooled two-proportion z, two-sided p from erfc."""
    right = total = 0.0
    for _, g in df.groupby("test"):
        for a, b in itertools.combinations(g.to_dict("records"), 2):
            if a["text"] == b["text"]:
                continue
            p = (a["clicks"] + b["clicks"]) / (a["views"] + b["views"])
            se = math.sqrt(p * (1 - p) * (1 / a["views"] + 1 / b["views"]))
            z = (a["clicks"] / a["views"] - b["clicks"] / b["views"]) / se
            if math.erfc(abs(z) / math.sqrt(2)) >= alpha:
                continue
            d = scores[a["text"]] - scores[b["text"]]
            total += 1
            right += 0.5 if d == 0 else float((d > 0) == (z > 0))
    return right / total, int(total)


def test_binomial_accuracy_matches_an_independent_computation(rewards, tmp_path):
    df = ab_binomial()
    path = tmp_path / "ab.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "e.json"
    assert main(["evaluate", *map(str, rewards), str(path), "--text", "text", "--test", "test",
                 "--outcome", "clicks", "--trials", "views", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    for entry, d in zip(report["rewards"], rewards, strict=True):
        r = load_reward(d)
        texts = df["text"].unique().tolist()
        acc, n = independent_binomial_accuracy(df, dict(zip(texts, r.score(texts), strict=True)), 0.05)
        assert report["pairs"] == n > 20
        assert entry["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert entry["ci_low"] <= entry["accuracy"] <= entry["ci_high"]
    # The planted word makes a winner; the rewards learned it, so they rank well above chance.
    assert report["rewards"][1]["accuracy"] > 0.7
    diff = report["differences"][0]
    assert diff["difference"] == pytest.approx(report["rewards"][1]["accuracy"] - report["rewards"][0]["accuracy"])
    assert diff["ci_low"] <= diff["difference"] <= diff["ci_high"]
    assert "NaN" not in out.read_text()


def test_the_table_names_each_reward_by_its_whole_folder(rewards, tmp_path, capsys):
    """Folders whose paths share their last 40 characters stay apart in the printed table."""
    df = ab_binomial()
    path = tmp_path / "ab.csv"
    df.to_csv(path, index=False)
    names = []
    for d in rewards:
        long = tmp_path / f"{d.name}_run_of_the_seventh_of_december" / "reward_of_the_log_grounded_on_tests"
        long.parent.mkdir()
        long.symlink_to(d, target_is_directory=True)
        names.append(str(long))
    out = tmp_path / "e.json"
    assert main(["evaluate", *names, str(path), "--text", "text", "--test", "test", "--outcome", "clicks",
                 "--trials", "views", "--quiet", "--out", str(out)]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0] in names and line.split()[1] != "-"}
    assert list(rows) == names  # each whole, one row each, in order
    report = json.loads(out.read_text())
    assert [float(rows[e["model_dir"]]) for e in report["rewards"]] == [round(e["accuracy"], 3) for e in report["rewards"]]


def test_welch_pairs_match_scipy_on_raw_rows():
    rng = np.random.default_rng(1)
    rows = [{"test": f"t{t}", "text": f"text {t} {k}", "y": v}
            for t in range(6) for k in range(2) for v in rng.normal(k * (t % 3) * 0.5, 1, size=30)]
    df = pd.DataFrame(rows)
    arms, pairs, name = significant_pairs(df, text="text", test="test", outcome="y", alpha=0.05)
    assert name == "Welch's t-test"
    expected = set()
    for t, g in df.groupby("test"):
        a, b = (g[g["text"] == x]["y"].to_numpy() for x in sorted(g["text"].unique()))
        res = stats.ttest_ind(a, b, equal_var=False)
        if res.pvalue < 0.05:
            expected.add((t, int(np.sign(res.statistic))))
    got = {(arms["test_id"][i], int(s) if arms["text"][i] < arms["text"][j] else -int(s))
           for i, j, s in zip(pairs["i"], pairs["j"], pairs["sign"], strict=True)}
    assert got == expected and len(expected) >= 2


def test_poisson_counts_use_the_exact_conditional_test():
    df = pd.DataFrame({"test": ["a", "a", "b", "b", "c", "c"], "text": ["x", "y", "x", "y", "x", "y"],
                       "y": [30, 12, 20, 18, 0, 9]})
    arms, pairs, name = significant_pairs(df, text="text", test="test", outcome="y", alpha=0.05)
    assert name == "exact test of two Poisson rates"
    for t, (a, b) in (("a", (30, 12)), ("b", (20, 18)), ("c", (0, 9))):
        significant = stats.binomtest(a, a + b, 0.5).pvalue < 0.05
        assert (t in set(pairs["test_id"])) == significant


def _rate_p_value(a: int, b: int, share: float) -> float:
    """Two-sided p of the conditional test of two Poisson rates, with plain Python: a of a + b is
    Binomial(a + b, share) under equal rates; twice the smaller tail."""
    n = a + b
    pmf = [math.comb(n, k) * share**k * (1 - share) ** (n - k) for k in range(n + 1)]
    return min(1.0, 2 * min(sum(pmf[: a + 1]), sum(pmf[a:])))


def test_counts_with_exposures_are_compared_as_rates():
    # 'x' in a: 40 views in 10 hours against 60 in 40 hours: fewer views, the higher rate.
    df = pd.DataFrame({"test": ["a", "a", "b", "b", "c", "c", "d", "d"], "text": ["x", "y"] * 4,
                       "views": [40, 60, 20, 18, 12, 30, 7, 3], "hours": [10, 40, 5, 5, 3, 12, 2, 1]})
    arms, pairs, name = significant_pairs(df, text="text", test="test", outcome="views", trials="hours",
                                          alpha=0.05, family="poisson")
    assert name == "exact test of two Poisson rates given their exposures"
    for t, g in df.groupby("test"):
        (a, b), (ea, eb) = g["views"].tolist(), g["hours"].tolist()
        significant = _rate_p_value(a, b, ea / (ea + eb)) < 0.05
        assert (t in set(pairs["test_id"])) == significant
    row = pairs[pairs["test_id"] == "a"].iloc[0]
    assert arms["text"][row["i"]] == "x" and row["sign"] == 1  # the rate, not the count, wins
    assert set(pairs["test_id"]) == {"a"}
    # The same file as successes out of trials cannot hold (views exceed hours): not a silent NaN.
    with pytest.raises(UserError, match="family poisson"):
        read_ab_tests(df, text="text", test="test", outcome="views", trials="hours")
    assert len(read_ab_tests(df, text="text", test="test", outcome="views", trials="hours", family="poisson")) == 8
    with pytest.raises(UserError, match="not a count"):
        significant_pairs(df.assign(views=df["views"] + 0.5), text="text", test="test", outcome="views",
                          trials="hours", family="poisson")


def test_evaluate_takes_trials_as_an_exposure_with_family_poisson(rewards, tmp_path, capsys):
    rng = np.random.default_rng(3)
    rows = []
    for t in range(30):
        for text in _texts(3, 500 + t):
            hours = int(rng.integers(2, 20))
            rows.append({"test": f"t{t}", "text": text, "hours": hours,
                         "views": int(rng.poisson(hours * (3.0 + 4.0 * ("alpha" in text))))})
    df = pd.DataFrame(rows)
    assert (df["views"] > df["hours"]).any()
    path, out = tmp_path / "ab.csv", tmp_path / "e.json"
    df.to_csv(path, index=False)
    args = ["evaluate", str(rewards[1]), str(path), "--text", "text", "--test", "test", "--outcome", "views",
            "--trials", "hours"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--family poisson" in err[0]
    assert main([*args, "--family", "poisson", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["family"] == "poisson" and report["test"] == "exact test of two Poisson rates given their exposures"
    _, pairs, _ = significant_pairs(read_ab_tests(df.assign(test=df["test"].astype(str)), text="text", test="test",
                                                  outcome="views", trials="hours", family="poisson"),
                                    text="text", test="test", outcome="views", trials="hours", family="poisson")
    assert report["pairs"] == len(pairs) > 10
    assert report["rewards"][0]["accuracy"] > 0.7  # the reward learned 'alpha'; the tests reward it too
    assert report["rewards"][0]["calibration"]["slope"] > 0
    for bad, needle in ((["--family", "gaussian"], "--trials"), (["--family", "binomial"], "exceeds trials")):
        assert main([*args, *bad]) == 2
        assert needle in capsys.readouterr().err


def test_winner_column_pairs_the_winner_with_each_other_text(rewards, tmp_path):
    df = pd.DataFrame({"test": [1, 1, 1, 2, 2, 3, 3], "text": ["alpha a", "b c", "d e", "alpha x", "y z", "p", "q"],
                       "won": ["yes", "no", "no", "true", "false", "0", "0"]})
    arms, pairs, name = significant_pairs(df.assign(test=df["test"].astype(str)), text="text", test="test",
                                          winner="won")
    assert len(pairs) == 3 and set(pairs["test_id"]) == {"1", "2"}  # test 3 has no winner
    path = tmp_path / "w.csv"
    df.to_csv(path, index=False)
    with pytest.warns(Warning, match="1 test"):
        report = evaluate(rewards[1], path, text="text", test="test", winner="won")
    r = load_reward(rewards[1])
    s = dict(zip(df["text"], r.score(df["text"].tolist()), strict=True))
    expected = np.mean([s["alpha a"] > s["b c"], s["alpha a"] > s["d e"], s["alpha x"] > s["y z"]])
    assert report["rewards"][0]["accuracy"] == pytest.approx(expected)
    assert report["alpha"] is None and report["test"] == "declared winner"


def test_identical_rewards_differ_by_exactly_zero():
    correct = pd.DataFrame({"method": ["a"] * 6 + ["b"] * 6, "split": 0, "test_id": list("xxyyzz") * 2,
                            "correct": [1, 0, 1, 1, 0, 1] * 2})
    table, diffs = cluster_bootstrap(correct, 200, 0)
    assert table["accuracy"].tolist() == [4 / 6, 4 / 6]
    assert diffs.iloc[0][["difference", "ci_low", "ci_high"]].tolist() == [0, 0, 0]


@pytest.mark.parametrize("rows, flags, message", [
    ({"clicks": [5, 50], "views": [10, 20]}, ["--outcome", "clicks", "--trials", "views"], "at most 'views'"),
    ({"clicks": [0.5, 0.2]}, ["--outcome", "clicks"], "not a count"),
    ({"clicks": [1, 1]}, ["--outcome", "clicks", "--trials", "clicks"], "two roles"),
    ({"clicks": [5, 6], "views": [100, 100]}, ["--outcome", "clicks", "--trials", "views"], "no pair"),
    ({"won": ["yes", "maybe"]}, ["--winner", "won"], "true/false"),
    ({"won": [1, 0]}, ["--winner", "won", "--alpha", "0.1"], "--alpha applies"),
    ({"won": [1, 0]}, ["--winner", "won", "--trials", "won"], "--trials applies"),
    ({"clicks": [1, 2]}, ["--outcome", "nope"], "column 'nope' not found"),
    ({"clicks": [1, 2]}, ["--outcome", "clicks", "--alpha", "1.5"], "--alpha"),
])
def test_bad_input_is_one_line_and_exit_2(rewards, tmp_path, capsys, rows, flags, message):
    path = tmp_path / "ab.csv"
    pd.DataFrame({"test": ["a", "a"], "text": ["alpha x", "y z"], **rows}).to_csv(path, index=False)
    out = tmp_path / "e.json"
    code = main(["evaluate", str(rewards[0]), str(path), "--text", "text", "--test", "test", *flags,
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_output_never_goes_into_a_reward_folder(rewards, tmp_path, capsys):
    path = tmp_path / "ab.csv"
    ab_binomial(5).to_csv(path, index=False)
    code = main(["evaluate", str(rewards[0]), str(path), "--text", "text", "--test", "test", "--outcome", "clicks",
                 "--trials", "views", "--out", str(rewards[0] / "e.json")])
    assert code == 2 and "inside" in capsys.readouterr().err
    assert not (rewards[0] / "e.json").exists()
