"""Outcome families: gaussian (identity link), bernoulli and binomial (logit link).

Losses are per-observation averages (per trial for binomial) so that penalty strengths are
comparable across data sizes. ``eta`` is on the link scale: outcome units for gaussian,
log-odds for bernoulli / binomial.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deconfoundlm.errors import UserError

FAMILIES = ("gaussian", "bernoulli", "binomial")


def resolve_family(family: str, outcome: np.ndarray, trials: np.ndarray | None, column: str = "outcome") -> str:
    """``auto``: binomial with trials, bernoulli for a 0/1 outcome, else gaussian."""
    if family == "auto":
        if trials is not None:
            return "binomial"
        return "bernoulli" if np.isin(outcome, (0.0, 1.0)).all() else "gaussian"
    if family not in FAMILIES:
        raise UserError(f"--family {family!r}: use auto or one of " + ", ".join(FAMILIES))
    if family == "binomial" and trials is None:
        raise UserError("--family binomial needs --trials (the number of trials per row)")
    if family == "bernoulli" and not np.isin(outcome, (0.0, 1.0)).all():
        bad = outcome[~np.isin(outcome, (0.0, 1.0))][0]
        raise UserError(f"--family bernoulli needs a 0/1 outcome; column {column!r} has {bad:g}")
    if family != "binomial" and trials is not None:
        raise UserError(f"--trials is only used with --family binomial, not {family}")
    return family


def loss(family: str, eta: torch.Tensor, y: torch.Tensor, n: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (up to constants), weighted mean per observation / trial."""
    if family == "gaussian":
        return 0.5 * (w * (y - eta) ** 2).sum() / w.sum()
    # bernoulli is binomial with n = 1; softplus keeps large |eta| finite.
    return (w * (n * F.softplus(eta) - y * eta)).sum() / (w * n).sum()


def deviance(family: str, eta: np.ndarray, y: np.ndarray, n: np.ndarray, w: np.ndarray) -> float:
    """Weighted mean unit deviance (per trial for binomial); lower is better."""
    if family == "gaussian":
        return float(np.sum(w * (y - eta) ** 2) / np.sum(w))
    mu = np.clip(1.0 / (1.0 + np.exp(-eta)), 1e-12, 1 - 1e-12)
    s, f = y, n - y
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(s > 0, s * np.log(s / (n * mu)), 0.0)
        t2 = np.where(f > 0, f * np.log(f / (n * (1 - mu))), 0.0)
    return float(2 * np.sum(w * (t1 + t2)) / np.sum(w * n))


def null_eta(family: str, y: np.ndarray, n: np.ndarray, w: np.ndarray) -> float:
    """The intercept-only fit on the link scale."""
    if family == "gaussian":
        return float(np.sum(w * y) / np.sum(w))
    p = np.clip(np.sum(w * y) / np.sum(w * n), 1e-6, 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def empirical_link(family: str, y: np.ndarray, n: np.ndarray) -> np.ndarray:
    """link(y) for deconfounded labels; logits are smoothed by +0.5 so 0/1 stay finite."""
    if family == "gaussian":
        return np.asarray(y, dtype=float)
    return np.log((y + 0.5) / (n - y + 0.5))
