"""Reward standard errors (sandwich from the fitted GLM) and pessimistic selection."""

import numpy as np
import pandas as pd
import pytest

from deconfoundlm import fit_reward, load_reward
from deconfoundlm.cli import main
from deconfoundlm.evaluation.benchmark.linear_log import TEXT_EFFECT, simulate_linear_log
from deconfoundlm.glm.sandwich import difference_se
from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.rewards import make_estimator

SPEC = [ConfounderSpec("c", "numeric")]
W = TEXT_EFFECT


def _simulate(family, seed, n=1500):
    X, y, conf, trials, _ = simulate_linear_log(family, n, seed)
    return X, y, conf, trials


@pytest.mark.parametrize("family,reps", [("gaussian", 100), ("binomial", 40)])
def test_intervals_of_reward_differences_cover_the_truth(family, reps):
    rng = np.random.default_rng(123)
    a, b = rng.normal(size=(20, 5)), rng.normal(size=(20, 5))
    hits = []
    for r in range(reps):
        X, y, conf, trials = _simulate(family, r)
        est = make_estimator("deconfound", family=family, cv=3).fit(X, y, confounders=conf, specs=SPEC,
                                                                    trials=trials)
        diff = est.score(a) - est.score(b)
        hits.append(np.abs(diff - (a - b) @ W) <= 1.96 * difference_se(est.text_cov_, a, b))
    coverage = float(np.mean(hits))
    assert 0.90 <= coverage <= 0.98, coverage


def test_clustered_errors_are_wider_when_clusters_share_noise():
    rng = np.random.default_rng(0)
    n, g = 2000, 40
    groups = rng.integers(0, g, size=n)
    X = rng.normal(size=(n, 3)) + rng.normal(size=(g, 3))[groups]  # features vary by cluster too
    y = X @ np.array([0.3, 0.0, -0.2]) + rng.normal(scale=1.0, size=g)[groups] + rng.normal(scale=0.5, size=n)
    conf = pd.DataFrame({"c": rng.normal(size=n)})
    plain = make_estimator("deconfound", family="gaussian", cv=3).fit(X, y, confounders=conf, specs=SPEC)
    clustered = make_estimator("deconfound", family="gaussian", cv=3).fit(X, y, confounders=conf, specs=SPEC,
                                                                         groups=groups)
    assert np.all(np.diag(clustered.text_cov_) > 2 * np.diag(plain.text_cov_))
    assert clustered.se_method_ == "sandwich (clustered)"


def test_score_se_through_the_api_the_cli_and_a_reload(tmp_path, upworthy_sample, capsys):
    data = tmp_path / "log.csv"
    upworthy_sample.to_csv(data, index=False)
    reward = fit_reward(data, text="headline", outcome="clicks", trials="impressions", group="test_id",
                        confounders=["test_week:time"], encoder="hashing", cv=3, out=tmp_path / "m")
    texts = ["You won't believe this", "10 facts about cats"]
    r, se = reward.score(texts, return_se=True)
    assert np.isfinite(se).all() and (se > 0).all()
    assert reward.metrics["standard_errors"] == "sandwich (clustered) by 'test_id'"
    r2, se2 = load_reward(tmp_path / "m").score(texts, return_se=True)
    np.testing.assert_array_equal(r, r2)
    np.testing.assert_allclose(se, se2)
    assert main(["score", str(tmp_path / "m"), str(data), "--text", "headline", "--se",
                 "--out", str(tmp_path / "s.csv")]) == 0
    scored = pd.read_csv(tmp_path / "s.csv")
    assert scored["reward_se"].gt(0).all()


def test_pessimistic_best_of_picks_by_lower_bound(tmp_path, upworthy_sample, capsys):
    data = tmp_path / "log.csv"
    upworthy_sample.to_csv(data, index=False)
    fit_reward(data, text="headline", outcome="clicks", trials="impressions", confounders=["test_week:time"],
               encoder="hashing", cv=3, out=tmp_path / "m")
    for k in ("0", "2"):
        assert main(["generate", "tiny-headlines", "--n", "3", "--best-of", "4", "--reward", str(tmp_path / "m"),
                     "--pessimism", k, "--seed", "1", "--out", str(tmp_path / f"g{k}.csv")]) == 0
    g0, g2 = pd.read_csv(tmp_path / "g0.csv"), pd.read_csv(tmp_path / "g2.csv")
    assert (g2["reward"] - 2 * g2["reward_se"]).mean() >= (g0["reward"] - 2 * g0["reward_se"]).mean() - 1e-12
    assert (g0["reward"].mean() >= g2["reward"].mean() - 1e-12)


@pytest.mark.parametrize("args,needle", [
    (["generate", "tiny-headlines", "--n", "1", "--best-of", "2", "--pessimism", "-1", "--out", "g.csv"],
     "--pessimism"),
    (["generate", "tiny-headlines", "--n", "1", "--best-of", "2", "--pessimism", "nan", "--out", "g.csv"],
     "--pessimism"),
    (["generate", "tiny-headlines", "--n", "1", "--pessimism", "1", "--out", "g.csv"], "--reward"),
])
def test_pessimism_bad_input(tmp_path, args, needle, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
