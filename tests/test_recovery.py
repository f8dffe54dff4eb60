"""Deconfounding recovers known text coefficients where the naive fit is biased."""

import numpy as np
import pytest
from conftest import simulate

from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.rewards import make_estimator

SPEC = [ConfounderSpec("c", "numeric")]


def coefficients(est, d=5):
    # The reward is linear in X for linear heads: read off the slope per feature.
    return est.reward(np.eye(d)) - est.reward(np.zeros((1, d)))


@pytest.mark.parametrize("family", ["gaussian", "bernoulli", "binomial", "poisson"])
def test_deconfound_recovers_coefficients_naive_does_not(family):
    X, y, conf, trials, w = simulate(family)
    fit = dict(confounders=conf, specs=SPEC, trials=trials)
    naive = make_estimator("naive", family=family).fit(X, y, **fit)
    scale = np.max(np.abs(w)) / 0.5  # poisson's planted coefficients are half as large
    assert np.max(np.abs(coefficients(naive) - w)) > 0.2 * scale  # the confounder leaks in
    for estimator in ("joint", "partialling-out"):
        est = make_estimator("deconfound", family=family, estimator=estimator).fit(X, y, **fit)
        assert est.family_ == family
        err = np.abs(coefficients(est) - w)
        assert np.max(err) < 0.08 * scale, (estimator, coefficients(est))


def test_reward_is_centered_and_labels_remove_confounder():
    X, y, conf, trials, w = simulate("gaussian")
    est = make_estimator("deconfound", family="gaussian").fit(X, y, confounders=conf, specs=SPEC)
    assert abs(est.reward(X).mean()) < 1e-9
    labels = est.deconfounded_labels(y, conf)
    # y - g(c) should no longer move with c beyond what the text carries.
    resid = labels - X @ w
    assert abs(np.corrcoef(resid, conf["c"])[0, 1]) < 0.05
    assert abs(np.corrcoef(y - X @ w, conf["c"])[0, 1]) > 0.5


def test_confounder_input_mlp_and_averaging():
    X, y, conf, trials, w = simulate("gaussian", n=1500)
    est = make_estimator("confounder-input", family="gaussian", alphas=(1e-2,), cv=2).fit(
        X, y, confounders=conf, specs=SPEC)
    r = est.reward(X)
    assert r.shape == (len(X),) and np.isfinite(r).all()
    # Averaged over c, the spurious feature 3 should matter far less than causal feature 0.
    slope = coefficients(est)
    assert abs(slope[0]) > 2 * abs(slope[3])


def test_methods_needing_confounders_say_so():
    from deconfoundlm.errors import UserError

    X, y, conf, trials, w = simulate("gaussian", n=200)
    with pytest.raises(UserError, match="confounder"):
        make_estimator("deconfound").fit(X, y)
