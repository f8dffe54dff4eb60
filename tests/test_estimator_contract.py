"""The reward estimators and the additive GLM follow scikit-learn's estimator contract where it
applies: the constructor stores every parameter unchanged and does nothing else, ``get_params`` /
``set_params`` / ``clone`` round-trip, ``fit`` returns the estimator and leaves its parameters as
they were, the same parameters and data give the same reward, and no estimator has a ``score``
(in scikit-learn that is a goodness of fit; the reward of texts is ``reward``). scikit-learn's
own checks are run where they apply; the fit checks that feed plain ``fit(X, y)`` run on the
method that needs no confounder."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.utils import estimator_checks as ec

from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.rewards import METHODS, make_estimator
from deconfoundlm.rewards.invariance import InvariantTextGLM

ESTIMATORS = [*METHODS.values(), AdditiveGLM, InvariantTextGLM]
PARAMETER_CHECKS = [ec.check_no_attributes_set_in_init, ec.check_parameters_default_constructible,
                    ec.check_get_params_invariance, ec.check_set_params, ec.check_estimator_cloneable,
                    ec.check_estimator_repr, ec.check_do_not_raise_errors_in_init_or_set_params]


@pytest.mark.parametrize("check", PARAMETER_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_scikit_learn_parameter_checks(cls, check):
    check(cls.__name__, cls())


@pytest.mark.parametrize("check", [ec.check_estimators_fit_returns_self, ec.check_dont_overwrite_parameters,
                                   ec.check_estimators_overwrite_params, ec.check_n_features_in],
                         ids=lambda c: c.__name__)
def test_scikit_learn_fit_checks_on_the_naive_reward(check):
    check("NaiveReward", METHODS["naive"](cv=2, alphas=(1.0,)))


def _log(n=120, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=n)
    X = rng.normal(size=(n, 4)) + 0.5 * c[:, None]
    y = X[:, 0] - X[:, 1] + c + rng.normal(scale=0.5, size=n)
    return X, y, pd.DataFrame({"c": c})


@pytest.mark.parametrize("method", list(METHODS))
def test_fit_returns_self_keeps_the_parameters_and_repeats_exactly(method):
    X, y, conf = _log()
    quick = {"odin": {"invariance_weight": 1.0, "steps": 20}, "crm": {"invariance_weight": 1.0, "steps": 20},
             "confounder-input": {"max_iter": 20}}.get(method, {})  # one fit, a few steps: the contract, not quality
    est = make_estimator(method, family="gaussian", cv=2, seed=3, alphas=(1.0,), **quick)
    before = est.get_params()
    fit = dict(confounders=conf, specs=[ConfounderSpec("c", "numeric")])
    assert est.fit(X, y, **fit) is est
    assert est.get_params() == before
    again = clone(est).fit(X, y, **fit)
    np.testing.assert_array_equal(est.reward(X), again.reward(X))
    assert est.reward(X).shape == (len(X),) and abs(est.reward(X).mean()) < 1e-9  # centered on the training texts


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_no_estimator_calls_its_reward_score(cls):
    assert not hasattr(cls, "score")


@pytest.mark.parametrize("cls", list(METHODS.values()), ids=lambda c: c.__name__)
def test_capabilities_are_class_attributes(cls):
    """What a method is and needs is known without fitting (the registry and the CLI read them)."""
    assert cls.method in METHODS and METHODS[cls.method] is cls
    assert isinstance(cls.needs_confounders, bool)
    assert cls.needs_confounders == (cls.method != "naive")
