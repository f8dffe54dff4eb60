"""The rewards of the Upworthy checks (the demo and the policy study), fitted one way.

On the training tests of a split: ``naive``, ``confounder-input`` and ``deconfound`` on an
observational log (one randomly chosen package per test, the week as confounder), and the
``experimental`` reference: ``deconfound`` on every reliably randomized package of those tests
with the test id as a categorical confounder (only within-test, randomized variation identifies
the text effect).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from deconfoundlm.logs import upworthy
from deconfoundlm.pipeline import fit_reward

FITS = [  # name, method, log ("obs" or "exp"), confounders, estimator options
    ("naive", "naive", "obs", (), {}),
    ("confounder-input", "confounder-input", "obs", ("test_week:time",), {}),
    ("deconfound", "deconfound", "obs", ("test_week:time",), {}),
    ("experimental", "deconfound", "exp", ("test_id:categorical",), {"min_count": 2}),
]
FINETUNED = ("naive", "deconfound", "experimental")


def fit_rewards(pk: pd.DataFrame, enc, train_tests: np.ndarray, seed: int, cfg: Any,
                names: tuple[str, ...] | None = None) -> tuple[dict, pd.DataFrame]:
    """The rewards of ``FITS`` (or those ``names``) on the training tests of one split, through
    the same fit path as ``deconfoundlm fit-reward``, and the observational log they saw. ``cfg``
    (the demo's or the policy study's settings) gives the ``encoder`` (its name, for fine-tuning),
    the folds ``cv`` (``cv_experimental`` for the experimental reference, default 3) and
    ``finetune`` (also fine-tune the backbone; default None)."""
    encoder, cv = cfg.encoder, cfg.cv
    cv_experimental, finetune = getattr(cfg, "cv_experimental", 3), getattr(cfg, "finetune", None)
    rng = np.random.default_rng(seed)
    train = pk[pk["test_id"].isin(train_tests)]
    # One package per test: a log of what was published, with no within-test contrast.
    obs = train.groupby("test_id", sort=True).sample(n=1, random_state=rng.integers(2**31))
    logs = {"obs": obs, "exp": train[upworthy.reliable(train)]}
    jobs = [(name, method, logs[which], conf, opts, None) for name, method, which, conf, opts in FITS
            if names is None or name in names]
    if finetune is not None:
        jobs += [(f"{name} (fine-tuned)", method, logs[which], conf, {}, finetune)
                 for name, method, which, conf, opts in FITS if name in FINETUNED]
    fits = {}
    for name, method, rows, conf, opts, tune in jobs:
        fits[name] = fit_reward(rows, text="headline", outcome="clicks", trials="impressions", confounders=conf,
                                method=method, family="binomial", encoder=encoder if tune else enc, seed=seed,
                                cv=cv_experimental if name.startswith("experimental") else cv, params=opts,
                                diagnose=False, finetune=tune, se=not name.startswith("experimental"))
    return fits, obs
