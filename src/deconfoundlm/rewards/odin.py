"""odin (Chen et al. 2024, arXiv 2402.07319), adapted from response length to a general
confounder as docs/method.md describes.

Two linear heads on the text embedding, r_Q and r_C; r_Q + r_C fits the outcome (same family
and loss as every method). Added losses, per minibatch: ``lam_corr * ((1 - corr(r_C, c)) +
|corr(r_Q, c)|)`` and ``lam_orth * |w_Q . w_C|`` on normalized weights. ``c`` is the single
numeric/time confounder itself, else (several confounders, or a categorical one) the fitted
confounder score g^(c) of a confounder-only model. ``score`` returns r_Q.

The invariance terms are multiplied by ``invariance_weight`` (``--invariance-weight``); by
default it is chosen from (0.01, 0.1, 1, 10, 100) by the observational one-standard-error rule
of :func:`deconfoundlm.rewards.invariance.search_invariant` (the largest weight whose CV
deviance is within one SE of the best), jointly with the ridge ``alpha``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.options import store_params
from deconfoundlm.rewards.base import RewardEstimator
from deconfoundlm.rewards.invariance import InvariantTextGLM, search_invariant

ALPHAS = (1e-4, 1e-2, 1.0)


class OdinReward(RewardEstimator):
    """The ODIN baseline (Chen et al. 2024): two linear heads, r_Q (the reward) decorrelated from
    the confounder signal and r_C correlated with it, with orthogonal weights.

    Parameters
    ----------
    family : {"auto", "gaussian", "bernoulli", "binomial", "poisson"}
        Outcome family; "auto" applies :func:`~deconfoundlm.glm.families.auto_family` at fit.
    cv : int
        Folds of the cross-validation that chooses the penalty (hashed folds, 2 or more).
    seed : int
        Seed of the folds and of any stochastic optimizer.
    alphas : tuple of float, optional
        Penalty grid of the text head (default: 1e-4, 1e-2 and 1, for either head).
    lam_corr, lam_orth : float
        Weights of the correlation and orthogonality terms (times ``invariance_weight``).
    steps, batch_size : int
        Adam steps and minibatch size.
    invariance_weight : float, optional
        Multiplies every invariance term; None: chosen by the one-standard-error rule of
        :func:`~deconfoundlm.rewards.invariance.search_invariant`.

    Attributes
    ----------
    See :class:`~deconfoundlm.rewards.base.RewardEstimator`, and
    invariance_weight_ : float
        The weight used; ``weight_table_`` holds the CV deviance of each weight tried.
    """

    method: ClassVar[str] = "odin"
    needs_confounders: ClassVar[bool] = True

    def __init__(self, family: str = "auto", cv: int = 5, seed: int = 0,
                 alphas: tuple[float, ...] | None = None, lam_corr: float = 1.0,
                 lam_orth: float = 1.0, steps: int = 300, batch_size: int = 512,
                 invariance_weight: float | None = None):
        store_params(self, locals())

    def _fit(self, X, psi, targets, confounders=None, groups=None) -> None:
        signal = confounder_signal(self, psi, targets, confounders)
        model = InvariantTextGLM(self.family_, n_text=X.shape[1], kind="odin", lam_corr=self.lam_corr,
                                 lam_orth=self.lam_orth, steps=self.steps, batch_size=self.batch_size,
                                 seed=self.seed)
        fitted, self.alpha_, self.invariance_weight_, self.cv_deviance_, self.weight_table_ = search_invariant(
            model, np.column_stack([X, signal]), targets, self.alphas or ALPHAS, self.invariance_weight, self.cv,
            self.seed)
        self.glm_ = fitted.to_reward_glm()


def confounder_signal(est: RewardEstimator, psi, targets, confounders) -> np.ndarray:
    """One continuous confounder value per row: the confounder itself when it is a single
    numeric/time column, else the fitted confounder score g^(c) (link scale)."""
    specs = est.design_.specs
    if len(specs) == 1 and specs[0].type in ("numeric", "time"):
        from deconfoundlm.logs.values import time_values

        col = confounders[specs[0].column]
        v = time_values(col) if specs[0].type == "time" else col.to_numpy(float)
        return (v - v.mean()) / (v.std() or 1.0)
    return AdditiveGLM(est.family_, n_text=0, seed=est.seed).fit(psi, targets).predict(psi)
