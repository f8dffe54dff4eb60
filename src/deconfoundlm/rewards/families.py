"""Outcome families: gaussian (identity link), bernoulli and binomial (logit link), poisson
(log link, for counts such as upvotes, pageviews, replies, sales).

Losses are per-observation averages (per trial for binomial) so that penalty strengths are
comparable across data sizes. ``eta`` is on the link scale: outcome units for gaussian,
log-odds for bernoulli / binomial, log rate for poisson.

For poisson, the ``trials`` column is read as the exposure E (impressions, days online...):
mean = E * exp(eta), so the reward is a log rate ratio per unit of exposure. Without it E = 1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deconfoundlm.errors import UserError

FAMILIES = ("gaussian", "bernoulli", "binomial", "poisson")
MAX_ETA = 50.0  # exp(50) ~ 5e21: far beyond any count; keeps L-BFGS line searches finite


def _is_count(outcome: np.ndarray) -> bool:
    return bool(len(outcome)) and bool(np.all(outcome >= 0)) and bool(np.all(outcome == np.round(outcome)))


def resolve_family(family: str, outcome: np.ndarray, trials: np.ndarray | None, column: str = "outcome",
                   trials_column: str = "trials") -> str:
    """``auto``: binomial with trials; bernoulli for a 0/1 outcome; poisson for another
    non-negative integer outcome (a count); else gaussian. Checks the outcome fits the family."""
    outcome = np.asarray(outcome, dtype=float)
    if family == "auto":
        if trials is not None:
            family = "binomial"
        elif np.isin(outcome, (0.0, 1.0)).all():
            family = "bernoulli"
        else:
            family = "poisson" if _is_count(outcome) else "gaussian"
    if family not in FAMILIES:
        raise UserError(f"--family {family!r}: use auto or one of " + ", ".join(FAMILIES))
    if family == "binomial":
        if trials is None:
            raise UserError("--family binomial needs --trials (the number of trials per row)")
        if (outcome < 0).any():
            raise UserError(f"outcome column {column!r} has negative success counts")
        over = outcome > np.asarray(trials, dtype=float)
        if over.any():
            i = int(np.argmax(over))
            raise UserError(f"outcome column {column!r} exceeds trials column {trials_column!r} in "
                            f"{int(over.sum())} row(s) (e.g. {outcome[i]:g} > {float(trials[i]):g})")
    if family == "bernoulli" and not np.isin(outcome, (0.0, 1.0)).all():
        bad = outcome[~np.isin(outcome, (0.0, 1.0))][0]
        raise UserError(f"--family bernoulli needs a 0/1 outcome; column {column!r} has {bad:g}")
    if family == "poisson" and (outcome < 0).any():
        raise UserError(f"--family poisson needs a non-negative count; column {column!r} has "
                        f"{outcome[outcome < 0][0]:g}")
    if family not in ("binomial", "poisson") and trials is not None:
        raise UserError(f"--trials is used with --family binomial (trials) or poisson (exposure), not {family}")
    return family


def curvature(family: str, y: np.ndarray, n: np.ndarray, w: np.ndarray) -> float:
    """The null model's curvature per observation (Fisher information of the intercept): it
    scales the penalties so that one alpha grid fits every family and outcome scale."""
    if family == "gaussian":
        return float(np.average((y - np.average(y, weights=w)) ** 2, weights=w)) or 1.0
    if family == "poisson":
        return float(np.clip(np.sum(w * y) / np.sum(w), 1e-6, None))
    p = np.sum(w * y) / np.sum(w * n)
    return float(np.clip(p * (1 - p), 1e-6, None))


def loss(family: str, eta: torch.Tensor, y: torch.Tensor, n: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (up to constants), weighted mean per observation / trial."""
    if family == "gaussian":
        return 0.5 * (w * (y - eta) ** 2).sum() / w.sum()
    if family == "poisson":  # mean n * exp(eta); n is the exposure
        return (w * (n * torch.exp(eta.clamp(max=MAX_ETA)) - y * eta)).sum() / w.sum()
    # bernoulli is binomial with n = 1; softplus keeps large |eta| finite.
    return (w * (n * F.softplus(eta) - y * eta)).sum() / (w * n).sum()


def unit_deviance(family: str, eta: np.ndarray, y: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Each row's deviance at linear predictor ``eta`` (arrays broadcast). Poisson in log space
    (``y log(y / mu)`` as ``y (log y - log n - eta)``), so a mean that underflows to zero gives a
    large finite deviance, not infinity."""
    if family == "gaussian":
        return (y - eta) ** 2
    if family == "poisson":
        eta = np.minimum(eta, MAX_ETA)
        mu = n * np.exp(eta)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2 * (np.where(y > 0, y * (np.log(y) - np.log(n) - eta), 0.0) - (y - mu))
    mu = np.clip(0.5 * (1.0 + np.tanh(0.5 * eta)), 1e-12, 1 - 1e-12)  # a logistic that never overflows
    s, f = y, n - y
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(s > 0, s * np.log(s / (n * mu)), 0.0)
        t2 = np.where(f > 0, f * np.log(f / (n * (1 - mu))), 0.0)
    return 2 * (t1 + t2)


def deviance(family: str, eta: np.ndarray, y: np.ndarray, n: np.ndarray, w: np.ndarray) -> float:
    """Weighted mean unit deviance (per trial for binomial); lower is better."""
    per_row = np.sum(w * unit_deviance(family, eta, y, n))
    return float(per_row / (np.sum(w * n) if family in ("binomial", "bernoulli") else np.sum(w)))


def null_eta(family: str, y: np.ndarray, n: np.ndarray, w: np.ndarray) -> float:
    """The intercept-only fit on the link scale."""
    if family == "gaussian":
        return float(np.sum(w * y) / np.sum(w))
    if family == "poisson":
        return float(np.log(max(np.sum(w * y) / np.sum(w * n), 1e-12)))
    p = np.clip(np.sum(w * y) / np.sum(w * n), 1e-6, 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def empirical_link(family: str, y: np.ndarray, n: np.ndarray) -> np.ndarray:
    """link(y) for deconfounded labels; logits are smoothed by +0.5 so 0/1 stay finite."""
    if family == "gaussian":
        return np.asarray(y, dtype=float)
    if family == "poisson":  # log rate per unit of exposure, smoothed so zero counts stay finite
        return np.log((np.asarray(y, dtype=float) + 0.5) / n)
    return np.log((y + 0.5) / (n - y + 0.5))
