"""A gaussian outcome in other units (milliseconds for seconds, cents for dollars) is the same
log: every reward scales with the unit and chooses the same penalty. The ridge penalty was
scaled by var(y), so it grew with the square of the unit: in milliseconds the log's reward came
out flat (the strongest penalty of the grid everywhere) and the A/B calibration read 3e15; the
iterative solvers (absolute tolerances, fixed learning rates) and the A/B solver (capped
intercept steps) stopped short of the optimum in large units."""

import numpy as np
import pytest
from conftest import planted_log

from deconfoundlm.glm.grounding import ABRows, calibration, fit_grounded
from deconfoundlm.pipeline import fit_reward

UNITS = (1e-3, 1e6)


@pytest.mark.parametrize("method, conf, head", [("naive", (), None), ("deconfound", ("c:numeric",), None),
                                                ("deconfound", ("c:numeric",), "mlp"),
                                                ("confounder-input", ("c:numeric",), None),
                                                ("odin", ("c:numeric",), None), ("crm", ("c:numeric",), None)])
def test_rewards_scale_with_the_outcomes_unit(method, conf, head):
    """Closed-form fits (naive, deconfound) and the iterative ones (L-BFGS, Adam: confounder-input,
    the MLP head, odin, crm) alike: the iterative ones solve in the outcome's own unit (its SD)."""
    log = planted_log(600)
    texts = log["text"].tolist()[:100]

    def fit(unit):
        weight = 1.0 if method in ("odin", "crm") else None  # one invariance weight: the fit, not the search
        return fit_reward(log.assign(y=log["y"] * unit), text="text", outcome="y", confounders=conf, method=method,
                          head=head, invariance_weight=weight, family="gaussian", encoder="hashing", cv=3, seed=0,
                          diagnose=False, se=False)

    ref = fit(1.0)
    base = ref.score(texts)
    assert np.std(base) > 0.1  # the planted word is learned
    for unit in UNITS:
        got = fit(unit)
        assert got.estimator.alpha_ == ref.estimator.alpha_
        np.testing.assert_allclose(got.score(texts) / unit, base, rtol=1e-6, atol=1e-6 * np.abs(base).max())


def test_partialling_out_scales_with_the_outcomes_unit():
    log = planted_log(600)
    texts = log["text"].tolist()[:100]
    fits = [fit_reward(log.assign(y=log["y"] * u), text="text", outcome="y", confounders=("c:numeric",),
                       estimator="partialling-out", family="gaussian", encoder="hashing", cv=3, seed=0,
                       diagnose=False, se=False) for u in (1.0, 1e3)]
    assert fits[0].estimator.alpha_ == fits[1].estimator.alpha_
    np.testing.assert_allclose(fits[1].score(texts) / 1e3, fits[0].score(texts), rtol=1e-6,
                               atol=1e-9 * 1e3)


def test_grounding_and_calibration_scale_with_the_outcomes_unit():
    rng = np.random.default_rng(3)
    T, arms, p = 80, 3, 5
    x = rng.normal(size=(T * arms, p))
    test = np.repeat(np.arange(T), arms)
    truth = x @ rng.normal(size=p)
    y = 3.0 * rng.normal(size=T)[test] + truth + rng.normal(size=len(test))
    prior = 0.7 * truth + 0.5 * x[:, 0]  # the log's reward: right direction, off in scale and one feature
    ones = np.ones(len(y))
    paths, cals = {}, {}
    for unit in (1.0, *UNITS):
        rows = ABRows(x, prior * unit, test, y * unit, ones, ones)
        paths[unit], cals[unit] = fit_grounded(rows, "gaussian", cv=5), calibration(rows, "gaussian")
        own = fit_grounded(ABRows(x, None, test, y * unit, ones, ones), "gaussian", cv=5)
        paths[unit, "own"] = own
    ref = paths[1.0]
    for unit in UNITS:
        got = paths[unit]
        assert got.fit.alpha == ref.fit.alpha and got.fit.s == pytest.approx(ref.fit.s, rel=1e-7)
        np.testing.assert_allclose(got.fit.beta / unit, ref.fit.beta, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(np.asarray(got.cv_deviance) / unit**2, ref.cv_deviance, rtol=1e-6)
        assert paths[unit, "own"].fit.alpha == paths[1.0, "own"].fit.alpha
        np.testing.assert_allclose(paths[unit, "own"].fit.beta / unit, paths[1.0, "own"].fit.beta, rtol=1e-6,
                                   atol=1e-9)
        assert cals[unit].slope == pytest.approx(cals[1.0].slope, rel=1e-9)
        assert cals[unit].ci_low == pytest.approx(cals[1.0].ci_low, rel=1e-9)
    assert 0.5 < cals[1.0].slope < 1.5
