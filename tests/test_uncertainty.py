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
        diff = est.reward(a) - est.reward(b)
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


def test_standard_errors_at_least_as_many_parameters_as_rows():
    # 120 rows, 256 hashing features: p >= n. One row per cluster is the unclustered sandwich
    # (it was ~sqrt(n) smaller: n / max(n - p, 1) inflated the unclustered errors), and the errors
    # stay finite and of the order of the reward's spread, not blown up by the correction.
    from deconfoundlm.features.text import get_encoder

    rng = np.random.default_rng(0)
    words = "you won't believe this cat dog news facts why how life people world video".split()
    texts = [" ".join(rng.choice(words, 5)) for _ in range(120)]
    X = get_encoder("hashing").encode(texts).astype(np.float64)
    y = (rng.random(120) < 0.4).astype(float)
    conf = pd.DataFrame({"c": rng.integers(0, 3, 120).astype(str)})
    spec = [ConfounderSpec("c", "categorical")]
    plain = make_estimator("deconfound", family="bernoulli", cv=3).fit(X, y, confounders=conf, specs=spec)
    single = make_estimator("deconfound", family="bernoulli", cv=3).fit(X, y, confounders=conf, specs=spec,
                                                                       groups=np.arange(120))
    se_plain, se_single = plain.reward_se(X), single.reward_se(X)
    assert np.isfinite(se_plain).all() and se_plain.max() > 0
    np.testing.assert_allclose(se_single, se_plain, rtol=1e-9)
    assert se_plain.mean() < 10 * max(np.std(plain.reward(X)), 1e-3)


def test_one_cluster_is_refused():
    from deconfoundlm.errors import UserError

    X, y, conf, trials = _simulate("gaussian", 0, n=200)
    with pytest.raises(UserError, match="at least 2 clusters"):
        make_estimator("deconfound", family="gaussian", cv=3).fit(X, y, confounders=conf, specs=SPEC,
                                                                  groups=np.zeros(200))


def test_wide_sparse_design_gives_the_dense_sandwich(monkeypatch):
    # A confounder design wider than MAX_DENSE_CONF is kept sparse by the sandwich's blocks; the
    # covariance is the one the dense design gives.
    from deconfoundlm.glm import path as glm_path
    from deconfoundlm.glm.sandwich import text_covariance

    X, y, conf, trials = _simulate("binomial", 1, n=600)
    conf = pd.DataFrame({"c": np.random.default_rng(1).integers(0, 40, 600).astype(str)})
    est = make_estimator("deconfound", family="binomial", cv=3, min_count=1).fit(
        X, y, confounders=conf, specs=[ConfounderSpec("c", "categorical")], trials=trials, se=False)
    psi = est.design_.transform(conf)
    targets = np.column_stack([y, trials, np.ones(600), np.zeros(600)])
    groups = np.arange(600) // 7
    dense = text_covariance(est.glm_, X, psi, targets, groups)
    monkeypatch.setattr(glm_path, "MAX_DENSE_CONF", 10)
    sparse = text_covariance(est.glm_, X, psi, targets, groups)
    np.testing.assert_allclose(sparse, dense, rtol=1e-8, atol=1e-14)
