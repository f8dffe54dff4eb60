"""Sensitivity to an unnamed confounder (DoubleML's PLR and its omitted-variable analysis)."""

import json

import numpy as np
import pandas as pd
import pytest

from deconfoundlm.cli import main
from deconfoundlm.evaluation.sensitivity import sensitivity

WORDS = np.array(["the", "a", "news", "today", "world", "people", "story", "city"])


def planted(gamma: float, n: int = 1500, seed: int = 0) -> pd.DataFrame:
    """'great' raises y (causal); c is named; u is not: it moves y by gamma per SD and makes the
    word 'wow' more common."""
    rng = np.random.default_rng(seed)
    c, u = rng.normal(size=n), rng.normal(size=n)
    great = rng.random(n) < 0.5
    wow = rng.random(n) < 1 / (1 + np.exp(-u))
    texts = [" ".join(rng.choice(WORDS, 5)) + (" great" if g else "") + (" wow" if w else "")
             for g, w in zip(great, wow, strict=True)]
    y = 0.6 * great + 0.8 * c + gamma * u + rng.normal(scale=0.7, size=n)
    return pd.DataFrame({"text": texts, "y": y, "c": c})


@pytest.mark.slow  # many DoubleML fits
def test_robustness_value_falls_as_an_omitted_confounder_grows():
    rv = []
    for gamma in (0.0, 1.0, 2.0):
        r = sensitivity(planted(gamma), text="text", outcome="y", confounders=["c:numeric"], encoder="hashing",
                        cv=3)
        assert r["ci"][0] <= r["theta"] <= r["ci"][1]
        assert 0 <= r["rva"] <= r["rv"] <= 1
        rv.append(r["rv"])
    assert rv[0] > rv[1] > rv[2], rv
    assert set(r["benchmarks"]) == {"c"} and r["benchmarks"]["c"]["theta_lower"] <= r["theta"]


def test_cli_writes_json_and_plain_words(tmp_path, capsys):
    path = tmp_path / "log.csv"
    planted(0.5, n=600).to_csv(path, index=False)
    code = main(["sensitivity", str(path), "--text", "text", "--outcome", "y", "--confounder", "c:numeric",
                 "--encoder", "hashing", "--cv", "3", "--out", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert code == 0 and "Robustness value" in out and "as strong as 'c'" in out
    report = json.loads((tmp_path / "s.json").read_text())
    assert {"theta", "se", "rv", "rva", "scenario", "benchmarks", "summary"} <= set(report)


@pytest.mark.parametrize("extra,needle", [([], "needs at least one --confounder"),
                                          (["--confounder", "c:numeric", "--cf-y", "1.5"], "--cf-y")])
def test_sensitivity_bad_input(tmp_path, extra, needle, capsys):
    path = tmp_path / "log.csv"
    planted(0.0, n=200).to_csv(path, index=False)
    code = main(["sensitivity", str(path), "--text", "text", "--outcome", "y", "--encoder", "hashing", *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
