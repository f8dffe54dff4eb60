"""A log's deconfounded reward grounded on the user's randomized A/B tests.

The log's reward ``r_log`` (fitted under the no-unnamed-confounder assumption) is the starting
point; the tests, where only the text was randomized, correct it (docs/method.md, "With the
user's A/B tests too"; Kallus, Puli and Shalit 2018; Rosenman et al. 2020/2023):

    eta_ti = a_t + s * r_log(x_ti) + delta(x_ti),   delta linear in phi(x), ridge-penalized,

with the strength of the correction chosen by cross-validation over whole tests
(:func:`~deconfoundlm.glm.grounding.fit_grounded`). Few tests: the reward stays at ``s * r_log``;
many: it approaches the tests' own fit. The grounded reward is again a linear text term, so it
is saved and loaded as a ``deconfound`` reward (its ``config.json`` records the grounding) and
every command takes it as it takes any reward.

:func:`calibration_verdict` words the calibration slope (:func:`~deconfoundlm.glm.grounding.calibration`)
for a reader who is not a statistician.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from deconfoundlm.errors import UserError
from deconfoundlm.glm.families import get_family
from deconfoundlm.glm.grounding import (
    EXAGGERATED,
    ABRows,
    Calibration,
    FixedEffectsFit,
    calibration,
    fit_grounded,
    profiled_deviance,
)
from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.options import label
from deconfoundlm.rewards.base import RewardEstimator
from deconfoundlm.rewards.deconfound import DeconfoundReward

GROUNDED_METHODS = ("deconfound",)
# How the strength was chosen (metrics.json grounding.choice), by the solver's rule.
CHOICES = {"one-se": "the strongest within one standard error of the best held-out deviance",
           "min": "the best held-out deviance: these tests find the log's reward over twice too large",
           "identified": "the best held-out deviance: these tests hold more contrasts between texts than the "
                         "text has features, enough to fit the correction without leaning to the log",
           "none": "nothing: fewer than 2 tests whose outcomes tell their texts apart"}


def check_groundable(method: str, head: str | None, finetune: bool) -> None:
    """``--ab`` grounds a linear deconfound reward (the grounded reward is a linear text term)."""
    if method not in GROUNDED_METHODS:
        raise UserError(f"{label('ab')} grounds a deconfounded reward ({label('method')} deconfound), not {label('method')} {method}: "
                        f"{method} does not separate the text's effect from the confounders' that the tests correct")
    if head not in (None, "linear"):
        raise UserError(f"{label('ab')} works with the linear head ({label('head')} linear), not {label('head')} " + str(head))
    if finetune:
        raise UserError(f"{label('ab')} does not combine with {label('finetune')} yet: fit the frozen-encoder reward to ground it")


@dataclass
class ABFeatures:
    """The A/B rows as grounding reads them, by name: the texts' features, each row's test code,
    the outcome, the trials and weights (None: ones) and ``arm``, a text id per row (rows of one
    test with the same text are pooled where the family allows it,
    :meth:`~deconfoundlm.glm.grounding.ABRows.pooled`)."""

    x: np.ndarray
    test: np.ndarray
    y: np.ndarray
    n: np.ndarray | None = None
    w: np.ndarray | None = None
    arm: np.ndarray | None = None


def ground_reward(est: RewardEstimator, X_log: np.ndarray | None, ab: ABFeatures, *, family: str, cv: int,
                  seed: int) -> dict[str, Any]:
    """Ground the fitted linear ``est`` on the A/B rows ``ab`` in place; returns what was chosen
    (strength, scale, CV table) and the calibration of the log's reward on these tests. ``X_log``
    (the log's features, or None when only their mean is known: ``est.feature_mean_``) re-centers
    the reward over the log's texts."""
    rows = _rows(ab, est.reward(np.asarray(ab.x, dtype=np.float64)), family)
    cal = calibration(rows, family)
    path = fit_grounded(rows, family, cv=cv, seed=seed)
    fit = path.fit
    fitted = rows.informative(family)  # the tests whose outcomes carry evidence (the others are left out)
    log = est.glm_.coefs_
    # s * (f_log - center) + ((x - m) / sd) . beta as weights on the log model's standardized features.
    weight = fit.s * log.weight + log.x_scale * fit.raw_weights()
    old_center = est.center_
    glm = AdditiveGLM.from_standardized(est.glm_.family, replace(log, weight=weight), alpha=est.glm_.alpha,
                                        alpha_conf=est.glm_.alpha_conf, seed=est.glm_.seed)
    mean_x = X_log.mean(axis=0, dtype=np.float64) if X_log is not None else est.feature_mean_
    center = float(glm.text_effect(mean_x[None, :])[0])  # the text term is linear: its mean is at the mean x
    # The mean of b + f(x) over the log's texts is kept, so predicted outcomes stay on the log's level.
    glm.coefs_.bias = log.bias + old_center - center
    if not glm.is_finite() or not np.isfinite(center):
        raise UserError("grounding on the A/B tests did not reach finite weights; check the tests' outcomes")
    est.glm_, est.center_ = glm, center
    est.text_cov_ = None  # the log's standard errors do not describe the grounded reward
    return {
        "strength": None if fit.alpha is None else float(fit.alpha),
        "strength_means": "none: the log's reward rescaled" if fit.alpha is None else
        "alpha of the ridge on the correction (smaller: the tests weigh more)",
        "log_scale": fit.s, "cv_folds": path.folds, "cv_table": path.table(),
        "choice": CHOICES[path.rule],
        "tests": int(fitted.n_tests), "rows": len(fitted), "converged": bool(fit.converged),
        "calibration": calibration_dict(cal),
    }


def _rows(ab: ABFeatures, prior: np.ndarray | None, family: str) -> ABRows:
    """The A/B rows as the solver reads them (rows of one test and text pooled where they can be)."""
    ones = np.ones(len(ab.y))
    rows = ABRows(np.asarray(ab.x, dtype=np.float64), prior, np.asarray(ab.test), np.asarray(ab.y, float),
                  ones if ab.n is None else np.asarray(ab.n, float), ones if ab.w is None else np.asarray(ab.w, float))
    return rows.pooled(family, ab.arm) if ab.arm is not None else rows


def fit_tests_only(ab: ABFeatures, *, family: str, cv: int, seed: int) -> FixedEffectsFit:
    """The tests' own reward, without the log: one intercept per test and a ridge-penalized
    linear text term, its strength chosen by cross-validation over whole tests (the model of
    ``fit-reward TESTS --test TEST``, fitted by the grounding solver without a
    prior). ``.text_effect(x, None)`` scores texts."""
    return fit_grounded(_rows(ab, None, family), family, cv=cv, seed=seed).fit


def tests_only_reward(ab: ABFeatures, *, family: str, cv: int, seed: int) -> DeconfoundReward:
    """:func:`fit_tests_only` as a fitted linear ``deconfound`` estimator (the reward of the tests
    alone, one intercept per test profiled out): ``reward(x)`` is its text term centered over the
    tests' texts, ``alpha_`` the chosen strength and ``cv_deviance_`` its held-out deviance over
    whole tests. It has no confounder term and no standard errors."""
    return own_tests_reward(ab, family=family, cv=cv, seed=seed)[0]


def own_tests_reward(ab: ABFeatures, *, family: str, cv: int, seed: int) -> tuple[DeconfoundReward, dict[str, Any]]:
    """:func:`tests_only_reward` and what was chosen: the strength, the CV table over whole tests,
    the tests and rows fitted, and ``null_deviance``, the deviance of each test's own intercept
    without a text term (on the scale of ``cv_deviance_``: mean per row or trial)."""
    rows = _rows(ab, None, family)
    path = fit_grounded(rows, family, cv=cv, seed=seed)
    fit = path.fit
    x = np.asarray(ab.x, dtype=np.float64)
    est = DeconfoundReward(family=family, cv=cv, seed=seed)
    est.family_, est.design_, est.n_features_in_, est.text_cov_ = family, None, x.shape[1], None
    est.glm_ = AdditiveGLM.from_coefficients(family, weight=fit.beta, bias=float(np.mean(fit.intercepts)) if len(fit.intercepts) else 0.0,
                                             x_mean=fit.mean, x_scale=fit.scale, seed=seed)
    est.alpha_ = fit.alpha
    est.cv_deviance_ = path.cv_deviance[path.alphas.index(fit.alpha)] if path.cv_deviance else None
    est.center_ = float(np.mean(est.glm_.text_effect(x)))
    if not est.glm_.is_finite() or not np.isfinite(est.center_):
        raise UserError("the tests' own fit did not reach finite weights; check the tests' outcomes")
    fitted = rows.informative(family)
    record = {"strength": float(fit.alpha), "cv_folds": path.folds, "cv_table": path.table(),
              "choice": CHOICES[path.rule], "tests": int(fitted.n_tests), "rows": len(fitted),
              "converged": bool(fit.converged),
              "null_deviance": profiled_deviance(get_family(family), fitted, np.zeros(len(fitted)))}
    return est, record


def calibration_dict(cal: Calibration, what: str = "the log's reward") -> dict[str, Any]:
    return {**asdict(cal), "verdict": calibration_verdict(cal, what)}


def calibration_verdict(cal: Calibration, what: str = "the log's reward") -> str:
    """One line a non-statistician can read: what the tests say about ``what`` (a reward)."""
    if cal.slope is None:
        return (f"The tests cannot check {what}: it gives the same score to every text compared within a "
                "test.")
    where = f"slope {cal.slope:.2f}, 95% CI [{cal.ci_low:.2f}, {cal.ci_high:.2f}], {cal.tests} tests"
    if cal.ci_high < 0:
        return (f"Warning: your A/B tests contradict {what}: texts it prefers did worse in randomized "
                f"tests ({where}). Something that is not among the confounders drives the log; ground the "
                "reward on the tests (--ab) or do not use it.")
    if cal.ci_high < EXAGGERATED:
        part = "at most a small part" if cal.ci_low <= 0 else "only a small part"
        return (f"Your A/B tests confirm {part} of {what}: its differences between texts are over twice as "
                f"large as the tests show ({where}). Most of what it learned does not hold when texts are "
                "randomized, a sign of a confounder the log does not name: rely on the tests (--ab), not on "
                "the log alone.")
    if cal.ci_low <= 0:
        return (f"Your A/B tests cannot confirm {what} ({where}): too few tests, or it learned "
                "little that holds when texts are randomized.")
    if cal.ci_high < 1:
        return (f"Your A/B tests confirm the direction of {what}, but its differences between texts are "
                f"larger than the tests show ({where}): rank by it, and expect smaller gains than it predicts.")
    if cal.ci_low > 1:
        return (f"Your A/B tests confirm {what}, and its differences between texts are smaller than the "
                f"tests show ({where}).")
    return f"Your A/B tests confirm {what} in direction and scale ({where})."


def in_sample_note(tests: int, of: int) -> str:
    """What the calibration of a log's reward means when ``tests`` of the ``of`` A/B tests hold a
    text that the log holds too (the reward was fitted on those rows' outcomes)."""
    return (f"note: {tests} of the {of} A/B tests hold a text that the log holds too. The log's reward was fitted "
            "on those rows' outcomes, so on these tests the check is partly in-sample and can read the reward "
            "better than it is; `deconfoundlm evaluate` on tests whose texts the log does not hold checks it "
            "out of sample.")


def calibrate(scores: np.ndarray, test: np.ndarray, y: np.ndarray, n: np.ndarray | None, w: np.ndarray | None,
              family: str) -> dict[str, Any]:
    """The calibration of any reward's scores on A/B rows, with its verdict."""
    ones = np.ones(len(y))
    rows = ABRows(np.zeros((len(y), 0)), np.asarray(scores, float), test, np.asarray(y, float),
                    ones if n is None else np.asarray(n, float), ones if w is None else np.asarray(w, float))
    return calibration_dict(calibration(rows, family), "this reward")
