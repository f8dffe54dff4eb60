"""The rewards of the Upworthy checks (the demo and the policy study), fitted one way.

On the training tests of a split: ``naive``, ``confounder-input`` and ``deconfound`` on an
observational log (one randomly chosen package per test, the week as confounder), and the
``experimental`` reference: the tests' own reward on every reliably randomized package of those
tests, one intercept per test (only within-test, randomized variation identifies the text
effect). That is the model of ``fit-reward PACKAGES --test test_id``, fitted by the solver of
``fit-reward --ab`` (the intercepts profiled out, the strength chosen by
cross-validation over whole tests, :func:`~deconfoundlm.rewards.grounding.tests_only_reward`),
so it is also the "all tests" point of the demo's learning curve, fitted once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deconfoundlm.logs import upworthy
from deconfoundlm.logs.roles import ColumnRoles, ConfounderSpec
from deconfoundlm.pipeline import Reward, fit_reward
from deconfoundlm.rewards.grounding import ABFeatures, tests_only_reward

FITS = [  # name, method, log ("obs" or "exp"), confounders, estimator options
    ("naive", "naive", "obs", (), {}),
    ("confounder-input", "confounder-input", "obs", ("test_week:time",), {}),
    ("deconfound", "deconfound", "obs", ("test_week:time",), {}),
    # (fitted as the tests' own reward, experimental_reward; fine-tuned, with the test id as a
    # categorical confounder whose levels of 2 packages keep their own intercept)
    ("experimental", "deconfound", "exp", ("test_id:categorical",), {"min_count": 2}),
]
FINETUNED = ("naive", "deconfound", "experimental")


def fit_rewards(pk: pd.DataFrame, enc, train_tests: np.ndarray, seed: int, cfg: Any,
                names: tuple[str, ...] | None = None) -> tuple[dict, pd.DataFrame]:
    """The rewards of ``FITS`` (or those ``names``) on the training tests of one split, through
    the same fit paths as ``deconfoundlm fit-reward`` (the experimental reference: see the
    module), and the observational log they saw. ``cfg`` (the demo's or the policy study's
    settings) gives the ``encoder`` (its name, for fine-tuning), the folds ``cv`` and ``finetune``
    (also fine-tune the backbone; default None; the fine-tuned experimental reward goes through
    ``fit-reward`` with the test id as a categorical confounder)."""
    encoder, cv, finetune = cfg.encoder, cfg.cv, getattr(cfg, "finetune", None)
    rng = np.random.default_rng(seed)
    train = pk[pk["test_id"].isin(train_tests)]
    # One package per test: a log of what was published, with no within-test contrast.
    obs = train.groupby("test_id", sort=True).sample(n=1, random_state=rng.integers(2**31))
    logs = {"obs": obs, "exp": train[upworthy.reliable(train)]}
    jobs = [(name, method, logs[which], conf, opts, None) for name, method, which, conf, opts in FITS
            if names is None or name in names]
    if finetune is not None:
        jobs += [(f"{name} (fine-tuned)", method, logs[which], conf, opts, finetune)
                 for name, method, which, conf, opts in FITS if name in FINETUNED]
    fits = {}
    for name, method, rows, conf, opts, tune in jobs:
        if name == "experimental":
            fits[name] = experimental_reward(rows, enc, cv, seed)
            continue
        fits[name] = fit_reward(rows, text="headline", outcome="clicks", trials="impressions", confounders=conf,
                                method=method, family="binomial", encoder=encoder if tune else enc, seed=seed,
                                cv=cv, params=opts, diagnose=False, finetune=tune,
                                se=not name.startswith("experimental"))
    return fits, obs


def package_features(rows: pd.DataFrame, enc) -> ABFeatures:
    """Upworthy packages as randomized A/B rows: headline features, test codes, clicks out of
    impressions and a headline id per row (the packages of one headline in a test are pooled)."""
    texts = rows["headline"].astype(str).tolist()
    return ABFeatures(enc.encode(texts).astype(np.float64), np.unique(rows["test_id"].to_numpy(), return_inverse=True)[1],
                      rows["clicks"].to_numpy(float), rows["impressions"].to_numpy(float),
                      arm=np.unique(np.asarray(texts), return_inverse=True)[1])


def experimental_reward(rows: pd.DataFrame, enc, cv: int, seed: int) -> Reward:
    """The experimental reference on the packages ``rows`` (see the module), scoring texts with
    the encoder ``enc`` like any reward."""
    ab = package_features(rows, enc)
    roles = ColumnRoles(text="headline", outcome="clicks", trials="impressions",
                        confounders=(ConfounderSpec("test_id", "categorical"),))
    return Reward(tests_only_reward(ab, family="binomial", cv=cv, seed=seed), enc, roles)
