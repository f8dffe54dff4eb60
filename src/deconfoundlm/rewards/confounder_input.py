"""confounder-input: one joint model of y on (phi(x), psi(c)) with interactions allowed.

An MLP on the concatenation by default. The reward averages the joint model over the
empirical confounder distribution: r(x) = mean_j f(phi(x), psi(c_j)), using a seeded sample
of at most ``n_reference`` training rows' confounders (stored with the model).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.glm.selection import fit_cv
from deconfoundlm.options import store_params
from deconfoundlm.rewards.base import RewardEstimator


class ConfounderInputReward(RewardEstimator):
    """The confounder-input baseline: one network on [phi(x), psi(c)]; the reward is its output
    averaged over reference confounder rows.

    Parameters
    ----------
    family : {"auto", "gaussian", "bernoulli", "binomial", "poisson"}
        Outcome family; "auto" applies :func:`~deconfoundlm.glm.families.auto_family` at fit.
    head : {"mlp"}
        The joint network.
    cv : int
        Folds of the cross-validation that chooses the penalty (hashed folds, 2 or more).
    seed : int
        Seed of the folds and of any stochastic optimizer.
    alphas : tuple of float, optional
        Penalty grid of the text head (default: six values from 1e-4 to 10 for the linear head; 1e-3, 1e-2 and 0.1 for the MLP head).
    n_reference : int
        Confounder rows the text effect is averaged over.
    max_iter, hidden : int
        Adam steps and hidden width of the network.

    Attributes
    ----------
    See :class:`~deconfoundlm.rewards.base.RewardEstimator`.
    """

    method: ClassVar[str] = "confounder-input"
    needs_confounders: ClassVar[bool] = True

    def __init__(self, family: str = "auto", head: str = "mlp", cv: int = 5, seed: int = 0,
                 alphas: tuple[float, ...] | None = None, n_reference: int = 128,
                 max_iter: int = 200, hidden: int = 32):
        store_params(self, locals())

    def _fit(self, X, psi, targets, confounders=None, groups=None) -> None:
        glm = AdditiveGLM(self.family_, n_text=X.shape[1], head=self.head, interactions=True,
                          hidden=self.hidden, max_iter=self.max_iter, seed=self.seed)
        self.glm_, self.alpha_, self.cv_deviance_ = fit_cv(glm, X, psi, targets, self.alphas, self.cv, self.seed)
        rng = np.random.default_rng(self.seed)
        rows = rng.choice(len(X), size=min(self.n_reference, len(X)), replace=False)
        self.reference_confounders_ = psi[np.sort(rows)].toarray()

    def _raw_score(self, X) -> np.ndarray:
        # Average the joint model over the empirical confounder distribution.
        return self.glm_.text_effect_averaged(X, self.reference_confounders_)

    def confounder_effect(self, confounders) -> np.ndarray:
        # With interactions there is no separable g(c): deconfounded labels are not defined.
        raise NotImplementedError("confounder-input has no additive confounder term")

    def _d_conf(self) -> int:
        return int(self.reference_confounders_.shape[1])  # the joint MLP's confounder inputs

    def extra_tensors(self):
        return {**super().extra_tensors(), "reference_confounders": self.reference_confounders_.astype(np.float32)}

    def extra_tensor_shapes(self, d_conf: int):
        return {"reference_confounders": (None, d_conf)}

    def restore_extra_tensors(self, tensors) -> None:
        super().restore_extra_tensors(tensors)
        self.reference_confounders_ = tensors["reference_confounders"].astype(np.float64)
