"""A linear text reward trained with an invariance penalty (the ODIN and CRM baselines).

Same family loss as the other methods, on standardized features; minibatch Adam from a seeded
generator (deterministic on CPU). scikit-learn contract so ``GridSearchCV`` picks ``alpha`` by
cross-validated deviance on the hashed folds; the invariance weight is given
(``--invariance-weight``) or chosen by the one-standard-error rule of :func:`search_invariant` (a
predictive CV alone would always choose the smallest weight).

Data packing: ``X = [phi | s]`` where ``s`` is the confounder signal (ODIN: a continuous
score; CRM: a bin index); ``y = [outcome, trials, weight, offset]`` as in :mod:`deconfoundlm.glm.model`.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from deconfoundlm.errors import UserError
from deconfoundlm.glm.families import get_family
from deconfoundlm.glm.folds import HashFolds
from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.glm.selection import neg_deviance
from deconfoundlm.glm.targets import unpack
from deconfoundlm.options import store_params


class InvariantTextGLM(BaseEstimator):
    """A linear text reward with an invariance penalty, fitted by minibatch Adam.

    Parameters
    ----------
    family : str
        Outcome family (:mod:`deconfoundlm.glm.families`).
    n_text : int
        Text-feature columns of the packed ``X = [phi | s]``.
    kind : {"odin", "crm"}
        ODIN's correlation + orthogonality terms, or CRM's MMD across bins.
    alpha : float
        Ridge on the standardized weights (times the null curvature).
    lam_corr, lam_orth, lam_mmd : float
        Weights of the invariance terms.
    batch_size, steps, lr : int, int, float
        Adam's minibatch size, steps and learning rate.
    seed : int
        Seed of the initialization and the minibatch order.
    weight : float
        Multiplies every invariance term (the ``--invariance-weight``).

    Attributes
    ----------
    w_q_, w_c_ : Tensor
        The reward head's and (ODIN) the confounder head's weights on standardized features.
    b_ : float
        The intercept.
    """

    def __init__(self, family: str = "gaussian", n_text: int = 0, kind: str = "odin",
                 alpha: float = 1e-3, lam_corr: float = 1.0, lam_orth: float = 1.0,
                 lam_mmd: float = 1.0, batch_size: int = 512, steps: int = 300, lr: float = 1e-2,
                 seed: int = 0, weight: float = 1.0):
        store_params(self, locals())

    def fit(self, X, y) -> InvariantTextGLM:
        import torch

        from deconfoundlm.rewards.penalties import (
            mmd_penalty,
            odin_correlation_loss,
            orthogonality_loss,
        )

        X, y = np.asarray(X, float), np.asarray(y, float)
        phi, s = torch.from_numpy(X[:, : self.n_text]).float(), torch.from_numpy(X[:, self.n_text]).float()
        self.x_mean_, self.x_scale_ = phi.mean(0), phi.std(0).clamp_min(1e-8)
        z = (phi - self.x_mean_) / self.x_scale_
        t = unpack(y)
        fam = get_family(self.family)
        unit = fam.unit_of(t.outcome)  # solved in this unit, the heads multiplied back below
        t = t._replace(outcome=t.outcome / unit)
        yy, n, w = (torch.from_numpy(np.ascontiguousarray(c)).float() for c in t[:3])
        gen = torch.Generator().manual_seed(self.seed)
        d = self.n_text
        w_q = torch.zeros(d, requires_grad=True)
        w_c = (0.01 * torch.randn(d, generator=gen)).requires_grad_(self.kind == "odin")
        b = torch.tensor(fam.null_eta_of(t.outcome, t.trials, t.weight), requires_grad=True)
        params = [w_q, b] + ([w_c] if self.kind == "odin" else [])
        opt = torch.optim.Adam(params, lr=self.lr)
        curv = fam.curvature_of(t.outcome, t.trials, t.weight)
        bs = min(self.batch_size, len(z))
        perm = torch.randperm(len(z), generator=gen)
        pos = 0
        for _ in range(self.steps):
            if pos + bs > len(z):
                perm, pos = torch.randperm(len(z), generator=gen), 0
            idx = perm[pos : pos + bs]
            pos += bs
            r_q = z[idx] @ w_q
            if self.kind == "odin":
                r_c = z[idx] @ w_c
                eta = b + r_q + r_c
                extra = self.weight * self.lam_corr * odin_correlation_loss(r_q, r_c, s[idx]) + self.weight * \
                    self.lam_orth * orthogonality_loss(w_q, w_c)
                ridge = (w_q**2).sum() + (w_c**2).sum()
            else:
                eta = b + r_q
                extra = self.weight * self.lam_mmd * mmd_penalty(r_q, s[idx])
                ridge = (w_q**2).sum()
            loss = fam.loss(eta, yy[idx], n[idx], w[idx]) + curv * self.alpha * ridge + extra
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.w_q_, self.w_c_, self.b_ = w_q.detach() * unit, w_c.detach() * unit, float(b.detach()) * unit
        return self

    def predict(self, X) -> np.ndarray:
        """The fitted eta (ODIN: r_Q + r_C, both heads fit the outcome)."""
        import torch

        z = (torch.from_numpy(np.asarray(X, float)[:, : self.n_text]).float() - self.x_mean_) / self.x_scale_
        eta = self.b_ + z @ self.w_q_ + (z @ self.w_c_ if self.kind == "odin" else 0.0)
        return eta.double().numpy()

    def deviance(self, X, y) -> float:
        """Mean deviance on packed ``(X, y)`` (offset included); lower is better."""
        y = np.asarray(y, float)
        t = unpack(y)
        return get_family(self.family).deviance(self.predict(X) + t.offset, t.outcome, t.trials, t.weight)

    def to_reward_glm(self) -> AdditiveGLM:
        """r_Q as a linear AdditiveGLM, so saving, loading and scoring are shared."""
        return AdditiveGLM.from_coefficients(self.family, weight=self.w_q_.double().numpy(), bias=self.b_,
                                             x_mean=self.x_mean_.double().numpy(),
                                             x_scale=self.x_scale_.double().numpy(), seed=self.seed)


INVARIANCE_WEIGHTS = (0.01, 0.1, 1.0, 10.0, 100.0)


MAX_INVARIANCE_WEIGHT = 1e6  # far beyond the searched grid (0.01..100): larger only overflows


def check_invariance_weight(weight: float, flag: str = "--invariance-weight") -> float:
    """An invariance weight is a finite number above 0 and at most MAX_INVARIANCE_WEIGHT."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) \
            or not 0 < weight <= MAX_INVARIANCE_WEIGHT:
        raise UserError(f"{flag} {weight!r}: must be above 0 and at most {MAX_INVARIANCE_WEIGHT:g} (the default "
                        "search covers 0.01..100)")
    return float(weight)


def search_invariant(model: InvariantTextGLM, X, y, alphas, weight: float | None, cv: int, seed: int):
    """Choose the ridge ``alpha`` and, when ``weight`` is None, the invariance weight, with
    observational data only; then refit on all rows. Returns (fitted model, alpha, weight, CV
    deviance, per-weight table).

    Criterion for the weight (documented; no experimental data): K-fold CV deviance for each
    (alpha, weight) of the grid; for each weight its best alpha; the chosen weight is the largest
    one whose CV deviance is within one standard error (over folds) of the best: as much
    invariance as costs no detectable predictive fit ("one-standard-error rule"). A predictive CV
    alone would always pick the smallest weight.
    """
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    if weight is not None:
        check_invariance_weight(weight)
    weights = INVARIANCE_WEIGHTS if weight is None else (float(weight),)
    search = GridSearchCV(model, {"alpha": list(alphas), "weight": list(weights)},
                          cv=HashFolds(cv, seed), scoring=neg_deviance, refit=False, error_score="raise")
    search.fit(X, y)
    res = search.cv_results_
    table = []
    for w in weights:
        idx = [i for i, p in enumerate(res["params"]) if p["weight"] == w]
        best = max(idx, key=lambda i: res["mean_test_score"][i])
        table.append({"weight": w, "alpha": res["params"][best]["alpha"], "cv_deviance": -res["mean_test_score"][best],
                      "se": res["std_test_score"][best] / np.sqrt(cv)})
    table = [r for r in table if np.isfinite(r["cv_deviance"])]
    if not table:
        raise UserError("the invariance fit did not reach a finite deviance at any penalty; give a smaller "
                        "--invariance-weight")
    top = min(table, key=lambda r: r["cv_deviance"])
    ok = [r for r in table if r["cv_deviance"] <= top["cv_deviance"] + top["se"]]
    chosen = max(ok, key=lambda r: r["weight"])
    fitted = clone(model).set_params(alpha=chosen["alpha"], weight=chosen["weight"]).fit(X, y)
    return fitted, chosen["alpha"], chosen["weight"], chosen["cv_deviance"], table
