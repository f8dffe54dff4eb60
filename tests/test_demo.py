"""Smoke run of the main job's path on a small Upworthy subset with the hashing encoder."""

import json

import pandas as pd

from deconfoundlm.cli import main
from deconfoundlm.logs.upworthy import load_packages, significant_pairs


def test_significant_pairs_are_within_test_and_different_headlines():
    pk = load_packages().head(300)
    pairs = significant_pairs(pk)
    assert len(pairs) > 0
    assert (pk.loc[pairs["i"], "test_id"].to_numpy() == pk.loc[pairs["j"], "test_id"].to_numpy()).all()
    assert (pk.loc[pairs["i"], "headline"].to_numpy() != pk.loc[pairs["j"], "headline"].to_numpy()).all()
    ctr_diff = pk.loc[pairs["i"], "ctr"].to_numpy() - pk.loc[pairs["j"], "ctr"].to_numpy()
    assert ((ctr_diff > 0) == (pairs["sign"] > 0)).all()


def test_demo_quick_hashing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--encoder", "hashing", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "results.csv")
    assert set(table["method"]) == {"naive", "confounder-input", "deconfound", "experimental"}
    assert ((table["ci_low"] <= table["accuracy"]) & (table["accuracy"] <= table["ci_high"])).all()
    assert table["accuracy"].between(0, 1).all() and (table["pairs_per_split"] > 10).all()
    assert "deconfound" in printed and "95% CI" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["splits"] == 2
