"""Smoke run of the main job's path on a small Upworthy subset with the hashing encoder."""

import json

import pandas as pd
import pytest

from deconfoundlm.evaluation.evaluate import significant_pairs
from deconfoundlm.logs.upworthy import load_packages

pytestmark = pytest.mark.slow


def test_significant_pairs_are_within_test_and_different_headlines():
    pk = load_packages().head(300)
    _, pairs, _ = significant_pairs(pk, text="headline", test="test_id", outcome="clicks", trials="impressions")
    assert len(pairs) > 0
    assert (pk.loc[pairs["i"], "test_id"].to_numpy() == pk.loc[pairs["j"], "test_id"].to_numpy()).all()
    assert (pk.loc[pairs["i"], "headline"].to_numpy() != pk.loc[pairs["j"], "headline"].to_numpy()).all()
    ctr_diff = pk.loc[pairs["i"], "ctr"].to_numpy() - pk.loc[pairs["j"], "ctr"].to_numpy()
    assert ((ctr_diff > 0) == (pairs["sign"] > 0)).all()


def test_demo_quick_hashing(quick_demo):
    out = quick_demo
    table = pd.read_csv(out / "results.csv")
    assert set(table["method"]) == {"naive", "confounder-input", "deconfound", "experimental"}
    assert ((table["ci_low"] <= table["accuracy"]) & (table["accuracy"] <= table["ci_high"])).all()
    assert table["accuracy"].between(0, 1).all() and (table["pairs_per_split"] > 10).all()
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["splits"] == 2


def test_demo_quick_draws_the_learning_curve(quick_demo):
    """What the log is worth: the three curves at the quick sizes and all, on every split, with
    the "all" tests-only point equal to the experimental reference of the same split (one reward,
    fitted once)."""
    per_split = pd.read_csv(quick_demo / "learning_curve_per_split.csv")
    assert set(per_split["curve"]) == {"tests only", "log + tests", "log only"}
    assert set(per_split.loc[~per_split["all"], "tests"]) == {50, 100} and set(per_split["split"]) == {0, 1}
    exp = pd.read_csv(quick_demo / "per_split.csv").query("method == 'experimental'").set_index("split")["accuracy"]
    own_all = per_split.query("all and curve == 'tests only'").set_index("split")["accuracy"]
    assert (own_all.sort_index() - exp.sort_index()).abs().max() < 1e-12, (own_all, exp)
    log_only = per_split.query("curve == 'log only'").groupby("split")["accuracy"].nunique()
    assert (log_only == 1).all()  # the log's reward does not depend on N
    facts = json.loads((quick_demo / "learning_curve.json").read_text())
    assert "says" in facts["log_worth"]
    page = (quick_demo / "report.html").read_text()
    assert "4b. What is the log worth in A/B tests?" in page
    assert "N counts the randomized tests that compare two or more texts" in page


def test_demo_quick_writes_smollm2_candidates(quick_demo):
    """The quick demo's SmolLM2 section: a few stories, a few candidates each, both rewards."""
    cand = pd.read_csv(quick_demo / "candidates.csv")
    assert {"test_id", "candidate", "naive_reward", "deconfound_reward"} <= set(cand.columns)
    assert cand["test_id"].nunique() == 3 and len(cand) >= 6
    assert cand["candidate"].str.len().gt(0).all() and not cand["candidate"].str.contains("<").any()
    assert cand[["naive_reward", "deconfound_reward"]].notna().all().all()
    per_story = cand.groupby("test_id")[["naive_pick", "deconfound_pick"]].sum()
    assert (per_story == 1).all().all()  # each reward picks exactly one candidate per story
    for _, g in cand.groupby("test_id"):  # ... its best
        assert g.loc[g["naive_pick"], "naive_reward"].iloc[0] == g["naive_reward"].max()
        assert g.loc[g["deconfound_pick"], "deconfound_reward"].iloc[0] == g["deconfound_reward"].max()
    real = pd.read_csv(quick_demo / "real_headlines.csv")
    assert set(real["test_id"]) == set(cand["test_id"]) and (real["ab_rank"] >= 1).all()


def test_quiet_prints_only_the_results(tmp_path, capfd):
    """--quiet: no stage lines, no progress bars; the results table and where it went stay."""
    from deconfoundlm.cli import build_parser, main

    for argv in (["demo", "--quiet"], ["fit-reward", "x", "--text", "t", "--outcome", "y", "--out", "o", "--quiet"],
                 ["benchmark", "simulate", "--out", "o", "--quiet"], ["serve", "d", "--quiet"]):
        assert build_parser().parse_args(argv).quiet
    assert main(["demo", "--quick", "--quiet", "--encoder", "hashing", "--stories", "0", "--align-steps", "0",
                 "--out", str(tmp_path / "d")]) == 0
    out, err = capfd.readouterr()
    assert "encoding" not in out and "diagnostics of" not in out and "Pairwise accuracy" in out
    assert err.strip() == "", err


def test_the_python_demo_refuses_a_foreign_output_folder_before_any_work(tmp_path, monkeypatch):
    from deconfoundlm.errors import UserError
    from deconfoundlm.evaluation import demo

    def no_work(*args, **kwargs):
        raise AssertionError("the data was loaded before the output was checked")

    monkeypatch.setattr(demo.upworthy, "load_packages", no_work)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not touching it"):
        demo.run_demo(tmp_path / "mine", demo.DemoConfig(encoder="hashing"), force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="output exists"):
        demo.run_demo(tmp_path / "mine", demo.DemoConfig(encoder="hashing"))


def test_the_learning_curve_counts_only_tests_that_compare_headlines(monkeypatch):
    """N of the demo's curve counts the A/B tests a user's `benchmark ab-curve` would: those of
    two or more different headlines (a test of images only compares no text)."""
    from types import SimpleNamespace

    import numpy as np

    from deconfoundlm.evaluation import demo
    from deconfoundlm.features.text import get_encoder
    from deconfoundlm.logs import upworthy

    pk = load_packages()
    train = np.sort(pk["test_id"].unique())[:300]
    seen = {}

    def capture(data, *args, **kwargs):  # the curve's input, instead of drawing the curve
        seen["data"] = data
        return []

    monkeypatch.setattr(demo, "split_curve", capture)
    obs = pk[pk["test_id"].isin(train)].groupby("test_id").head(1)
    demo.learning_curve_split(pk, get_encoder("hashing", cache=False), {"deconfound": SimpleNamespace(estimator=None)},
                              obs, train, pd.DataFrame({"text": ["a", "b"]}), None, 0, demo.DemoConfig())
    data = seen["data"]
    reliable = pk[pk["test_id"].isin(train) & upworthy.reliable(pk)]
    texts = reliable.groupby("test_id")["headline"].nunique()
    assert (texts < 2).sum() > 0  # the sample holds tests of one headline ...
    assert set(data.tests) == set(texts.index[texts >= 2])  # ... and the curve leaves them out
    arms = pd.DataFrame({"test": data.tests, "arm": data.arm}).groupby("test")["arm"].nunique()
    assert (arms >= 2).all()
