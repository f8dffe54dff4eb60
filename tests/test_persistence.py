"""Save/load round trip and seed determinism, through the API and the CLI."""

import numpy as np
import pandas as pd
import pytest
from conftest import simulate

from deconfoundlm import fit_reward, load_reward
from deconfoundlm.cli import main
from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.rewards import load_estimator, make_estimator

TEXTS = ["You won't believe this", "10 facts about cats", "Why the world needs more kindness!"]


@pytest.mark.parametrize("method,extra", [("naive", {}), ("deconfound", {}),
                                          ("deconfound", {"estimator": "partialling-out"}),
                                          ("confounder-input", {"alphas": (1e-2,), "cv": 2})])
def test_estimator_roundtrip(tmp_path, method, extra):
    X, y, conf, trials, w = simulate("binomial", n=600)
    est = make_estimator(method, **extra).fit(X, y, confounders=conf, specs=[ConfounderSpec("c", "numeric")],
                                              trials=trials)
    est.save(tmp_path)
    loaded = load_estimator(tmp_path)[0]
    np.testing.assert_array_equal(est.reward(X), loaded.reward(X))
    if method != "confounder-input":
        np.testing.assert_array_equal(est.deconfounded_labels(y, conf, trials),
                                      loaded.deconfounded_labels(y, conf, trials))
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.bin"))


def test_pipeline_roundtrip_and_seed(tmp_path, upworthy_sample):
    kw = dict(text="headline", outcome="clicks", trials="impressions",
              confounders=["test_week:time", "first_place:categorical"], encoder="hashing", seed=3)
    a = fit_reward(upworthy_sample, out=tmp_path / "a", **kw)
    b = fit_reward(upworthy_sample, out=tmp_path / "b", **kw)
    loaded = load_reward(tmp_path / "a")
    np.testing.assert_array_equal(a.score(TEXTS), loaded.score(TEXTS))
    np.testing.assert_array_equal(a.score(TEXTS), b.score(TEXTS))
    import json

    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["method"] == "deconfound" and cfg["family"] == "binomial"
    assert cfg["encoder"].startswith("hashing") and cfg["roles"]["trials"] == "impressions"
    assert cfg["data_fingerprint"] and "torch" in cfg["versions"]
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["cv_deviance"] > 0
    assert 0 <= metrics["diagnostics"]["confounder_deviance_share"] <= 1
    assert set(metrics["diagnostics"]["entanglement_r2"]) == {"test_week", "first_place"}
    # It says what it is, and one string is refused rather than scored letter by letter.
    assert repr(loaded) == ("<deconfoundlm Reward: method=deconfound, family=binomial, encoder=hashing-256, "
                            "text='headline', outcome='clicks', confounders: test_week:time, "
                            "first_place:categorical>")
    with pytest.raises(TypeError, match=r"reward.score\(\[text\]\)"):
        loaded.score("one text")
    assert loaded.score(["one text"]).shape == (1,)


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl"])
def test_cli_fit_and_score(tmp_path, upworthy_sample, ext, capsys):
    data = tmp_path / f"log.{ext}"
    df = upworthy_sample[["headline", "clicks", "impressions", "test_week"]]
    from deconfoundlm.outputs import write_table

    write_table(df, data)
    args = ["fit-reward", str(data), "--text", "headline", "--outcome", "clicks", "--trials", "impressions",
            "--confounder", "test_week:time", "--encoder", "hashing", "--seed", "1"]
    assert main(args + ["--out", str(tmp_path / "m")]) == 0
    assert main(["score", str(tmp_path / "m"), str(data), "--text", "headline", "--out", str(tmp_path / f"s.{ext}")]) == 0
    assert main(["score", str(tmp_path / "m"), str(data), "--text", "headline", "--out", str(tmp_path / "t.csv")]) == 0
    scored = pd.read_csv(tmp_path / "t.csv")
    # The table written in the input's own format reads back with the same rows, columns and scores.
    from deconfoundlm.logs.tables import read_table

    same_format = read_table(tmp_path / f"s.{ext}")
    assert list(same_format.columns) == list(df.columns) + ["reward"]
    assert same_format["headline"].tolist() == df["headline"].tolist()
    np.testing.assert_allclose(same_format["reward"].to_numpy(float), scored["reward"].to_numpy(float),
                               rtol=1e-12, atol=1e-15)  # JSONL keeps 15 decimals
    assert list(scored.columns) == list(df.columns) + ["reward"]
    assert len(scored) == len(df) and scored["reward"].notna().all()
    assert scored["reward"].dtype == float
    # Same seed and data: identical scores from a second fit.
    assert main(args + ["--out", str(tmp_path / "m2")]) == 0
    assert main(["score", str(tmp_path / "m2"), str(data), "--text", "headline", "--out", str(tmp_path / "u.csv")]) == 0
    np.testing.assert_array_equal(scored["reward"], pd.read_csv(tmp_path / "u.csv")["reward"])
