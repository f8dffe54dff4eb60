"""crm (Wang et al. 2025, arXiv 2501.09620): a causal reward model with an MMD penalty.

A linear reward r(x) on the text embedding fits the outcome (same family and loss as every
method) plus ``lam_mmd`` times the sum over pairs of confounder bins of the squared MMD
(Gaussian kernel, median-heuristic bandwidth) between the rewards in the bins, per minibatch.
Bins: the levels of a single categorical confounder (rare levels pooled); quantile bins
(``bins``, default 4) of a single numeric/time confounder, or of the fitted confounder score
when there are several.

The MMD term is multiplied by ``invariance_weight`` (``--invariance-weight``), chosen by default
with the ridge ``alpha`` by the one-standard-error rule (see odin.py).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from deconfoundlm.options import store_params
from deconfoundlm.rewards.base import RewardEstimator
from deconfoundlm.rewards.invariance import InvariantTextGLM, search_invariant
from deconfoundlm.rewards.odin import ALPHAS, confounder_signal


class CrmReward(RewardEstimator):
    """The CRM baseline (Wang et al. 2025): a linear reward whose distribution is made equal
    across confounder bins by an MMD penalty.

    Parameters
    ----------
    family, cv, seed, alphas : as for :class:`~deconfoundlm.rewards.odin.OdinReward`
        The outcome family, the folds and seed of the cross-validation, the penalty grid.
    lam_mmd : float
        Weight of the MMD term (times ``invariance_weight``).
    bins : int
        Quantile bins of a continuous confounder signal (a single categorical uses its levels).
    steps, batch_size : int
        Adam steps and minibatch size.
    invariance_weight : float, optional
        As for :class:`~deconfoundlm.rewards.odin.OdinReward`.

    Attributes
    ----------
    See :class:`~deconfoundlm.rewards.base.RewardEstimator`.
    """

    method: ClassVar[str] = "crm"
    needs_confounders: ClassVar[bool] = True

    def __init__(self, family: str = "auto", cv: int = 5, seed: int = 0,
                 alphas: tuple[float, ...] | None = None, lam_mmd: float = 1.0, bins: int = 4,
                 steps: int = 300, batch_size: int = 512, invariance_weight: float | None = None):
        store_params(self, locals())

    def _fit(self, X, psi, targets, confounders=None, groups=None) -> None:
        specs = self.design_.specs
        if len(specs) == 1 and specs[0].type == "categorical":
            bins = np.asarray(psi.argmax(axis=1)).ravel().astype(float)
        else:
            s = confounder_signal(self, psi, targets, confounders)
            edges = np.unique(np.quantile(s, np.linspace(0, 1, self.bins + 1)[1:-1]))
            bins = np.searchsorted(edges, s, side="right").astype(float)
        model = InvariantTextGLM(self.family_, n_text=X.shape[1], kind="crm", lam_mmd=self.lam_mmd,
                                 steps=self.steps, batch_size=self.batch_size, seed=self.seed)
        fitted, self.alpha_, self.invariance_weight_, self.cv_deviance_, self.weight_table_ = search_invariant(
            model, np.column_stack([X, bins]), targets, self.alphas or ALPHAS, self.invariance_weight, self.cv,
            self.seed)
        self.glm_ = fitted.to_reward_glm()
