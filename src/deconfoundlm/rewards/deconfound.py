"""DeconfoundLM (Loghmani 2025; docs/method.md): the confounders' additive effect is
estimated jointly with the text's and dropped from the reward.

Model (assumptions: additivity in eta, no unobserved confounding given c, overlap):

    y ~ Family(mean = link^-1(eta)),   eta = b + f(phi(x)) + g(psi(c))

Estimators
----------
``joint`` (default)
    Fit b, f and g together by penalized likelihood; the text penalty is chosen by K-fold
    cross-validated deviance on the observational log.
``partialling-out``
    Robinson / double ML with K-fold cross-fitting on the hashed folds: residualize phi(x) on psi(c) (ridge),
    predict the outcome from psi(c) alone on the link scale (the offset), then fit f on the
    residualized features with that offset. Exact for gaussian; for logit families it uses the
    first-order approximation logit E[y|c] ~ E[eta|c]. Linear head only.

Reward: r(x) = f(phi(x)) centered over the training texts (log-odds or outcome units).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from deconfoundlm.errors import UserError
from deconfoundlm.glm.crossfit import confounder_offset, residualize
from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.glm.sandwich import text_covariance
from deconfoundlm.glm.selection import fit_cv
from deconfoundlm.glm.targets import OFFSET
from deconfoundlm.options import label, store_params
from deconfoundlm.rewards.base import RewardEstimator

ESTIMATORS = ("joint", "partialling-out")


class DeconfoundReward(RewardEstimator):
    """DeconfoundLM: eta = b + f(phi(x)) + g(psi(c)); the reward is f (see the module).

    Parameters
    ----------
    family : {"auto", "gaussian", "bernoulli", "binomial", "poisson"}
        Outcome family; "auto" applies :func:`~deconfoundlm.glm.families.auto_family` at fit.
    estimator : {"joint", "partialling-out"}
        Joint penalized likelihood, or Robinson / double-ML partialling-out (linear head only).
    head : {"linear", "mlp"}
        The text term f.
    cv : int
        Folds of the cross-validation that chooses the penalty (hashed folds, 2 or more).
    seed : int
        Seed of the folds and of any stochastic optimizer.
    alphas : tuple of float, optional
        Penalty grid of the text head (default: six values from 1e-4 to 10 for the linear head; 1e-3, 1e-2 and 0.1 for the MLP head).
    min_count : int
        Categorical levels seen fewer times are pooled into one.

    Attributes
    ----------
    See :class:`~deconfoundlm.rewards.base.RewardEstimator`.
    """

    method: ClassVar[str] = "deconfound"
    needs_confounders: ClassVar[bool] = True

    def __init__(self, family: str = "auto", estimator: str = "joint", head: str = "linear",
                 cv: int = 5, seed: int = 0, alphas: tuple[float, ...] | None = None,
                 min_count: int = 5):
        store_params(self, locals())

    def _fit(self, X, psi, targets, confounders=None, groups=None) -> None:
        if self.estimator not in ESTIMATORS:
            raise UserError(f"{label('estimator')} {self.estimator!r}: use one of " + ", ".join(ESTIMATORS))
        if self.estimator == "joint":
            # Step 2: eta = b + f(phi) + g(psi), all fitted together.
            glm = AdditiveGLM(self.family_, n_text=X.shape[1], head=self.head, seed=self.seed)
            self.glm_, self.alpha_, self.cv_deviance_ = fit_cv(glm, X, psi, targets, self.alphas, self.cv, self.seed)
        else:
            if self.head != "linear":
                raise UserError(f"{label('estimator')} partialling-out supports the linear head only")
            # Nuisance 1: E[phi | c], cross-fitted.
            x_res = residualize(X, psi, self.cv, self.seed)
            # Nuisance 2: the outcome's link-scale prediction from c alone, cross-fitted.
            targets = targets.copy()
            targets[:, OFFSET] = confounder_offset(self.family_, psi, targets, self.cv, self.seed)
            text_glm, self.alpha_, self.cv_deviance_ = fit_cv(
                AdditiveGLM(self.family_, n_text=X.shape[1], seed=self.seed), x_res, None, targets,
                self.alphas, self.cv, self.seed)
            # Standard errors of the final stage, nuisances taken as given (Neyman-orthogonal).
            self._po_stage = (text_glm, x_res, targets, groups)
            self.glm_ = self._with_confounder_term(text_glm, X, psi, targets)

    def _covariance(self, X, psi, targets, groups):
        if self.estimator == "partialling-out":
            text_glm, x_res, t, g = self._po_stage
            del self._po_stage
            return text_covariance(text_glm, x_res, None, t, g)
        return super()._covariance(X, psi, targets, groups)


    def _with_confounder_term(self, text_glm: AdditiveGLM, X, psi, targets) -> AdditiveGLM:
        """Attach g^(c) to the partialled-out text model: refit b + g(c) with f^(x) held fixed
        as an offset, so that deconfounded labels (step 4) are defined for both estimators."""
        t = targets.copy()
        t[:, OFFSET] = text_glm.text_effect(X)
        conf_only = AdditiveGLM(self.family_, n_text=0, seed=self.seed).fit_arrays(np.zeros((len(t), 0)), psi, t)
        return AdditiveGLM.combine(text_glm, conf_only)
