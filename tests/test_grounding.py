"""The A/B-test GLM (glm/grounding.py): its optimum against a brute-force fit with explicit test
dummies, the profiled held-out deviance, the calibration slope, pooling and degenerate tests."""

import time

import numpy as np
import pytest
from scipy import optimize

from deconfoundlm.glm.families import get_family
from deconfoundlm.glm.folds import hash_folds
from deconfoundlm.glm.grounding import (
    ALPHAS,
    ABRows,
    Calibration,
    calibration,
    fit_grounded,
    profiled_deviance,
)
from deconfoundlm.rewards.grounding import calibration_verdict


def make_rows(family: str, T: int = 40, arms: int = 3, p: int = 4, seed: int = 0, prior=None,
              effect: float = 0.3, trials: float = 400.0) -> tuple[ABRows, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T * arms, p))
    test = np.repeat(np.arange(T), arms)
    beta = rng.normal(size=p) * effect
    base = {"binomial": -2.5, "poisson": 1.0, "gaussian": 0.0, "bernoulli": 0.0}[family]
    eta = base + 0.5 * rng.normal(size=T)[test] + x @ beta
    n = np.full(len(test), trials) if family == "binomial" else np.ones(len(test))
    if family == "binomial":
        y = rng.binomial(n.astype(int), 1 / (1 + np.exp(-eta))).astype(float)
    elif family == "bernoulli":
        y = (rng.random(len(eta)) < 1 / (1 + np.exp(-eta))).astype(float)
    elif family == "poisson":
        y = rng.poisson(np.exp(eta)).astype(float)
    else:
        y = eta + rng.normal(size=len(eta))
    truth = x @ beta
    return ABRows(x, None if prior is None else prior(truth, rng), test, y, n, np.ones(len(y))), truth


def brute_force(rows: ABRows, family: str, alpha: float, with_prior: bool) -> float:
    """The objective's minimum with one explicit intercept per test and s >= 0 (scipy L-BFGS-B)."""
    fam = get_family(family)
    mean, sd = rows.x.mean(0), rows.x.std(0)
    z = (rows.x - mean) / sd
    design = np.hstack(([rows.prior[:, None]] if with_prior else []) + [z])
    pen = np.ones(design.shape[1])
    if with_prior:
        pen[0] = 0
    T = rows.n_tests
    norm = fam.normaliser(rows.w.sum(), rows.w @ rows.n)
    curv = fam.curvature_of(rows.y, rows.n, rows.w)

    def obj(v):
        a, th = v[:T], v[T:]
        loss, d1, _ = fam.terms(a[rows.test] + design @ th, rows.y, rows.n)
        g = rows.w * d1 / norm
        grad = np.concatenate([np.bincount(rows.test, g, minlength=T), design.T @ g + 2 * curv * alpha * pen * th])
        return float(rows.w @ loss) / norm + curv * alpha * float(pen @ (th * th)), grad

    bounds = [(None, None)] * (T + design.shape[1])
    if with_prior:
        bounds[T] = (0.0, None)
    res = optimize.minimize(obj, np.zeros(T + design.shape[1]), jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    return res.fun


@pytest.mark.parametrize("family", ["binomial", "bernoulli", "poisson", "gaussian"])
@pytest.mark.parametrize("with_prior", [False, True])
def test_optimum_matches_a_fit_with_explicit_test_dummies(family, with_prior):
    prior = (lambda t, rng: t + 0.2 * rng.normal(size=len(t))) if with_prior else None
    rows, _ = make_rows(family, prior=prior)
    rows = rows.informative(family)  # tests with no success at all carry nothing (and are left out)
    alpha = 0.01
    fit = fit_grounded(rows, family, alphas=(alpha,), cv=3, one_se=False).fit
    fam = get_family(family)
    eta = fit.intercepts[rows.test] + fit.text_effect(rows.x, rows.prior)
    norm = fam.normaliser(rows.w.sum(), rows.w @ rows.n)
    curv = fam.curvature_of(rows.y, rows.n, rows.w)
    ours = float(rows.w @ fam.terms(eta, rows.y, rows.n)[0]) / norm
    ours += curv * (alpha if fit.alpha is not None else 0.0) * float(fit.beta @ fit.beta)
    if fit.alpha is None:  # the prior alone won the CV: the optimum with the correction fixed at 0
        ref = brute_force(ABRows(np.zeros((len(rows), 0)), rows.prior, rows.test, rows.y, rows.n, rows.w),
                          family, 0.0, True)
    else:
        ref = brute_force(rows, family, alpha, with_prior)
    assert ours <= ref + 1e-9 * max(abs(ref), 1.0)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-9)


def test_a_strength_can_be_fixed_instead_of_chosen():
    rows, _ = make_rows("binomial", prior=lambda t, rng: t + 0.2 * rng.normal(size=len(t)))
    rows = rows.informative("binomial")
    for alpha in (1000.0, 0.01):
        path = fit_grounded(rows, "binomial", alphas=(alpha,), cv=3, uncorrected=False)
        assert path.alphas == [alpha] and path.fit.alpha == alpha and path.fit.converged
        ref = brute_force(rows, "binomial", alpha, True)
        fam = get_family("binomial")
        eta = path.fit.intercepts[rows.test] + path.fit.text_effect(rows.x, rows.prior)
        ours = float(rows.w @ fam.terms(eta, rows.y, rows.n)[0]) / fam.normaliser(rows.w.sum(), rows.w @ rows.n)
        ours += fam.curvature_of(rows.y, rows.n, rows.w) * alpha * float(path.fit.beta @ path.fit.beta)
        assert ours == pytest.approx(ref, rel=1e-6, abs=1e-9)
    assert fit_grounded(rows, "binomial", alphas=(), cv=3).fit.alpha is None  # the prior alone, rescaled
    with pytest.raises(ValueError, match="no candidate strength"):
        fit_grounded(rows, "binomial", alphas=(), cv=3, uncorrected=False)


def test_the_tests_shrink_the_prior_but_never_reverse_it():
    # A prior pointing the wrong way: under a strong penalty the free optimum has s < 0, the bounded
    # one s = 0 (the tests' own fit at that strength); both strengths match the brute-force optimum
    # under the bound s >= 0 (with a weak penalty the correction carries the truth, and s is free).
    rows, truth = make_rows("binomial", T=60, prior=lambda t, rng: -t + 0.1 * rng.normal(size=len(t)))
    rows = rows.informative("binomial")
    assert calibration(rows, "binomial").ci_high < 0  # the tests do contradict it
    fam = get_family("binomial")
    for alpha in (1000.0, 0.01):
        fit = fit_grounded(rows, "binomial", alphas=(alpha,), cv=3, uncorrected=False).fit
        assert fit.s >= 0.0 and fit.converged
        if alpha == 1000.0:
            assert fit.s == 0.0
            own = fit_grounded(ABRows(rows.x, None, rows.test, rows.y, rows.n, rows.w), "binomial",
                               alphas=(alpha,), cv=3).fit
            np.testing.assert_allclose(fit.beta, own.beta, rtol=1e-6, atol=1e-12)
        eta = fit.intercepts[rows.test] + fit.text_effect(rows.x, rows.prior)
        ours = float(rows.w @ fam.terms(eta, rows.y, rows.n)[0]) / fam.normaliser(rows.w.sum(), rows.w @ rows.n)
        ours += fam.curvature_of(rows.y, rows.n, rows.w) * alpha * float(fit.beta @ fit.beta)
        assert ours == pytest.approx(brute_force(rows, "binomial", alpha, True), rel=1e-6, abs=1e-9)
    # "no correction" at s = 0 would score every text the same: the strongest correction instead,
    # and the reward ranks like the truth, not like the reversed prior
    path = fit_grounded(rows, "binomial", alphas=(1000.0, 1.0), cv=3)
    assert path.fit.alpha is not None and path.fit.s == 0.0
    reward = path.fit.text_effect(rows.x, rows.prior)
    assert np.corrcoef(reward, truth)[0, 1] > 0.5


def test_profiled_deviance_uses_each_tests_best_intercept():
    rows, truth = make_rows("binomial", T=12)
    fam = get_family("binomial")
    offset = 0.7 * truth
    ours = profiled_deviance(fam, rows, offset)
    total = 0.0
    for t in range(rows.n_tests):
        m = rows.test == t
        best = optimize.minimize_scalar(lambda a, m=m: float(np.sum(fam.unit_deviance(a + offset[m], rows.y[m],
                                                                                       rows.n[m]))),
                                        bounds=(-20, 20), method="bounded", options={"xatol": 1e-10})
        total += best.fun
    assert ours == pytest.approx(total / rows.n.sum(), rel=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_chosen_strength_is_the_strongest_within_one_standard_error_over_held_out_tests(seed):
    """The CV table and the choice against a direct computation: each fold's model fitted on the
    other folds' tests at each strength, each held-out test's deviance at its best intercept, the
    mean over every held-out trial, and the paired difference's standard error with the tests as
    clusters (unequal sizes: the tests' trials differ)."""
    # 64 features for 60 contrasts between texts: the tests do not identify the correction alone,
    # so the rule leans to the prior (see the next tests)
    rows, _ = make_rows("binomial", T=30, p=64, seed=seed, effect=0.05,
                        prior=lambda t, rng: t + 0.4 * rng.normal(size=len(t)))
    assert rows.contrasts() == 60
    rows = ABRows(rows.x, rows.prior, rows.test, rows.y * (1 + rows.test % 3), rows.n * (1 + rows.test % 3), rows.w)
    fam, k, alphas = get_family("binomial"), 3, (1000.0, 10.0, 0.1, 0.001)
    path = fit_grounded(rows, "binomial", cv=k, seed=seed, alphas=alphas)
    grid = path.alphas
    fold = hash_folds(np.arange(rows.n_tests), k, seed)
    dev = np.zeros((rows.n_tests, len(grid)))
    for f in range(k):
        train = rows.subset(np.flatnonzero(fold[rows.test] != f))
        for j, alpha in enumerate(grid):
            fixed = dict(alphas=()) if alpha is None else dict(alphas=(alpha,), uncorrected=False)
            model = fit_grounded(train, "binomial", cv=k, seed=seed, **fixed).fit
            for t in np.flatnonzero(fold == f):
                one = rows.subset(np.flatnonzero(rows.test == t))
                dev[t, j] = profiled_deviance(fam, one, model.text_effect(one.x, one.prior)) * one.n.sum()
    size = np.bincount(rows.test, rows.n)
    assert path.cv_deviance == pytest.approx(dev.sum(0) / size.sum(), rel=1e-6)
    best = int(np.argmin(dev.sum(0)))
    diff = (dev - dev[:, [best]]).sum(0) / size.sum()
    se = np.array([np.sqrt(30 / 29 * np.sum((dev[:, j] - dev[:, best] - size * diff[j]) ** 2)) / size.sum()
                   for j in range(len(grid))])
    assert path.rule == "one-se" and path.chosen == grid[int(np.flatnonzero(diff <= se)[0])]


def test_a_prior_the_tests_find_over_twice_too_large_gets_no_benefit_of_the_doubt():
    # The one-SE rule leans to the prior; where the tests refute its scale (calibration CI below
    # 0.5) the choice is the best held-out deviance.
    for scale, rule in ((4.0, "min"), (1.0, "identified")):
        rows, _ = make_rows("binomial", T=400, seed=3, prior=lambda t, rng, k=scale: k * t + 0.3 * rng.normal(size=len(t)),
                            effect=0.4)
        cal = calibration(rows, "binomial")
        assert (cal.ci_high < 0.5) == (rule == "min")
        path = fit_grounded(rows, "binomial", cv=5, seed=1)
        assert path.rule == rule
        assert path.chosen == path.alphas[int(np.argmin(path.cv_deviance))]
        plain = fit_grounded(rows, "binomial", cv=5, seed=1, one_se=False)
        assert plain.chosen == path.chosen and plain.rule == "min"


@pytest.mark.parametrize("p, rule", [(20, "identified"), (100, "one-se")])
def test_tests_that_identify_the_correction_alone_choose_the_best_held_out_deviance(p, rule):
    # 40 tests of 3 texts hold 80 contrasts between texts: more than 20 features (the tests alone
    # identify the correction: the best held-out deviance), fewer than 100 (the benefit of the doubt).
    rows, _ = make_rows("binomial", T=40, p=p, seed=4, effect=0.1, prior=lambda t, rng: t + 0.5 * rng.normal(size=len(t)))
    assert rows.contrasts() == 80 and calibration(rows, "binomial").ci_high > 0.5
    path = fit_grounded(rows, "binomial", cv=5, seed=2)
    assert path.rule == rule
    best = int(np.argmin(path.cv_deviance))
    if rule == "identified":
        assert path.chosen == path.alphas[best]
    else:  # the strongest within one standard error, here stronger than the best
        assert path.alphas.index(path.chosen) < best
    # rows of one test with the same text are one text: they add no contrast
    twice = rows.subset(np.r_[np.arange(len(rows)), np.arange(0, len(rows), 3)])
    assert len(twice) > len(rows) and twice.contrasts() == 80


def test_calibration_slope_reads_scale_and_direction():
    half, _ = make_rows("binomial", T=400, prior=lambda t, rng: 0.5 * t, effect=0.4)
    cal = calibration(half, "binomial")
    assert cal.ci_low < 2.0 < cal.ci_high and cal.ci_low > 1.0
    assert "smaller than the tests show" in calibration_verdict(cal)
    right, _ = make_rows("binomial", T=400, prior=lambda t, rng: t, effect=0.4)
    cal = calibration(right, "binomial")
    assert cal.ci_low < 1.0 < cal.ci_high and cal.tests == 400
    assert "in direction and scale" in calibration_verdict(cal)
    inflated, _ = make_rows("binomial", T=400, prior=lambda t, rng: 4 * t, effect=0.4)
    cal = calibration(inflated, "binomial")
    assert 0 < cal.ci_low < 0.25 < cal.ci_high < 0.5
    assert "only a small part" in calibration_verdict(cal) and "rank by it" not in calibration_verdict(cal)
    exaggerated, _ = make_rows("binomial", T=400, prior=lambda t, rng: 1.5 * t, effect=0.4)
    cal = calibration(exaggerated, "binomial")
    assert 0.5 < cal.ci_high < 1 and "larger than the tests show" in calibration_verdict(cal)
    wrong, _ = make_rows("binomial", T=400, prior=lambda t, rng: -t, effect=0.4)
    cal = calibration(wrong, "binomial")
    assert cal.ci_high < 0 and "contradict" in calibration_verdict(cal)
    # a CI around 0: below 0.5 the tests say the reward is mostly not real; reaching past it, too few tests
    assert "at most a small part" in calibration_verdict(Calibration(0.1, 0.1, -0.1, 0.3, 50, 150))
    assert "cannot confirm" in calibration_verdict(Calibration(0.2, 0.5, -0.8, 1.2, 50, 150))
    flat, _ = make_rows("binomial", T=50, prior=lambda t, rng: np.zeros(len(t)))
    cal = calibration(flat, "binomial")
    assert cal.slope is None and "cannot check" in calibration_verdict(cal)


def test_pooled_rows_give_the_same_fit():
    rows, _ = make_rows("binomial", T=30, arms=2, prior=lambda t, rng: t)
    # Every row twice (two packages of the same text in a test), half the trials each.
    twice = ABRows(np.repeat(rows.x, 2, 0), np.repeat(rows.prior, 2), np.repeat(rows.test, 2),
                     np.repeat(rows.y, 2) / 2, np.repeat(rows.n, 2) / 2, np.ones(2 * len(rows)))
    arm = np.repeat(np.arange(len(rows)), 2)
    pooled = twice.pooled("binomial", arm)
    assert len(pooled) == len(rows)
    a = fit_grounded(rows, "binomial", cv=3).fit
    b = fit_grounded(pooled, "binomial", cv=3).fit
    assert a.alpha == b.alpha and a.s == pytest.approx(b.s, rel=1e-8)
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-7, atol=1e-10)
    assert twice.pooled("poisson", arm) is twice  # the per-row loss of poisson does not pool


def test_tests_without_successes_neither_stall_nor_change_the_fit():
    rows, _ = make_rows("binomial", T=30, prior=lambda t, rng: t)
    dead = ABRows(rows.x[:6], rows.prior[:6], np.repeat([30, 31], 3), np.zeros(6), rows.n[:6], np.ones(6))
    both = ABRows(np.vstack([rows.x, dead.x]), np.concatenate([rows.prior, dead.prior]),
                    np.concatenate([rows.test, dead.test]), np.concatenate([rows.y, dead.y]),
                    np.concatenate([rows.n, dead.n]), np.ones(len(rows) + 6))
    t0 = time.time()
    got = fit_grounded(both, "binomial", cv=3).fit
    assert time.time() - t0 < 20 and got.converged
    ref = fit_grounded(rows, "binomial", cv=3).fit
    assert got.s == pytest.approx(ref.s, rel=1e-6)


@pytest.mark.parametrize("alive", [0, 1])
def test_fewer_than_two_tests_with_evidence_keep_the_prior_as_it_is(alive):
    """Tests with no success in any arm carry no evidence; with fewer than 2 others there is nothing
    to cross-validate over (it divided by zero with none, and one test set the log's scale to 0)."""
    rows, _ = make_rows("binomial", T=6, prior=lambda t, rng: t)
    y = np.where(rows.test < alive, rows.y, 0.0)
    dead = ABRows(rows.x, rows.prior, rows.test, y, rows.n, rows.w)
    path = fit_grounded(dead, "binomial", cv=3)
    assert path.rule == "none" and path.table() == [] and path.folds == 0
    assert path.fit.s == 1.0 and path.fit.alpha is None and not path.fit.beta.any()
    assert np.array_equal(path.fit.text_effect(rows.x, rows.prior), rows.prior)
    own = fit_grounded(ABRows(rows.x, None, rows.test, y, rows.n, rows.w), "binomial", cv=3)
    assert own.rule == "none" and not own.fit.beta.any() and own.fit.alpha == max(ALPHAS)
    cal = calibration(dead, "binomial")
    assert cal.slope is None and cal.tests == alive


def test_few_tests_stay_with_the_prior_many_tests_follow_the_tests():
    # The prior is the true effect plus a direction the log got wrong.
    for T, trials, expect_prior in ((8, 100.0, True), (1500, 400.0, False)):
        rows, truth = make_rows("binomial", T=T, p=6, seed=T, effect=0.3, trials=trials)
        x = rows.x
        rows.prior = truth - 0.5 * x[:, 3]
        fit = fit_grounded(rows, "binomial", cv=5, seed=0).fit
        grounded = fit.text_effect(x, rows.prior)
        if expect_prior:
            own = fit_grounded(ABRows(x, None, rows.test, rows.y, rows.n, rows.w), "binomial", cv=5).fit
            assert np.corrcoef(grounded, rows.prior)[0, 1] > 0.95
            assert np.corrcoef(grounded, rows.prior)[0, 1] > np.corrcoef(own.text_effect(x, None), rows.prior)[0, 1]
        else:
            assert fit.alpha is not None and fit.alpha < 10
            assert np.corrcoef(grounded, truth)[0, 1] > 0.97
            assert np.corrcoef(grounded, truth)[0, 1] > np.corrcoef(rows.prior, truth)[0, 1] + 0.1


def test_tests_only_reward_learns_the_planted_text_effect_from_within_test_contrasts():
    """fit_tests_only (the learning curve's tests-only reward) is the fixed-effects fit without a
    prior: it ranks texts by the planted effect, ignores the tests' own levels, and pools the
    packages of one text in a test as fit-reward --ab does."""
    from deconfoundlm.rewards.grounding import ABFeatures, fit_tests_only

    rows, truth = make_rows("binomial", T=120, arms=3, p=4, seed=3)
    ab = ABFeatures(rows.x, rows.test, rows.y, rows.n, None, arm=np.arange(len(rows.y)))
    fit = fit_tests_only(ab, family="binomial", cv=5, seed=0)
    assert fit.s is None and fit.alpha is not None
    same = fit_grounded(ABRows(rows.x, None, rows.test, rows.y, rows.n, np.ones(len(rows.y))), "binomial", cv=5).fit
    np.testing.assert_allclose(fit.beta, same.beta, rtol=1e-10)
    x_new = np.random.default_rng(9).normal(size=(200, 4))
    beta = np.linalg.lstsq(rows.x, truth, rcond=None)[0]
    assert np.corrcoef(fit.text_effect(x_new, None), x_new @ beta)[0, 1] > 0.9


def test_tests_only_reward_is_the_tests_only_fit_as_a_reward_estimator():
    """tests_only_reward (the demo's experimental reference) scores texts as fit_tests_only does,
    up to its center (mean 0 over the tests' texts), and records the chosen strength and its CV
    deviance."""
    from deconfoundlm.rewards.grounding import ABFeatures, fit_tests_only, tests_only_reward

    rows, _ = make_rows("binomial", T=80, arms=3, p=4, seed=5)
    ab = ABFeatures(rows.x, rows.test, rows.y, rows.n, None, arm=np.arange(len(rows.y)))
    est = tests_only_reward(ab, family="binomial", cv=4, seed=2)
    fit = fit_tests_only(ab, family="binomial", cv=4, seed=2)
    x_new = np.random.default_rng(1).normal(size=(50, 4))
    own = fit.text_effect(x_new, None)
    np.testing.assert_allclose(est.reward(x_new), own - fit.text_effect(rows.x, None).mean(), atol=1e-12)
    assert abs(est.reward(rows.x).mean()) < 1e-12
    path = fit_grounded(ABRows(rows.x, None, rows.test, rows.y, rows.n, np.ones(len(rows.y))), "binomial", cv=4,
                        seed=2)
    assert est.alpha_ == fit.alpha == path.chosen
    assert est.cv_deviance_ == path.cv_deviance[path.alphas.index(path.chosen)] and np.isfinite(est.cv_deviance_)
    assert est.method == "deconfound" and est.text_cov_ is None
