"""Every bad input: one line on stderr naming the problem, exit code 2, nothing written."""

import json

import numpy as np
import pandas as pd
import pytest

from deconfoundlm.cli import main


def run(args, capsys):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def fit_args(data, out, *extra):
    return ["fit-reward", data, "--text", "headline", "--outcome", "clicks", "--encoder", "hashing",
            "--confounder", "test_week:time", "--out", out, *extra]


def assert_one_line_error(code, err, *needles):
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("deconfoundlm: warning")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def write(tmp_path, df, name="log.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def base(upworthy_sample):
    return upworthy_sample[["headline", "clicks", "impressions", "test_week", "eyecatcher_id"]].copy()


def test_missing_file(tmp_path, capsys):
    code, err = run(fit_args(tmp_path / "nope.csv", tmp_path / "m"), capsys)
    assert_one_line_error(code, err, "nope.csv", "no such file")
    assert not (tmp_path / "m").exists()


def test_unknown_extension(tmp_path, capsys):
    (tmp_path / "log.xlsx").write_text("x")
    code, err = run(fit_args(tmp_path / "log.xlsx", tmp_path / "m"), capsys)
    assert_one_line_error(code, err, "extension", ".xlsx")


def test_missing_column_lists_available(tmp_path, base, capsys):
    data = write(tmp_path, base.drop(columns="clicks"))
    code, err = run(fit_args(data, tmp_path / "m"), capsys)
    assert_one_line_error(code, err, "'clicks'", "available columns", "headline", "impressions")
    assert not (tmp_path / "m").exists()


def test_non_numeric_outcome(tmp_path, base, capsys):
    base["clicks"] = base["clicks"].astype(object)
    base.loc[3, "clicks"] = "lots"
    code, err = run(fit_args(write(tmp_path, base), tmp_path / "m"), capsys)
    assert_one_line_error(code, err, "'clicks'", "not numeric", "lots")


def test_bad_trials_rows_dropped_with_warning(tmp_path, base, capsys):
    base["impressions"] = base["impressions"].astype(float)
    base.loc[0, "impressions"] = np.nan
    base.loc[1, "impressions"] = 0
    base.loc[2, "impressions"] = -5
    data = write(tmp_path, base)
    code = main([str(a) for a in fit_args(data, tmp_path / "m", "--trials", "impressions")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "dropped 3 row(s)" in err and "impressions" in err
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["n_rows"] == len(base) - 3 and metrics["family"] == "binomial"


def test_successes_above_trials(tmp_path, base, capsys):
    base.loc[5, "clicks"] = base.loc[5, "impressions"] + 1
    code, err = run(fit_args(write(tmp_path, base), tmp_path / "m", "--trials", "impressions"), capsys)
    assert_one_line_error(code, err, "'clicks'", "exceeds", "'impressions'")
    assert not (tmp_path / "m").exists()


def test_single_level_confounder(tmp_path, base, capsys):
    base["site"] = "upworthy"
    code, err = run(fit_args(write(tmp_path, base), tmp_path / "m", "--confounder", "site:categorical"), capsys)
    assert_one_line_error(code, err, "'site'", "single level")


def test_unknown_confounder_type(tmp_path, base, capsys):
    code, err = run(fit_args(write(tmp_path, base), tmp_path / "m", "--confounder", "test_week:weekly"), capsys)
    assert_one_line_error(code, err, "'weekly'", "categorical, numeric, time")


def test_outcome_without_variation(tmp_path, base, capsys):
    base["clicks"] = 7
    code, err = run(fit_args(write(tmp_path, base), tmp_path / "m"), capsys)
    assert_one_line_error(code, err, "'clicks'", "no variation")


def test_existing_output_needs_force(tmp_path, base, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run(fit_args(write(tmp_path, base), out), capsys)
    assert_one_line_error(code, err, "--force")
    assert (out / "keep.txt").read_text() == "mine"


def test_score_rejects_non_model_dir(tmp_path, base, capsys):
    data = write(tmp_path, base)
    (tmp_path / "notmodel").mkdir()
    code, err = run(["score", tmp_path / "notmodel", data, "--text", "headline", "--out", tmp_path / "s.csv"], capsys)
    assert_one_line_error(code, err, "model")
    assert not (tmp_path / "s.csv").exists()


def test_score_existing_output_needs_force(tmp_path, base, capsys):
    data = write(tmp_path, base)
    assert main([str(a) for a in fit_args(data, tmp_path / "m")]) == 0
    (tmp_path / "s.csv").write_text("keep")
    code, err = run(["score", tmp_path / "m", data, "--text", "headline", "--out", tmp_path / "s.csv"], capsys)
    assert_one_line_error(code, err, "--force")
    assert (tmp_path / "s.csv").read_text() == "keep"


def test_encoder_not_loadable_offline(tmp_path, base, capsys):
    data = write(tmp_path, base)
    args = ["fit-reward", data, "--text", "headline", "--outcome", "clicks",
            "--method", "naive", "--encoder", "someone/not-a-real-encoder", "--out", tmp_path / "m"]
    code, err = run(args, capsys)
    assert_one_line_error(code, err, "encoder", "someone/not-a-real-encoder", "offline")
    assert not (tmp_path / "m").exists()


def test_missing_required_option_is_one_line(tmp_path, capsys):
    code, err = run(["fit-reward", tmp_path / "x.csv", "--text", "headline"], capsys)
    assert_one_line_error(code, err, "--outcome")


def test_bad_rows_of_text_or_outcome_dropped(tmp_path, base, capsys):
    base.loc[0, "headline"] = None
    base["clicks"] = base["clicks"].astype(float)
    base.loc[1, "clicks"] = np.nan
    code = main([str(a) for a in fit_args(write(tmp_path, base), tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 0 and "dropped 2 row(s)" in err


def test_bad_time_value(tmp_path, base, capsys):
    base["when"] = pd.Series([f"2014-01-0{i % 9 + 1}" for i in range(len(base))])
    base.loc[4, "when"] = "yesterday-ish"
    code, err = run(fit_args(write(tmp_path, base), tmp_path / "m", "--confounder", "when:time"), capsys)
    assert_one_line_error(code, err, "'when'", "yesterday-ish")


def test_out_of_range_counts_are_one_line_errors(tmp_path, base, capsys):
    data = write(tmp_path, base)
    code, err = run(fit_args(data, tmp_path / "m", "--cv", "1"), capsys)
    assert_one_line_error(code, err, "--cv", "at least 2")
    code, err = run(["demo", "--splits", "0", "--out", tmp_path / "d"], capsys)
    assert_one_line_error(code, err, "--splits", "at least 1")
    assert not (tmp_path / "m").exists() and not (tmp_path / "d").exists()


def test_rows_without_a_text_are_scored_as_the_empty_text_never_nan(tmp_path, base, capsys):
    data = write(tmp_path, base)
    assert main([str(a) for a in fit_args(data, tmp_path / "m")]) == 0
    holes = base.copy()
    holes.loc[[2, 5], "headline"] = None
    code = main(["score", str(tmp_path / "m"), str(write(tmp_path, holes, "holes.csv")), "--text", "headline",
                 "--se", "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 0 and "2 row(s) with a missing 'headline' are scored as the empty text" in err
    scored = pd.read_csv(tmp_path / "s.csv")
    assert len(scored) == len(base) and np.isfinite(scored[["reward", "reward_se"]].to_numpy()).all()
    from deconfoundlm import load_reward

    empty = load_reward(tmp_path / "m").score([""])[0]
    np.testing.assert_allclose(scored.loc[[2, 5], "reward"], [empty, empty], rtol=1e-12)


@pytest.mark.parametrize("method", ["odin", "crm", "confounder-input"])
def test_group_is_refused_where_it_would_be_ignored(tmp_path, base, capsys, method):
    data = write(tmp_path, base)
    code, err = run(fit_args(data, tmp_path / "m", "--method", method, "--group", "eyecatcher_id"), capsys)
    assert_one_line_error(code, err, "--group", method)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("args, needles", [
    (["evaluate", "r", "ab.csv", "--text", "t", "--test", "t2", "--outcome", "y", "--bogus", "1"],
     ["deconfoundlm evaluate: unrecognized arguments: --bogus 1", "deconfoundlm evaluate --help"]),
    (["benchmark", "ab-curve", "l", "a", "--text", "t", "--outcome", "y", "--test", "t2", "--out", "o", "--nope"],
     ["deconfoundlm benchmark ab-curve: unrecognized arguments: --nope"]),
    ([], ["give a command: fit-reward, score", "deconfoundlm --help"]),
    (["benchmark"], ["deconfoundlm benchmark: give a command: simulate, upworthy, ab-curve"]),
])
def test_an_unknown_flag_or_a_missing_command_names_the_command(args, needles, capsys):
    code, err = run(args, capsys)
    assert_one_line_error(code, err, *needles)
