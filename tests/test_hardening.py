"""Regression tests for the bad-input pass (issue: untrusted input, untrusted models).

One test (or a parametrized group) per class: code execution from a model directory, data loss
with --force, silent wrong results, internal errors for user mistakes, partial outputs, and the
smaller items. All fast: hashing encoder, a few hundred rows.
"""

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import one_error_line, run_cli
from safetensors.torch import load_file, save_file

from deconfoundlm.cli import main

run = run_cli


def fit_args(data, out, *extra, text="headline", outcome="clicks"):
    return ["fit-reward", data, "--text", text, "--outcome", outcome, "--encoder", "hashing",
            "--confounder", "test_week:time", "--cv", "3", "--out", out, *extra]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, upworthy_sample):
    """A valid reward model directory (fitted once for the module)."""
    d = tmp_path_factory.mktemp("model")
    path = d / "log.csv"
    upworthy_sample[["headline", "clicks", "impressions", "test_week"]].to_csv(path, index=False)
    assert main([str(a) for a in fit_args(path, d / "m", "--trials", "impressions")]) == 0
    return d / "m"


def copy_model(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def no_temp_files(folder):
    return not [p for p in folder.rglob("*") if p.name.startswith((".tmp-", ".old-"))]


# -- 1. a model directory never runs code -------------------------------------------------
@pytest.mark.parametrize("edit", ["class", "method", "params", "nan-center", "not-json", "bad-weights",
                                  "wrong-shape", "extra-tensor", "unknown-field", "design"])
def test_hostile_or_corrupt_reward_dir_is_refused(tmp_path, model_dir, data, edit, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = copy_model(model_dir, tmp_path / "evil")
    cfg_path, w_path = m / "config.json", m / "model.safetensors"
    cfg = json.loads(cfg_path.read_text())
    pwned = tmp_path / "PWNED"
    if edit == "class":
        cfg["class"] = "os.system"
        cfg["params"] = {"command": f"touch {pwned}"}
    elif edit == "method":
        cfg["method"] = "os.system"
    elif edit == "params":
        cfg["params"]["family"] = {"__class__": "os.system"}
    elif edit == "nan-center":
        cfg_path.write_text(json.dumps(cfg).replace(str(cfg["center"]), "NaN", 1))
    elif edit == "not-json":
        cfg_path.write_text("{not json")
    elif edit == "bad-weights":
        w_path.write_bytes(b"\x00garbage" * 10)
    elif edit == "wrong-shape":
        t = load_file(w_path)
        t["glm.text.weight"] = torch.zeros(1, 7, dtype=torch.float64)
        save_file(t, w_path)
    elif edit == "extra-tensor":
        t = load_file(w_path)
        t["payload"] = torch.zeros(3)
        save_file(t, w_path)
    elif edit == "unknown-field":
        cfg["exec"] = "import os"
    elif edit == "design":
        cfg["design"]["confounders"][0]["knots"] = ["a", "b"]
    if edit not in ("nan-center", "not-json"):
        cfg_path.write_text(json.dumps(cfg))
    code, err, _ = run(["score", m, data, "--text", "headline", "--out", tmp_path / "s.csv"], capsys)
    one_error_line(code, err, str(m), "not a valid deconfoundlm reward model")
    assert not pwned.exists() and not (tmp_path / "s.csv").exists()


def test_generate_with_hostile_reward_runs_nothing(tmp_path, model_dir, capsys):
    m = copy_model(model_dir, tmp_path / "evil")
    cfg = json.loads((m / "config.json").read_text())
    cfg.update({"class": "os.system", "method": "os.system", "params": {"command": f"touch {tmp_path}/PWNED"}})
    (m / "config.json").write_text(json.dumps(cfg))
    code, err, _ = run(["generate", "tiny-headlines", "--n", "1", "--best-of", "2", "--reward", m,
                        "--out", tmp_path / "g.csv"], capsys)
    one_error_line(code, err, "not a valid deconfoundlm reward model")
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "g.csv").exists()


def test_saved_artifact_names_no_class(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())
    assert "class" not in cfg and cfg["method"] == "deconfound"


@pytest.mark.parametrize("case", ["pickle-only", "bad-info", "no-config"])
def test_hostile_policy_dir_is_refused(tmp_path, case, capsys):
    from deconfoundlm.alignment.policies import tiny_headlines_path

    pol = copy_model(tiny_headlines_path(), tmp_path / "pol")
    if case == "pickle-only":
        (pol / "model.safetensors").unlink()
        (pol / "pytorch_model.bin").write_bytes(b"not really a pickle")
    elif case == "bad-info":
        (pol / "deconfoundlm.json").write_text("{broken")
    else:
        (pol / "config.json").unlink()
    code, err, _ = run(["generate", pol, "--n", "1", "--out", tmp_path / "g.csv"], capsys)
    one_error_line(code, err, str(pol), "not a valid policy directory")


def _demo_dir(path):
    path.mkdir()
    pd.DataFrame({"method": ["naive", "deconfound"], "accuracy": [0.6, 0.7], "ci_low": [0.5, 0.6],
                  "ci_high": [0.7, 0.8]}).to_csv(path / "results.csv", index=False)
    pd.DataFrame({"test_week": [201301, 201302, 201303], "ctr": [0.01, 0.02, 0.015],
                  "share_digits": [0.1, 0.2, 0.3]}).to_csv(path / "timeseries.csv", index=False)
    pd.DataFrame({"test_week": [201301, 201302, 201303], "naive": [0.1, 0.2, 0.0],
                  "deconfound": [0.0, 0.1, 0.05]}).to_csv(path / "reward_by_week.csv", index=False)
    pd.DataFrame({"policy": ["base"], "text": ["<script>alert(1)</script>"], "naive_reward": [0.1],
                  "deconfound_reward": [0.2]}).to_csv(path / "samples.csv", index=False)
    (path / "diagnostics.json").write_text(json.dumps({
        "confounder_deviance_share": 0.2, "overlap": 0.9, "reward_correlation": 0.5,
        "entanglement_r2": {"test_week": 0.1}, "warnings": [], "confounded_ngrams": []}))
    return path


@pytest.mark.parametrize("case", ["diag-not-json", "results-empty", "results-no-rows", "diag-nan",
                                  "results-text"])
def test_report_on_bad_inputs(tmp_path, case, capsys):
    d = _demo_dir(tmp_path / "demo")
    if case == "diag-not-json":
        (d / "diagnostics.json").write_text("{oops")
    elif case == "results-empty":
        (d / "results.csv").write_text("")
    elif case == "results-no-rows":
        (d / "results.csv").write_text("method,accuracy,ci_low,ci_high\n")
    elif case == "diag-nan":
        (d / "diagnostics.json").write_text((d / "diagnostics.json").read_text().replace("0.2", "NaN"))
    else:
        (d / "results.csv").write_text("method,accuracy,ci_low,ci_high\nnaive,high,0,1\n")
    code, err, _ = run(["report", d], capsys)
    one_error_line(code, err, str(d), "not a valid demo output")
    assert not (d / "report.html").exists()


def test_report_on_valid_inputs_escapes(tmp_path, capsys):
    d = _demo_dir(tmp_path / "demo")
    code, err, _ = run(["report", d], capsys)
    assert code == 0, err
    page = (d / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page


# -- 2. --force never destroys inputs or foreign folders --------------------------------------
def test_force_never_replaces_folder_holding_the_input(tmp_path, frame, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    frame.to_csv(proj / "data.csv", index=False)
    (proj / "notes.txt").write_text("mine")
    code, err, _ = run(fit_args(proj / "data.csv", proj, "--force"), capsys)
    one_error_line(code, err, "--out", "input")
    assert (proj / "notes.txt").read_text() == "mine" and (proj / "data.csv").is_file()


def test_force_never_replaces_a_foreign_folder(tmp_path, data, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, err, _ = run(fit_args(data, other, "--force"), capsys)
    one_error_line(code, err, "--out", "reward model directory")
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["fit-reward", "diagnose", "score"])
def test_force_never_replaces_the_input_file(tmp_path, data, model_dir, command, capsys):
    before = data.read_bytes()
    if command == "fit-reward":
        args = fit_args(data, data, "--force")
    elif command == "diagnose":
        args = ["diagnose", data, "--text", "headline", "--outcome", "clicks", "--confounder", "test_week:time",
                "--encoder", "hashing", "--out", data, "--force"]
    else:
        args = ["score", model_dir, data, "--text", "headline", "--out", data, "--force"]
    code, err, _ = run(args, capsys)
    one_error_line(code, err, "--out", "input")
    assert data.read_bytes() == before


def test_report_never_overwrites_a_demo_result(tmp_path, capsys):
    d = _demo_dir(tmp_path / "demo")
    before = (d / "results.csv").read_bytes()
    code, err, _ = run(["report", d, "--out", d / "results.csv", "--force"], capsys)
    one_error_line(code, err, "--out", "input")
    assert (d / "results.csv").read_bytes() == before


def test_force_replaces_an_earlier_output_of_the_same_kind(tmp_path, data, capsys):
    out = tmp_path / "m"
    assert run(fit_args(data, out), capsys)[0] == 0
    code, err, _ = run(fit_args(data, out, "--force", "--seed", "5"), capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["params"]["seed"] == 5
    assert no_temp_files(tmp_path)


def test_force_on_diagnose_replaces_only_json(tmp_path, data, capsys):
    target = tmp_path / "notes.json"
    target.write_text("not json, my notes")
    code, err, _ = run(["diagnose", data, "--text", "headline", "--outcome", "clicks", "--confounder",
                        "test_week:time", "--encoder", "hashing", "--out", target, "--force"], capsys)
    one_error_line(code, err, "--out", "JSON")
    assert target.read_text() == "not json, my notes"


# -- 3. no silent wrong results --------------------------------------------------------------
@pytest.mark.parametrize("column", ["clicks", "impressions", "w", "score"])
def test_infinite_values_are_refused(tmp_path, frame, column, capsys):
    frame["w"] = 1.0
    frame["score"] = np.linspace(0, 1, len(frame))
    frame[column] = frame[column].astype(float)
    frame.loc[7, column] = np.inf
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    code, err, _ = run(fit_args(path, tmp_path / "m", "--trials", "impressions", "--weights", "w",
                                "--confounder", "score:numeric"), capsys)
    one_error_line(code, err, repr(column), "infinite")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("beta", ["nan", "-5", "0", "inf"])
def test_align_beta_must_be_positive_and_finite(tmp_path, model_dir, data, beta, capsys):
    code, err, _ = run(["align", data, "--reward", model_dir, "--method", "dpo", "--policy", "tiny-headlines",
                        "--beta", beta, "--steps", "1", "--out", tmp_path / "p"], capsys)
    one_error_line(code, err, "--beta")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--text", "clicks"], "two roles"),
    (["--confounder", "clicks:numeric"], "two roles"),
    (["--confounder", "test_week:time"], "twice"),
    (["--confounder", "test_week:categorical"], "twice"),
    (["--trials", "clicks"], "two roles"),
])
def test_one_column_one_role(tmp_path, data, extra, needle, capsys):
    code, err, _ = run(fit_args(data, tmp_path / "m", *extra), capsys)
    one_error_line(code, err, needle)


def test_tiny_log_gives_strict_json_and_says_so(tmp_path, frame, capsys):
    path = tmp_path / "small.csv"
    frame.head(30).to_csv(path, index=False)
    code, err, out = run(fit_args(path, tmp_path / "m", "--trials", "impressions"), capsys)
    assert code == 0, err
    assert "not estimated" in out and "%" not in out.split("\n")[1]
    metrics = (tmp_path / "m" / "metrics.json").read_text()
    assert "NaN" not in metrics and "Infinity" not in metrics
    assert json.loads(metrics)["diagnostics"]["confounder_deviance_share"] is None
    code, err, out = run(["diagnose", path, "--text", "headline", "--outcome", "clicks", "--trials", "impressions",
                          "--confounder", "test_week:time", "--encoder", "hashing", "--cv", "3",
                          "--out", tmp_path / "d.json"], capsys)
    assert code == 0, err
    assert "nan" not in out.lower() and "not estimated" in out
    report = json.loads((tmp_path / "d.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert report["confounder_deviance_share"] is None


def test_diagnostic_shares_stay_in_range(tmp_path, frame, capsys):
    path = tmp_path / "log.csv"
    frame.head(120).to_csv(path, index=False)
    code, err, _ = run(fit_args(path, tmp_path / "m", "--trials", "impressions"), capsys)
    assert code == 0, err
    d = json.loads((tmp_path / "m" / "metrics.json").read_text())["diagnostics"]
    assert 0 <= d["confounder_deviance_share"] <= 1
    assert all(0 <= v <= 1 for v in d["entanglement_r2"].values())


# -- 4. user mistakes are exit 2 naming the flag/column/value, before any work ----------------
@pytest.mark.parametrize("args,needle", [
    (["--encoder", "hashing-abc"], "hashing-abc"),
    (["--encoder", "hashing-0"], "hashing-0"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--cv", "10000"], "--cv"),
    (["--family", "bernoulli"], "'clicks'"),
])
def test_flag_mistakes(tmp_path, data, args, needle, capsys):
    code, err, _ = run(fit_args(data, tmp_path / "m", *args), capsys)
    one_error_line(code, err, needle)
    assert not (tmp_path / "m").exists()


def test_more_folds_than_rows(tmp_path, frame, capsys):
    path = tmp_path / "small.csv"
    frame.head(50).to_csv(path, index=False)
    code, err, _ = run(fit_args(path, tmp_path / "m", "--cv", "40"), capsys)
    one_error_line(code, err, "--cv 40", "50")


@pytest.mark.parametrize("where", ["under-file", "missing-parent", "read-only"])
def test_unwritable_out_is_found_before_work(tmp_path, data, where, capsys):
    if where == "under-file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "m"
    elif where == "missing-parent":
        out = tmp_path / "np1" / "np2" / "m"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        if os.access(ro, os.W_OK):  # root writes anywhere: nothing to test
            pytest.skip("running as root")
        out = ro / "m"
    code, err, _ = run(fit_args(data, out), capsys)
    one_error_line(code, err, "--out")
    assert not (tmp_path / "np1").exists()


def test_mixed_time_zones_are_converted_to_utc(tmp_path, frame, capsys):
    zones = ["+01:00", "-05:00", "Z", "+09:30"]
    frame["when"] = [f"2015-0{1 + i % 9}-1{i % 10} 10:00{zones[i % 4]}" for i in range(len(frame))]
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    code, err, _ = run(["fit-reward", path, "--text", "headline", "--outcome", "clicks", "--trials", "impressions",
                        "--confounder", "when:time", "--encoder", "hashing", "--cv", "3",
                        "--out", tmp_path / "m"], capsys)
    assert code == 0, err


def test_parquet_text_column_of_lists(tmp_path, frame, capsys):
    frame["headline"] = [[w] for w in frame["headline"]]
    path = tmp_path / "log.parquet"
    frame.to_parquet(path)
    code, err, _ = run(fit_args(path, tmp_path / "m"), capsys)
    one_error_line(code, err, "'headline'", "list")


@pytest.mark.parametrize("args,needle", [
    (["benchmark", "simulate", "--n", "1000000000000", "--out", "B"], "--n"),
    (["generate", "tiny-headlines", "--n", "1000000000000", "--out", "G.csv"], "--n"),
    (["generate", "tiny-headlines", "--n", "1000", "--best-of", "1000", "--out", "G.csv"], "--best-of"),
    (["generate", "tiny-headlines", "--n", "1", "--seed", "-1", "--out", "G.csv"], "--seed"),
])
def test_bounded_counts(tmp_path, args, needle, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err, _ = run(args, capsys)
    one_error_line(code, err, needle)
    assert not list(tmp_path.iterdir())


# -- 5. no partial outputs -------------------------------------------------------------------
def test_score_onto_a_directory_leaves_nothing(tmp_path, model_dir, data, capsys):
    target = tmp_path / "dir.csv"
    target.mkdir()
    code, err, _ = run(["score", model_dir, data, "--text", "headline", "--out", target, "--force"], capsys)
    one_error_line(code, err, "--out", "directory")
    assert no_temp_files(tmp_path) and target.is_dir() and not list(target.iterdir())


def test_diagnose_onto_a_directory_leaves_nothing(tmp_path, data, capsys):
    target = tmp_path / "d"
    target.mkdir()
    code, err, _ = run(["diagnose", data, "--text", "headline", "--outcome", "clicks", "--confounder",
                        "test_week:time", "--encoder", "hashing", "--out", target, "--force"], capsys)
    one_error_line(code, err, "--out")
    assert no_temp_files(tmp_path)


def test_generate_with_empty_prompts(tmp_path, capsys):
    prompts = tmp_path / "p.csv"
    pd.DataFrame({"p": ["", "  ", None]}).to_csv(prompts, index=False)
    code, err, _ = run(["generate", "tiny-headlines", "--n", "1", "--prompts", prompts, "--prompt", "p",
                        "--out", tmp_path / "g.csv"], capsys)
    one_error_line(code, err, "'p'", "no non-empty prompts")
    assert not (tmp_path / "g.csv").exists()


def test_failed_score_leaves_no_folders(tmp_path, data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notmodel").mkdir()
    code, err, _ = run(["score", "notmodel", data, "--text", "headline", "--out", "np1/np2/s.csv"], capsys)
    assert code == 2
    assert not (tmp_path / "np1").exists()


# -- 6. smaller ------------------------------------------------------------------------------
def test_warnings_never_precede_the_error_line(tmp_path, frame, capsys):
    frame["clicks"] = frame["clicks"].astype(float)
    frame["impressions"] = frame["impressions"].astype(float)
    frame.loc[:5, "clicks"] = np.nan  # rows dropped with a warning ...
    frame.loc[10, "impressions"] = np.inf  # ... then an error
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    code, err, _ = run(fit_args(path, tmp_path / "m", "--trials", "impressions"), capsys)
    one_error_line(code, err, "'impressions'")


def test_warnings_of_a_good_run_are_printed(tmp_path, frame, capsys):
    frame["clicks"] = frame["clicks"].astype(float)
    frame.loc[:5, "clicks"] = np.nan
    frame.loc[7, "clicks"] = 2.5
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    code, err, _ = run(fit_args(path, tmp_path / "m", "--trials", "impressions"), capsys)
    assert code == 0
    assert "dropped 6 row(s)" in err and "non-integer" in err


def test_numeric_text_column_warns(tmp_path, frame, capsys):
    frame["num"] = np.arange(len(frame)) % 17
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    code, err, _ = run(fit_args(path, tmp_path / "m", text="num"), capsys)
    assert code == 0 and "holds numbers" in err


def test_duplicate_header_names(tmp_path, capsys):
    path = tmp_path / "dup.csv"
    path.write_text("headline,clicks,clicks,test_week\na,1,2,201301\n")
    code, err, _ = run(fit_args(path, tmp_path / "m"), capsys)
    one_error_line(code, err, "duplicate column", "'clicks'")


def test_outputs_respect_the_umask(tmp_path, data, capsys):
    old = os.umask(0o022)
    try:
        assert run(fit_args(data, tmp_path / "m"), capsys)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755
    for f in (tmp_path / "m").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_unwritable_out_folder_is_refused_even_for_root(tmp_path, data, capsys, monkeypatch):
    """The writability probe itself (root passes chmod checks, so the probe is forced to fail)."""
    import tempfile

    real = tempfile.mkstemp

    def refuse(*args, **kwargs):
        if kwargs.get("prefix") == ".tmp-probe-":
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, err, _ = run(fit_args(data, tmp_path / "m"), capsys)
    one_error_line(code, err, "--out", "cannot write", "Permission denied")
