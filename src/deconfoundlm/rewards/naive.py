"""naive: fit the outcome on the text features only, eta = b + f(phi(x)).

It estimates E[y | x], which includes E[g(c) | x]: the confounders' effect leaks into the
reward through whatever wording was common when outcomes were high for other reasons.
"""

from __future__ import annotations

from typing import ClassVar

from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.glm.selection import fit_cv
from deconfoundlm.options import store_params
from deconfoundlm.rewards.base import RewardEstimator


class NaiveReward(RewardEstimator):
    """The naive baseline: eta = b + f(phi(x)), confounders ignored.

    Parameters
    ----------
    family : {"auto", "gaussian", "bernoulli", "binomial", "poisson"}
        Outcome family; "auto" applies :func:`~deconfoundlm.glm.families.auto_family` at fit.
    head : {"linear", "mlp"}
        The text term f.
    cv : int
        Folds of the cross-validation that chooses the penalty (hashed folds, 2 or more).
    seed : int
        Seed of the folds and of any stochastic optimizer.
    alphas : tuple of float, optional
        Penalty grid of the text head (default: six values from 1e-4 to 10 for the linear head; 1e-3, 1e-2 and 0.1 for the MLP head).

    Attributes
    ----------
    See :class:`~deconfoundlm.rewards.base.RewardEstimator`.
    """

    method: ClassVar[str] = "naive"

    def __init__(self, family: str = "auto", head: str = "linear", cv: int = 5, seed: int = 0,
                 alphas: tuple[float, ...] | None = None):
        store_params(self, locals())

    def _fit(self, X, psi, targets, confounders=None, groups=None) -> None:
        # Confounders (if any were given) are ignored on purpose: that is this baseline.
        glm = AdditiveGLM(self.family_, n_text=X.shape[1], head=self.head, seed=self.seed)
        self.glm_, self.alpha_, self.cv_deviance_ = fit_cv(glm, X, None, targets, self.alphas, self.cv, self.seed)
