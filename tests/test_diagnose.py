"""deconfoundlm diagnose: numbers in range, JSON written, plain-word warnings, bad input."""

import json

import numpy as np

from deconfoundlm.cli import main
from deconfoundlm.rewards.diagnostics import confounded_ngrams, plain_warnings


def test_confounded_ngrams_finds_the_confounded_word():
    rng = np.random.default_rng(0)
    texts = [("cats " if i % 2 else "dogs ") + ("wow" if i % 3 == 0 else "meh") for i in range(300)]
    dec = rng.normal(0, 0.01, 300)
    naive = dec + np.array([1.0 if t.startswith("cats") else 0.0 for t in texts])  # all from the confounder
    rows = confounded_ngrams(texts, naive, dec, min_count=20)
    assert rows and rows[0]["ngram"] in ("cats", "dogs")
    assert abs(rows[0]["confounder_part"]) > 0.9


def test_plain_warnings():
    w = plain_warnings({"confounder_deviance_share": 0.001, "overlap": 0.1, "entanglement_r2": {"week": 0.5},
                        "reward_correlation": 0.2})
    text = " ".join(w)
    assert "almost none" in text and "Poor overlap" in text and "'week'" in text and "disagree" in text


def test_diagnose_cli_writes_json(tmp_path, upworthy_sample, capsys):
    data = tmp_path / "log.parquet"
    upworthy_sample.to_parquet(data)
    out = tmp_path / "diag.json"
    assert main(["diagnose", str(data), "--text", "headline", "--outcome", "clicks", "--trials", "impressions",
                 "--confounder", "test_week:time", "--encoder", "hashing", "--cv", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "confounder strength" in printed and "overlap" in printed
    d = json.loads(out.read_text())
    assert 0 <= d["confounder_deviance_share"] <= 1 and 0 <= d["overlap"] <= 1
    assert set(d["entanglement_r2"]) == {"test_week"} and -1 <= d["reward_correlation"] <= 1
    assert isinstance(d["warnings"], list) and isinstance(d["confounded_ngrams"], list)


def test_diagnose_needs_a_confounder(tmp_path, upworthy_sample, capsys):
    data = tmp_path / "log.csv"
    upworthy_sample.to_csv(data, index=False)
    assert main(["diagnose", str(data), "--text", "headline", "--outcome", "clicks",
                 "--encoder", "hashing", "--out", str(tmp_path / "d.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--confounder" in err[0] and not (tmp_path / "d.json").exists()
