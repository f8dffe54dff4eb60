"""Regression tests for the edges a new user meets: empty inputs, silent guesses, results that say
which data they came from, a SIGTERM after the output is in place, outputs inside a reward folder.
Fast: hashing encoder, a few hundred rows (the served-cache and 4xx tests are in test_serve.py)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import one_error_line, run_cli

ROLES = ["--text", "headline", "--outcome", "clicks", "--trials", "impressions", "--confounder", "test_week:time",
         "--encoder", "hashing", "--cv", "3"]


def run(args, capsys):
    return run_cli(args, capsys)[:2]


# -- a SIGTERM once the output is in place ----------------------------------------------------
SIGNAL_AFTER_COMMIT = """
import atexit, os, signal, sys, time
from pathlib import Path
from deconfoundlm import outputs
from deconfoundlm.cli import main

when, out = sys.argv[1], sys.argv[2]
if when == "after-commit":  # the signal arrives inside the command, just after the folder is in place
    commit = outputs._committed
    def late(path):
        commit(path)
        if Path(path).name == Path(out).name:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
    outputs._committed = late
else:  # the signal arrives while the process exits (libraries shutting down)
    atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(1)))
sys.argv = ["deconfoundlm", *sys.argv[3:]]
sys.exit(main())
"""


@pytest.mark.parametrize("dask", [False, pytest.param(True, marks=pytest.mark.dask)])
@pytest.mark.parametrize("when", ["after-commit", "at-exit"])
def test_sigterm_after_the_output_is_written(tmp_path, data, when, dask):
    """Never killed by the signal itself: either one line naming what was written (exit 143) or the
    command's own exit 0; the reward is complete and loads."""
    out = tmp_path / "r"
    args = ["fit-reward", str(data), *ROLES, "--out", str(out)] + (["--dask", "local:1"] if dask else [])
    res = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_COMMIT, when, str(out), *args],
                         capture_output=True, text=True, timeout=180)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    if when == "after-commit":
        assert res.returncode == 143, res.stderr
        assert lines[-1] == f"deconfoundlm: stopped (SIGTERM) after writing {out}", res.stderr
    else:
        assert res.returncode == 0, res.stderr
        assert not any("SIGTERM" in ln for ln in lines), res.stderr
    from deconfoundlm import load_reward

    assert load_reward(out).score(["a headline"]).shape == (1,)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]


# -- empty inputs ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_scoring_a_table_with_no_rows(tmp_path, hashing_reward, fmt, capsys):
    """A header-only table (an empty JSONL file) gives an empty result, as the API and serve do:
    exit 0, the output holds the columns and no rows, one warning line says so."""
    empty = pd.DataFrame({"headline": pd.Series([], dtype=str), "views": pd.Series([], dtype=float)})
    src = tmp_path / f"empty.{fmt}"
    {"csv": lambda: empty.to_csv(src, index=False), "parquet": lambda: empty.to_parquet(src),
     "jsonl": lambda: src.write_text("")}[fmt]()
    out = tmp_path / f"s.{fmt}"
    code, err = run(["score", str(hashing_reward), str(src), "--text", "headline", "--out", str(out)], capsys)
    if fmt == "jsonl":  # an empty JSONL file has no columns at all: nothing names the text column
        one_error_line(code, err, "empty file")
        assert not out.exists()
        return
    assert code == 0, err
    assert "has no rows" in err and "Traceback" not in err
    got = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert len(got) == 0 and {"headline", "views", "reward"} <= set(got.columns)


@pytest.mark.dask
def test_scoring_an_empty_table_on_a_cluster(tmp_path, hashing_reward, capsys):
    pd.DataFrame({"headline": pd.Series([], dtype=str)}).to_parquet(tmp_path / "empty.parquet")
    code, err = run(["score", str(hashing_reward), str(tmp_path / "empty.parquet"), "--text", "headline",
                     "--dask", "local:1", "--out", str(tmp_path / "scores")], capsys)
    assert code == 0 and "has no rows" in err, err
    got = pd.read_parquet(tmp_path / "scores")
    assert len(got) == 0 and "reward" in got.columns


def test_a_log_with_no_rows_is_one_line(tmp_path, capsys):
    pd.DataFrame(columns=["headline", "clicks", "impressions", "test_week"]).to_csv(tmp_path / "log.csv", index=False)
    one_error_line(*run(["fit-reward", str(tmp_path / "log.csv"), *ROLES, "--out", str(tmp_path / "r")], capsys),
                   "no rows")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("dask", [False, pytest.param(True, marks=pytest.mark.dask)])
def test_a_log_whose_every_row_is_dropped_says_why(tmp_path, data, dask, capsys):
    """Rows dropped one by one (zero trials here) leave nothing: one line naming the reason and count."""
    log = pd.read_csv(data).assign(impressions=0)
    log.to_csv(tmp_path / "log.csv", index=False)
    extra = ["--dask", "local:1"] if dask else []
    one_error_line(*run(["fit-reward", str(tmp_path / "log.csv"), *ROLES, "--out", str(tmp_path / "r"), *extra],
                        capsys), "no usable rows left", f"{len(log)} row(s) with missing, zero or negative trials in 'impressions'")
    assert not (tmp_path / "r").exists()


def test_the_api_scores_nothing_and_names_missing_texts(hashing_reward):
    from deconfoundlm import load_reward

    reward = load_reward(hashing_reward)
    assert reward.score([]).shape == (0,)
    assert reward.predict([], at={"test_week": 201410}).shape == (0,)
    with pytest.warns(UserWarning, match=r"1 missing text\(s\)"):
        got = reward.score([None, "a headline"])
    assert got.shape == (2,) and np.isfinite(got).all()
    assert got[0] == pytest.approx(reward.score([""])[0])
    with pytest.raises(TypeError):
        reward.score("one string, not a list")


# -- silent guesses ----------------------------------------------------------------------------
@pytest.fixture
def timestamp_reward(tmp_path, frame):
    rng = np.random.default_rng(0)
    stamps = pd.Timestamp("2016-01-01") + pd.to_timedelta(rng.integers(0, 120 * 24 * 60, len(frame)), unit="min")
    frame = frame.assign(created_at=stamps.strftime("%Y-%m-%d %H:%M:%S")).drop(columns="test_week")
    frame.to_csv(tmp_path / "ts.csv", index=False)
    from deconfoundlm.cli import main

    assert main(["fit-reward", str(tmp_path / "ts.csv"), "--text", "headline", "--outcome", "clicks",
                    "--trials", "impressions", "--confounder", "created_at:time", "--encoder", "hashing",
                    "--cv", "3", "--out", str(tmp_path / "r")]) == 0
    return tmp_path / "r"


def test_at_a_date_without_an_hour_says_midnight(tmp_path, timestamp_reward, data, capsys):
    out = tmp_path / "s.csv"
    code, err = run(["score", str(timestamp_reward), str(data), "--text", "headline", "--at",
                     "created_at=2016-05-03", "--out", str(out)], capsys)
    assert code == 0 and "no time of day given" in err and "00:00" in err, err
    code, err = run(["score", str(timestamp_reward), str(data), "--text", "headline", "--at",
                     "created_at=2016-05-03T14:00", "--out", str(out), "--force"], capsys)
    assert code == 0 and "time of day" not in err, err


def test_sensitivity_says_one_value_not_an_interval():
    from deconfoundlm.evaluation.sensitivity import _between

    assert _between(1.2811, 1.2809).startswith("at +1.281 (unchanged")
    assert _between(1.0, 1.5) == "between +1.000 and +1.500"


def test_a_one_column_prompts_file_needs_no_prompt_flag(tmp_path, capsys):
    pd.DataFrame({"p": ["Write a headline"]}).to_csv(tmp_path / "one.csv", index=False)
    pd.DataFrame({"p": ["x"], "q": ["y"]}).to_csv(tmp_path / "two.csv", index=False)
    base = ["generate", str(tmp_path / "no-such-policy"), "--n", "1", "--out", str(tmp_path / "g.csv")]
    code, err = run([*base, "--prompts", str(tmp_path / "one.csv")], capsys)
    assert code == 2 and "--prompt" not in err and "no-such-policy" in err, err  # on to the policy
    one_error_line(*run([*base, "--prompts", str(tmp_path / "two.csv")], capsys), "2 columns", "p, q",
                   "--prompt COL")


# -- results say which data they came from ------------------------------------------------------
DIAG_ROLES = ["--text", "headline", "--outcome", "clicks", "--trials", "impressions", "--confounder",
              "test_week:time", "--encoder", "hashing"]


def test_results_record_their_data_and_report_refuses_another_logs(tmp_path, hashing_reward, upworthy_sample,
                                                                   capsys):
    log = hashing_reward.parent / "log.csv"  # the log the reward was fitted on
    other = tmp_path / "other.csv"
    upworthy_sample.iloc[::-1].iloc[:300].to_csv(other, index=False)
    for name, src in (("same", log), ("other", other)):
        code, err = run(["diagnose", str(src), *DIAG_ROLES, "--out", str(tmp_path / f"diag-{name}.json")], capsys)
        assert code == 0, err
    same = json.loads((tmp_path / "diag-same.json").read_text())
    prov = same["provenance"]
    assert prov["rows"] == 400 and prov["roles"]["text"] == "headline" and len(prov["data_fingerprint"]) == 16
    cfg = json.loads((hashing_reward / "config.json").read_text())
    assert prov["data_fingerprint"] == cfg["data_fingerprint"]
    code, err = run(["report", str(hashing_reward), "--diagnostics", str(tmp_path / "diag-same.json"),
                     "--out", str(tmp_path / "ok.html")], capsys)
    assert code == 0, err
    one_error_line(*run(["report", str(hashing_reward), "--diagnostics", str(tmp_path / "diag-other.json"),
                         "--out", str(tmp_path / "bad.html")], capsys),
                   "computed from other data", prov["data_fingerprint"], "300 rows")
    assert not (tmp_path / "bad.html").exists()
    # an older result without provenance is marked in the report, not trusted silently
    del same["provenance"]
    (tmp_path / "old.json").write_text(json.dumps(same))
    code, err = run(["report", str(hashing_reward), "--diagnostics", str(tmp_path / "old.json"),
                     "--out", str(tmp_path / "old.html")], capsys)
    assert code == 0 and "Not checked" in (tmp_path / "old.html").read_text()


def test_evaluate_records_the_rewards_it_scored(tmp_path, hashing_reward, upworthy_sample, capsys):
    from deconfoundlm.evaluation.provenance import reward_identity

    ab = tmp_path / "ab.csv"
    upworthy_sample.to_csv(ab, index=False)
    code, err = run(["evaluate", str(hashing_reward), str(ab), "--text", "headline", "--test", "test_id",
                     "--outcome", "clicks", "--trials", "impressions", "--out", str(tmp_path / "ev.json")], capsys)
    assert code == 0, err
    prov = json.loads((tmp_path / "ev.json").read_text())["provenance"]
    assert prov["rewards"][0]["identity"] == reward_identity(hashing_reward) and prov["rows"] == 400
    code, err = run(["report", str(hashing_reward), "--evaluation", str(tmp_path / "ev.json"),
                     "--out", str(tmp_path / "r.html")], capsys)
    assert code == 0, err
    other = tmp_path / "other-reward"
    import shutil

    shutil.copytree(hashing_reward, other)
    from safetensors.numpy import load_file, save_file

    weights = load_file(other / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3  # another fit: same config, other weights
    save_file(weights, other / "model.safetensors")
    one_error_line(*run(["report", str(other), "--evaluation", str(tmp_path / "ev.json"),
                         "--out", str(tmp_path / "bad.html")], capsys), "evaluates other rewards")


# -- outputs never go inside a model's folder ------------------------------------------------------
@pytest.mark.parametrize("inside", ["", "text_model", "sub/deeper"])
def test_no_output_inside_a_reward_folder(tmp_path, hashing_reward, data, capsys, inside):
    import shutil

    reward = tmp_path / "reward"
    shutil.copytree(hashing_reward, reward)
    target = reward / inside if inside else reward
    target.mkdir(parents=True, exist_ok=True)
    before = sorted(p.name for p in reward.rglob("*"))
    one_error_line(*run(["diagnose", str(data), *DIAG_ROLES, "--out", str(target / "diag.json")], capsys),
                   "holds a deconfoundlm reward model", "write it elsewhere")
    assert sorted(p.name for p in reward.rglob("*")) == before


def test_an_extra_file_beside_a_models_weights_changes_nothing(tmp_path, tiny_bert):
    """The rule: a model's identity is its config, weights, tokenizer and pooling files; other
    files beside them (notes, results) are not part of it."""
    import shutil

    from deconfoundlm.features.backbones import Backbone

    folder = tmp_path / "m"
    shutil.copytree(tiny_bert, folder)
    before = Backbone("m", str(folder), "auto").content_hash()
    (folder / "diag.json").write_text("{}")
    (folder / "notes.txt").write_text("fitted on Monday")
    assert Backbone("m", str(folder), "auto").content_hash() == before
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hidden_dropout_prob"] = 0.5
    (folder / "config.json").write_text(json.dumps(cfg))
    assert Backbone("m", str(folder), "auto").content_hash() != before
