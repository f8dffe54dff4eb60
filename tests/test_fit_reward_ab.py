"""fit-reward --ab: a log's reward grounded on the user's A/B tests, its calibration in evaluate,
and the bad inputs of the new flags (exit 2, nothing written)."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import one_error_line, run_cli, write_log_and_tests

ROLES = ["--text", "headline", "--outcome", "clicks", "--trials", "impressions"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An observational log (one package per test, 700 tests) and A/B tests (150 other tests)."""
    return write_log_and_tests(tmp_path_factory.mktemp("ab"), 0, 700, 150)


def fit(files, out, *extra, capsys):
    return run_cli(["fit-reward", files / "log.csv", *ROLES, "--confounder", "test_week:time", "--encoder",
                    "hashing", "--cv", "3", "--out", out, *extra], capsys)


@pytest.fixture(scope="module")
def grounded(files):
    from deconfoundlm.cli import main

    assert main(["fit-reward", str(files / "log.csv"), *ROLES, "--confounder", "test_week:time", "--encoder",
                 "hashing", "--cv", "3", "--ab", str(files / "ab.csv"), "--test", "test_id",
                 "--out", str(files / "grounded")]) == 0
    assert main(["fit-reward", str(files / "log.csv"), *ROLES, "--confounder", "test_week:time", "--encoder",
                 "hashing", "--cv", "3", "--out", str(files / "log-only")]) == 0
    return files / "grounded"


def test_grounded_reward_records_its_sources_and_loads_everywhere(files, grounded, capsys, tmp_path):
    import deconfoundlm

    cfg = json.loads((grounded / "config.json").read_text())
    g = cfg["grounding"]
    assert g["ab"].endswith("ab.csv") and g["test"] == "test_id" and g["tests"] >= 50
    assert cfg["data"].endswith("log.csv") and len(g["ab_fingerprint"]) == 16
    metrics = json.loads((grounded / "metrics.json").read_text())
    cal = metrics["grounding"]["calibration"]
    assert cal["ci_low"] < cal["slope"] < cal["ci_high"] and cal["verdict"]
    assert metrics["grounding"]["cv_table"][0]["alpha"] is None  # "no correction" is a candidate
    assert metrics["grounding"]["choice"].startswith("the strongest within one standard error")
    reward, log_only = deconfoundlm.load_reward(grounded), deconfoundlm.load_reward(files / "log-only")
    texts = pd.read_csv(files / "ab.csv")["headline"].astype(str).tolist()[:200]
    r, r_log = reward.score(texts), log_only.score(texts)
    # The grounded reward is the log's rescaled plus a correction: on the link scale and related to it.
    assert np.isfinite(r).all() and np.corrcoef(r, r_log)[0, 1] > 0.3
    mean_log_texts = reward.score(pd.read_csv(files / "log.csv")["headline"].astype(str).tolist()).mean()
    assert abs(mean_log_texts) < 1e-8  # centered over the log's texts, as every reward
    code, err, out = run_cli(["score", grounded, files / "ab.csv", "--text", "headline", "--out",
                              tmp_path / "s.csv"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["reward"].to_numpy()[:200], r, atol=1e-9)
    code, err, _ = run_cli(["report", grounded, "--out", tmp_path / "r.html", "--quiet"], capsys)
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "how the strength was chosen" in page and "the strongest within one standard error" in page
    assert "what the tests say" in page


def test_fit_prints_grounding_and_is_reproducible(files, capsys, tmp_path):
    args = ["--ab", files / "ab.csv", "--test", "test_id"]
    code, err, out = fit(files, tmp_path / "a", *args, capsys=capsys)
    assert code == 0, err
    assert "grounded on" in out and "calibration of the log's reward on these tests:" in out
    assert fit(files, tmp_path / "b", *args, capsys=capsys)[0] == 0
    import deconfoundlm

    texts = ["You won't believe this", "Why cats matter", "10 facts about the world"]
    np.testing.assert_array_equal(deconfoundlm.load_reward(tmp_path / "a").score(texts),
                                  deconfoundlm.load_reward(tmp_path / "b").score(texts))


def test_tests_with_more_contrasts_than_features_choose_the_best_held_out_deviance(files, grounded, capsys, tmp_path):
    # The same log and tests with 16 features instead of 256: the tests' contrasts between texts
    # outnumber them, so the log gets no benefit of the doubt (the one-SE rule, as with 256).
    code, err, out = run_cli(["fit-reward", files / "log.csv", *ROLES, "--confounder", "test_week:time", "--encoder",
                              "hashing-16", "--cv", "3", "--ab", files / "ab.csv", "--test", "test_id",
                              "--out", tmp_path / "g16"], capsys)
    assert code == 0, err
    assert "chosen by the best held-out deviance: these tests hold more contrasts between texts" in out
    g = json.loads((tmp_path / "g16" / "metrics.json").read_text())["grounding"]
    table = [r["cv_deviance"] for r in g["cv_table"]]
    assert g["cv_table"][int(np.argmin(table))]["alpha"] == g["strength"]
    assert g["choice"].startswith("the best held-out deviance: these tests hold more contrasts")
    wide = json.loads((grounded / "metrics.json").read_text())["grounding"]
    assert wide["choice"].startswith("the strongest within one standard error")


def test_evaluate_reports_the_calibration(files, grounded, capsys, tmp_path):
    code, err, out = run_cli(["evaluate", files / "log-only", grounded, files / "ab.csv", "--text", "headline",
                              "--test", "test_id", "--outcome", "clicks", "--trials", "impressions",
                              "--out", tmp_path / "ev.json"], capsys)
    assert code == 0, err
    assert out.count("calibration of ") == 2
    report = json.loads((tmp_path / "ev.json").read_text())
    for entry in report["rewards"]:
        cal = entry["calibration"]
        assert {"slope", "se", "ci_low", "ci_high", "tests", "rows", "verdict"} <= set(cal)
        assert cal["tests"] >= 50
    # On the tests it was grounded on, the grounded reward is on their scale (slope near 1).
    assert report["rewards"][1]["calibration"]["ci_low"] < 1 < report["rewards"][1]["calibration"]["ci_high"]
    # ... and that check is in-sample, which evaluate says (the log-only reward was not fitted on them).
    grounded_on = json.loads((grounded / "metrics.json").read_text())["grounding"]["tests"]
    assert [e["fitted_on_tests"] for e in report["rewards"]] == [0, grounded_on]  # single-text tests left out
    assert report["rewards"][1]["fitted_on_pairs"] == report["pairs"]
    assert f"note: {grounded} was fitted on every test here that holds a pair ({grounded_on} of the" in out
    assert "note: " + str(files / "log-only") not in out
    code, err, _ = run_cli(["report", grounded, "--evaluation", tmp_path / "ev.json", "--out", tmp_path / "r.html",
                            "--quiet"], capsys)
    assert code == 0, err
    assert "Fitted on some of these A/B tests" in (tmp_path / "r.html").read_text()
    # A file holding 40 of those tests and 60 others: the 40 are named, with their pairs.
    from deconfoundlm.logs.upworthy import load_packages, reliable

    ab, pk = pd.read_csv(files / "ab.csv"), load_packages()
    pk = pk[reliable(pk)][["headline", "clicks", "impressions", "test_id"]]
    fresh = pk[~pk["test_id"].isin(set(ab["test_id"]))]
    fresh = fresh[fresh["test_id"].isin(fresh["test_id"].unique()[:60])]
    compare = ab.groupby("test_id")["headline"].nunique()
    seen = ab[ab["test_id"].isin(compare[compare >= 2].index[:40])]  # 40 of the tests it was grounded on
    for name, frame, k in (("mixed", pd.concat([seen, fresh]), 40), ("fresh", fresh, 0)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        code, err, out = run_cli(["evaluate", grounded, tmp_path / f"{name}.csv", "--text", "headline", "--test",
                                  "test_id", "--outcome", "clicks", "--trials", "impressions", "--out",
                                  tmp_path / f"{name}.json"], capsys)
        assert code == 0, err
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["rewards"][0]["fitted_on_tests"] == k
        assert (f"was fitted on 40 of the {result['tests']} tests here" in out) == (k == 40)
        assert ("in-sample" in out) == (k > 0)


def test_calibration_matches_the_log_reward_slope_of_fit_reward(files, grounded):
    """evaluate's calibration of the log-only reward on the same tests equals the one fit-reward
    --ab printed (the same model, the same rows)."""
    import deconfoundlm

    report = deconfoundlm.evaluate(str(files / "log-only"), files / "ab.csv", text="headline", test="test_id",
                                   outcome="clicks", trials="impressions")
    metrics = json.loads((grounded / "metrics.json").read_text())
    assert report["rewards"][0]["calibration"]["slope"] == pytest.approx(
        metrics["grounding"]["calibration"]["slope"], rel=1e-6)


@pytest.mark.parametrize("case", ["one-arm", "no-column", "numeric-text", "rate-outcome", "naive", "odin",
                                  "no-test", "no-ab", "over-trials", "mlp", "same-column", "no-evidence"])
def test_bad_ab_inputs_exit_2_and_write_nothing(files, case, capsys, tmp_path):
    ab = pd.read_csv(files / "ab.csv")
    path = tmp_path / "bad.csv"
    extra = ["--ab", path, "--test", "test_id"]
    needles = [str(path)]
    if case == "one-arm":
        ab.groupby("test_id").head(1).to_csv(path, index=False)
        needles.append("two or more different texts")
    elif case == "no-column":
        ab.drop(columns="test_id").to_csv(path, index=False)
        needles.append("'test_id' not found")
    elif case == "numeric-text":
        ab.assign(headline=np.arange(len(ab))).to_csv(path, index=False)
        needles.append("holds numbers")
    elif case == "rate-outcome":
        ab.assign(clicks=ab["clicks"] / 7).to_csv(path, index=False)
        needles.append("non-integer")
    elif case == "over-trials":
        ab.assign(clicks=ab["impressions"] + 1).to_csv(path, index=False)
        needles.append("exceeds trials")
    elif case in ("naive", "odin"):
        ab.to_csv(path, index=False)
        extra += ["--method", case]
        needles = [f"--method {case}"]
    elif case == "mlp":
        ab.to_csv(path, index=False)
        extra += ["--head", "mlp"]
        needles = ["--head mlp"]
    elif case == "no-test":
        ab.to_csv(path, index=False)
        extra = ["--ab", path]
        needles = ["--test COL"]
    elif case == "no-ab":  # --test alone fits the tests' own reward: the log's confounder does not apply
        extra = ["--test", "test_id"]
        needles = ["--confounder does not apply", "--ab"]
    elif case == "same-column":
        ab.to_csv(path, index=False)
        extra = ["--ab", path, "--test", "headline"]
        needles = ["'headline'", "--test"]
    elif case == "no-evidence":  # every test but one without a click (it divided by zero)
        first = ab["test_id"] == ab["test_id"].iloc[0]
        ab.assign(clicks=ab["clicks"].where(first, 0)).to_csv(path, index=False)
        needles += ["1 of the 55 tests with two or more texts", "no success in any row", "At least 2", "--outcome 'clicks'"]
    code, err, _ = fit(files, tmp_path / "out", *extra, capsys=capsys)
    one_error_line(code, err, *needles)
    assert not (tmp_path / "out").exists()


def test_tampered_grounding_record_is_refused(grounded, tmp_path, capsys):
    import shutil

    copy = tmp_path / "r"
    shutil.copytree(grounded, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["grounding"]["log_scale"] = "__import__('os')"
    (copy / "config.json").write_text(json.dumps(cfg))
    code, err, _ = run_cli(["score", copy, grounded.parent / "ab.csv", "--text", "headline", "--out",
                            tmp_path / "s.csv"], capsys)
    one_error_line(code, err, "not a valid deconfoundlm reward model", "grounding.log_scale")


@pytest.mark.parametrize("digests", [["zz" * 6], ["b" * 12, "a" * 12], ["a" * 12, "a" * 12], "a" * 12, [1]])
def test_tampered_test_digests_are_refused_and_a_folder_without_them_loads(grounded, digests, tmp_path, capsys):
    import shutil

    import deconfoundlm

    copy = tmp_path / "r"
    shutil.copytree(grounded, copy)
    cfg = json.loads((copy / "config.json").read_text())
    assert len(cfg["grounding"]["test_digests"]) == cfg["grounding"]["tests"]
    cfg["grounding"]["test_digests"] = digests
    (copy / "config.json").write_text(json.dumps(cfg))
    code, err, _ = run_cli(["score", copy, grounded.parent / "ab.csv", "--text", "headline", "--out",
                            tmp_path / "s.csv"], capsys)
    one_error_line(code, err, "not a valid deconfoundlm reward model", "grounding.test_digests")
    del cfg["grounding"]["test_digests"]  # a folder written before the digests were recorded
    (copy / "config.json").write_text(json.dumps(cfg))
    texts = ["You won't believe this", "Why cats matter"]
    np.testing.assert_array_equal(deconfoundlm.load_reward(copy).score(texts),
                                  deconfoundlm.load_reward(grounded).score(texts))
    # Without digests, evaluate still knows the very file it was grounded on (its fingerprint).
    report = deconfoundlm.evaluate(str(copy), grounded.parent / "ab.csv", text="headline", test="test_id",
                                   outcome="clicks", trials="impressions")
    assert report["rewards"][0]["fitted_on_pairs"] == report["pairs"] > 0


def test_a_log_misled_by_a_confounder_it_does_not_name_is_overruled_by_the_tests(tmp_path, capsys):
    """Through the CLI: in the log a hidden placement goes to texts with 'record' (whose true
    effect is negative); the tests refute the log (its calibration CI below 0.5), the grounding
    says so, chooses by the best held-out deviance, and turns the sign of 'record' around."""
    rng = np.random.default_rng(7)
    words = [f"w{i}" for i in range(40)]

    def texts(k):
        return [" ".join(rng.choice(words, 5, replace=False)) + (" record" if rng.random() < 0.3 else "")
                + (" you" if rng.random() < 0.4 else "") for _ in range(k)]

    def effect(t):
        return 0.3 * np.array(["you" in s.split() for s in t]) - 0.2 * np.array(["record" in s.split() for s in t])

    log_texts = texts(6000)
    hidden = np.array(["record" in s.split() for s in log_texts]) & (rng.random(6000) < 0.8)
    eta = -3.0 + effect(log_texts) + 1.0 * hidden
    shown = rng.integers(500, 3000, 6000)
    pd.DataFrame({"text": log_texts, "day": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 90, 6000), "D"),
                  "n": shown, "y": rng.binomial(shown, 1 / (1 + np.exp(-eta)))}).to_csv(tmp_path / "log.csv", index=False)
    rows = []
    for t in range(300):
        arm_texts = texts(3)
        base = rng.normal(-3.0, 0.3)
        for s, e in zip(arm_texts, effect(arm_texts), strict=True):
            rows.append({"t": t, "text": s, "n": 5000, "y": rng.binomial(5000, 1 / (1 + np.exp(-(base + e))))})
    pd.DataFrame(rows).to_csv(tmp_path / "ab.csv", index=False)
    roles = ["--text", "text", "--outcome", "y", "--trials", "n", "--confounder", "day:time", "--encoder", "hashing",
             "--cv", "3", "--quiet"]
    code, err, out = run_cli(["fit-reward", tmp_path / "log.csv", *roles, "--out", tmp_path / "log-only"], capsys)
    assert code == 0, err
    code, err, out = run_cli(["fit-reward", tmp_path / "log.csv", *roles, "--ab", tmp_path / "ab.csv", "--test", "t",
                              "--out", tmp_path / "grounded"], capsys)
    assert code == 0, err
    assert "chosen by the best held-out deviance" in out
    assert "contradict the log's reward" in out or "small part of the log's reward" in out
    g = json.loads((tmp_path / "grounded" / "metrics.json").read_text())["grounding"]
    assert g["choice"].startswith("the best held-out deviance") and g["calibration"]["ci_high"] < 0.5
    assert g["log_scale"] >= 0
    import deconfoundlm

    probe = [f"w1 w2 w3 w4 w5{tail}" for tail in ("", " record")]
    log_gap = np.diff(deconfoundlm.load_reward(tmp_path / "log-only").score(probe))[0]
    grounded_gap = np.diff(deconfoundlm.load_reward(tmp_path / "grounded").score(probe))[0]
    assert log_gap > 0 > grounded_gap  # the log credits 'record' with the placement; the tests do not


def test_tests_whose_texts_the_log_holds_are_named_as_an_in_sample_check(files, grounded, capsys, tmp_path):
    """Upworthy headlines recur across tests: the fixture's log holds a text of a few of its A/B
    tests. With 12 more such tests, the fit, metrics.json and the report count them and say that
    the check is partly in-sample."""
    log_texts = pd.read_csv(files / "log.csv")["headline"].astype(str)

    def holding(ab):  # (tests holding a text of the log, tests comparing two or more texts)
        compared = ab[ab.groupby("test_id")["headline"].transform("nunique") >= 2]
        return {"tests": int(compared.loc[compared["headline"].isin(set(log_texts)), "test_id"].nunique()),
                "of": int(compared["test_id"].nunique())}

    ab = pd.read_csv(files / "ab.csv")
    before = json.loads((grounded / "metrics.json").read_text())["grounding"]["tests_in_log"]
    assert before == holding(ab) and before["tests"] < 12
    compared = ab[ab.groupby("test_id")["headline"].transform("nunique") >= 2]
    fresh = compared[~compared["test_id"].isin(compared.loc[compared["headline"].isin(set(log_texts)), "test_id"])]
    first = fresh.groupby("test_id").head(1).index[:12]
    ab.loc[first, "headline"] = log_texts[:12].to_numpy()
    ab.to_csv(tmp_path / "ab.csv", index=False)
    code, err, out = fit(files, tmp_path / "g", "--ab", tmp_path / "ab.csv", "--test", "test_id", capsys=capsys)
    assert code == 0, err
    seen = json.loads((tmp_path / "g" / "metrics.json").read_text())["grounding"]["tests_in_log"]
    assert seen == holding(ab) and seen["tests"] == before["tests"] + 12
    assert f"{seen['tests']} of the {seen['of']} A/B tests hold a text that the log holds too" in out
    assert "partly in-sample" in out
    code, err, _ = run_cli(["report", tmp_path / "g", "--out", tmp_path / "r.html", "--quiet"], capsys)
    assert code == 0, err
    assert "tests holding a text of the log" in (tmp_path / "r.html").read_text()


def test_tests_without_the_logs_weights_column_weigh_one_each(files, capsys, tmp_path):
    """The log's --weights column is optional in the tests: without it each A/B row weighs 1
    (the same reward as a column of ones), with a warning naming the file; the log reader's
    warnings about the tests name the file too."""
    log = pd.read_csv(files / "log.csv")
    log.assign(w=np.linspace(0.5, 2.0, len(log))).to_csv(tmp_path / "wlog.csv", index=False)
    ab = pd.read_csv(files / "ab.csv")
    ab.to_csv(tmp_path / "ab_bare.csv", index=False)
    ab.assign(w=1.0).to_csv(tmp_path / "ab_ones.csv", index=False)
    ab.loc[0, "clicks"] = np.nan
    ab.to_csv(tmp_path / "ab_gap.csv", index=False)
    base = ["fit-reward", tmp_path / "wlog.csv", *ROLES, "--weights", "w", "--confounder", "test_week:time",
            "--encoder", "hashing", "--cv", "3", "--test", "test_id"]
    code, err, _ = run_cli([*base, "--ab", tmp_path / "ab_bare.csv", "--out", tmp_path / "bare"], capsys)
    assert code == 0, err
    assert "--ab " + str(tmp_path / "ab_bare.csv") + ": no weights column 'w': every A/B row weighs 1" in err
    code, err, _ = run_cli([*base, "--ab", tmp_path / "ab_ones.csv", "--out", tmp_path / "ones"], capsys)
    assert code == 0 and "weighs 1" not in err, err
    import deconfoundlm

    texts = ab["headline"].astype(str).tolist()[:100]
    np.testing.assert_allclose(deconfoundlm.load_reward(tmp_path / "bare").score(texts),
                               deconfoundlm.load_reward(tmp_path / "ones").score(texts), atol=1e-10)
    code, err, _ = run_cli([*base, "--ab", tmp_path / "ab_gap.csv", "--out", tmp_path / "gap"], capsys)
    assert code == 0, err
    dropped = [ln for ln in err.splitlines() if "dropped 1 row(s)" in ln]
    assert dropped and dropped[0].startswith(f"deconfoundlm: warning: --ab {tmp_path / 'ab_gap.csv'}: ")


def test_tests_without_evidence_are_named_and_left_out(files, capsys, tmp_path):
    """Tests with no click in any arm say nothing about their texts: a warning counts them, and the
    reward is the one grounded on the other tests alone."""
    ab = pd.read_csv(files / "ab.csv")
    texts = ab.groupby("test_id")["headline"].nunique()
    dead = ab["test_id"].isin(texts.index[texts >= 2][:10])  # 10 of the 55 tests that compare texts
    ab.assign(clicks=ab["clicks"].where(~dead, 0)).to_csv(tmp_path / "some.csv", index=False)
    ab[~dead].to_csv(tmp_path / "rest.csv", index=False)
    code, err, _ = fit(files, tmp_path / "some", "--ab", tmp_path / "some.csv", "--test", "test_id", capsys=capsys)
    assert code == 0, err
    assert f"--ab {tmp_path / 'some.csv'}: left out 10 test(s) with no success in any row, or only successes" in err
    code, err, _ = fit(files, tmp_path / "rest", "--ab", tmp_path / "rest.csv", "--test", "test_id", capsys=capsys)
    assert code == 0 and "no success" not in err
    some, rest = (json.loads((tmp_path / d / "metrics.json").read_text())["grounding"] for d in ("some", "rest"))
    assert some["tests"] == rest["tests"] == 45
    assert some["log_scale"] == pytest.approx(rest["log_scale"], rel=1e-9)
