"""fit-reward TESTS --test COL (no --ab): the reward of randomized A/B tests alone, one intercept
per test; the learning curve's tests-only reward as a reward folder every command takes."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import one_error_line, run_cli

ROLES = ["--text", "text", "--outcome", "y", "--trials", "n", "--encoder", "hashing", "--cv", "3", "--quiet"]
WORDS = [f"w{i}" for i in range(30)]


def write_tests(path, seed: int, n_tests: int, arms=(2, 3, 4), effect: float = 1.0) -> None:
    """Tests of 2-4 texts: "you" helps, "record" hurts (both times ``effect``), and each test has
    its own level (a week, a placement) far larger than either."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tests):
        level = rng.normal(-3.0, 0.8)
        for _ in range(rng.choice(arms)):
            text = " ".join(rng.choice(WORDS, 4, replace=False)) + (" you" if rng.random() < 0.4 else "") + \
                (" record" if rng.random() < 0.4 else "")
            eta = level + effect * (0.4 * ("you" in text.split()) - 0.3 * ("record" in text.split()))
            rows.append({"t": f"test-{t}", "text": text, "n": 4000, "y": rng.binomial(4000, 1 / (1 + np.exp(-eta)))})
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    d = tmp_path_factory.mktemp("own")
    write_tests(d / "tests.csv", 0, 300)
    write_tests(d / "heldout.csv", 1, 150)
    from deconfoundlm.cli import main

    assert main(["fit-reward", str(d / "tests.csv"), *ROLES, "--test", "t", "--out", str(d / "own")]) == 0
    return d


def test_the_reward_of_tests_alone_is_the_learning_curves_tests_only_fit(own, capsys, tmp_path):
    import deconfoundlm
    from deconfoundlm.features.text import encode_in_chunks, get_encoder
    from deconfoundlm.rewards.grounding import ABFeatures, tests_only_reward

    code, err, out = run_cli(["fit-reward", own / "tests.csv", *ROLES[:-1], "--test", "t", "--out", tmp_path / "a"],
                             capsys)
    assert code == 0, err
    assert "fitted the reward of 300 randomized A/B tests alone" in out and "one intercept per test" in out
    assert "barely tell the texts apart" not in out
    cfg = json.loads((own / "own" / "config.json").read_text())
    assert cfg["tests_only"]["test"] == "t" and cfg["tests_only"]["tests"] == 300 and cfg["design"] is None
    assert "grounding" not in cfg and cfg["data"].endswith("tests.csv")
    metrics = json.loads((own / "own" / "metrics.json").read_text())
    t = metrics["tests_only"]
    assert t["strength"] == metrics["alpha"] and t["cv_table"][0]["alpha"] == max(r["alpha"] for r in t["cv_table"])
    # Per-test intercepts explain the tests' levels; the text explains part of what is left.
    assert metrics["cv_deviance"] < metrics["null_deviance"]
    frame = pd.read_csv(own / "tests.csv")
    texts = frame["text"].astype(str).tolist()
    phi = encode_in_chunks(get_encoder("hashing"), texts)
    arm = np.unique(np.asarray(texts, dtype=object), return_inverse=True)[1]
    codes = np.unique(frame["t"].astype(str), return_inverse=True)[1]
    est = tests_only_reward(ABFeatures(phi, codes, frame["y"].to_numpy(float), frame["n"].to_numpy(float), None, arm),
                            family="binomial", cv=3, seed=0)
    reward = deconfoundlm.load_reward(own / "own")
    probe = ["w1 w2 w3 w4", "w1 w2 w3 w4 you", "w1 w2 w3 w4 record"]
    np.testing.assert_allclose(reward.score(probe), est.reward(encode_in_chunks(get_encoder("hashing"), probe)),
                               atol=1e-10)
    base, you, record = reward.score(probe)
    assert you > base > record  # the planted effects, from within-test differences only
    np.testing.assert_array_equal(deconfoundlm.load_reward(tmp_path / "a").score(probe), reward.score(probe))


def test_every_command_takes_the_reward_of_tests_alone(own, capsys, tmp_path):
    code, err, out = run_cli(["evaluate", own / "own", own / "heldout.csv", "--text", "text", "--outcome", "y",
                              "--trials", "n", "--test", "t", "--out", tmp_path / "ev.json"], capsys)
    assert code == 0, err
    entry = json.loads((tmp_path / "ev.json").read_text())["rewards"][0]
    assert entry["accuracy"] > 0.7 and entry["calibration"]["ci_low"] > 0
    assert entry["fitted_on_tests"] == 0 and "in-sample" not in out
    code, err, out = run_cli(["evaluate", own / "own", own / "tests.csv", "--text", "text", "--outcome", "y",
                              "--trials", "n", "--test", "t"], capsys)
    assert code == 0 and f"note: {own / 'own'} was fitted on every test here that holds a pair (300 of the 300 tests)" in out, err
    code, err, _ = run_cli(["score", own / "own", own / "heldout.csv", "--text", "text", "--out", tmp_path / "s.csv"],
                           capsys)
    assert code == 0, err
    assert np.isfinite(pd.read_csv(tmp_path / "s.csv")["reward"]).all()
    code, err, _ = run_cli(["score", own / "own", own / "heldout.csv", "--text", "text", "--se", "--out",
                            tmp_path / "se.csv"], capsys)
    one_error_line(code, err, "--se", "no standard errors", "fitted to them")
    code, err, _ = run_cli(["report", own / "own", "--evaluation", tmp_path / "ev.json", "--out", tmp_path / "r.html",
                            "--quiet"], capsys)
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "fitted on randomized A/B tests alone" in page and "300 tests" in page
    assert "each test's own intercept absorbs" in page and "deconfoundlm diagnose" not in page


@pytest.mark.parametrize("case", ["confounder", "naive", "partialling-out", "mlp", "group", "dask", "one-arm",
                                  "no-column", "no-evidence"])
def test_bad_inputs_of_a_reward_of_tests_alone_exit_2_and_write_nothing(own, case, capsys, tmp_path):
    data, extra = own / "tests.csv", []
    needles = {"confounder": ["--confounder", "--ab"], "naive": ["--method"], "partialling-out": ["--estimator"],
               "mlp": ["--head"], "group": ["--group"], "dask": ["--dask"], "one-arm": ["two or more different texts"],
               "no-column": ["'t' not found"], "no-evidence": ["1 of the 300 tests", "At least 2"]}[case]
    if case == "confounder":
        extra = ["--confounder", "n:numeric"]
    elif case in ("naive", "partialling-out", "mlp", "group", "dask"):
        extra = {"naive": ["--method", "naive"], "partialling-out": ["--estimator", "partialling-out"],
                 "mlp": ["--head", "mlp"], "group": ["--group", "t"], "dask": ["--dask", "local"]}[case]
    else:
        frame = pd.read_csv(data)
        data = tmp_path / "bad.csv"
        if case == "no-evidence":  # no success anywhere but in one test
            frame = frame.assign(y=frame["y"].where(frame["t"] == frame["t"].iloc[0], 0))
        else:
            frame = frame.groupby("t").head(1) if case == "one-arm" else frame.drop(columns="t")
        frame.to_csv(data, index=False)
        needles = [str(data), *needles]
    code, err, _ = run_cli(["fit-reward", data, *ROLES, "--test", "t", *extra, "--out", tmp_path / "out"], capsys)
    one_error_line(code, err, *needles)
    assert not (tmp_path / "out").exists()


def test_tests_that_cannot_tell_texts_apart_say_so(tmp_path, capsys):
    """Where the texts make no difference, the strongest penalty wins and the fit says what that means."""
    write_tests(tmp_path / "flat.csv", 3, 100, effect=0.0)
    code, err, out = run_cli(["fit-reward", tmp_path / "flat.csv", *ROLES[:-1], "--test", "t", "--out",
                              tmp_path / "flat"], capsys)
    assert code == 0, err
    assert "barely tell the texts apart" in out and "--ab" in out
    t = json.loads((tmp_path / "flat" / "metrics.json").read_text())["tests_only"]
    assert t["strength"] == max(row["alpha"] for row in t["cv_table"])


def test_a_test_column_given_as_a_categorical_confounder_points_to_test(tmp_path, capsys):
    """Tests of 2-4 texts leave no level of 5 rows: the error names --test as the way to fit them."""
    write_tests(tmp_path / "tests.csv", 2, 60)
    code, err, _ = run_cli(["fit-reward", tmp_path / "tests.csv", *ROLES, "--confounder", "t:categorical", "--out",
                            tmp_path / "out"], capsys)
    one_error_line(code, err, "confounder 't'", "--test t")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit", ["missing", "string", "with-grounding", "with-design"])
def test_a_tampered_tests_only_record_is_refused(own, edit, capsys, tmp_path):
    copy = tmp_path / "r"
    shutil.copytree(own / "own", copy)
    cfg = json.loads((copy / "config.json").read_text())
    needle = "tests_only"
    if edit == "missing":
        del cfg["tests_only"]["strength"]
    elif edit == "string":
        cfg["tests_only"]["tests"] = "__import__('os')"
        needle = "tests_only.tests"
    elif edit == "with-grounding":
        cfg["grounding"] = {"ab": "a.csv", "test": "t", "ab_fingerprint": "0" * 16, "tests": 3, "rows": 9,
                            "strength": 1.0, "log_scale": 1.0, "calibration_slope": None}
    else:
        cfg["design"] = {"min_count": 5, "n_knots": 8, "degree": 3,
                         "confounders": [{"column": "n", "type": "numeric", "knots": [0.0, 1.0]}]}
    (copy / "config.json").write_text(json.dumps(cfg))
    code, err, _ = run_cli(["score", copy, own / "heldout.csv", "--text", "text", "--out", tmp_path / "s.csv"],
                           capsys)
    one_error_line(code, err, "not a valid deconfoundlm reward model", needle)


def test_the_python_api_fits_the_same_reward_from_a_dataframe(own):
    import deconfoundlm

    frame = pd.read_csv(own / "tests.csv")
    reward = deconfoundlm.fit_reward(frame, text="text", outcome="y", trials="n", test="t", encoder="hashing", cv=3)
    assert reward.info["tests_only"]["tests"] == 300 and reward.info["data"] == "<DataFrame>"
    probe = ["w1 w2 you", "w3 w4 record"]
    np.testing.assert_allclose(reward.score(probe), deconfoundlm.load_reward(own / "own").score(probe), atol=1e-12)
