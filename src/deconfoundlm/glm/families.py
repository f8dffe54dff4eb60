"""Outcome families: the one place their math lives.

Each family is a :class:`Family` object (in the spirit of glum's and statsmodels' families): its
link, per-row loss with its first two derivatives, unit deviance, null fit and curvature, the
loss's normaliser and the "auto" rule. Every solver uses these objects: the torch heads
(:mod:`deconfoundlm.glm.model`), the sufficient-statistics penalty path (:mod:`deconfoundlm.glm.path`),
the sandwich (:mod:`deconfoundlm.glm.sandwich`), fine-tuning, diagnostics and sensitivity.

- ``gaussian``: identity link, outcome units;
- ``bernoulli`` / ``binomial``: logit link; binomial reads successes out of ``trials``;
- ``poisson``: log link for counts (upvotes, pageviews, replies). The ``trials`` column is read as
  the exposure E (impressions, days online...): mean = E exp(eta), so the reward is a log rate
  ratio per unit of exposure. Without it E = 1.

Losses are per-observation averages (per trial for binomial) so that penalty strengths are
comparable across data sizes. ``eta`` is on the link scale. Null fits and curvatures are written
on sums (``sw`` = sum w, ``swy`` = sum w y, ``swy2`` = sum w y^2, ``swn`` = sum w n) so that a log
in memory and one summarised block by block use the same formula.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from deconfoundlm.errors import DataWarning, UserError
from deconfoundlm.options import label

if TYPE_CHECKING:  # torch is imported by the heads that train with it, not by the numpy solvers
    import torch

MAX_ETA = 50.0  # exp(50) ~ 5e21: far beyond any count; keeps exponentials and line searches finite


def logistic(eta: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-eta)) written with tanh: never overflows."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(eta, dtype=float)))


class Family:
    """An outcome family. Subclasses set the class attributes and the per-row formulas."""

    name: ClassVar[str] = ""
    link: ClassVar[str] = ""  # the canonical link: eta = link(E[y] per trial or per unit of exposure)
    per_trial: ClassVar[bool] = False  # the loss is a mean per trial (sum w n), else per row (sum w)
    takes_trials: ClassVar[bool] = False  # a trials / exposure column is allowed
    counts: ClassVar[bool] = False  # the outcome is a count (non-integers get a warning)
    closed_form: ClassVar[bool] = False  # the loss is quadratic in eta: one linear solve, no Newton steps

    def __repr__(self) -> str:
        return f"Family({self.name!r})"

    # -- per row ---------------------------------------------------------------------------
    def terms(self, eta: np.ndarray, y: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-row loss (up to constants), its derivative and its second derivative in eta,
        unweighted. For these canonical links the derivative is mean - y and the second
        derivative is the variance function (the GLM's working weight)."""
        raise NotImplementedError

    def loss(self, eta: torch.Tensor, y: torch.Tensor, n: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The weighted mean loss of :meth:`terms` in torch (differentiable)."""
        raise NotImplementedError

    def unit_deviance(self, eta: np.ndarray, y: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Each row's deviance at linear predictor ``eta`` (arrays broadcast)."""
        raise NotImplementedError

    def mean(self, eta: np.ndarray, n: np.ndarray) -> np.ndarray:
        """E[y] at ``eta`` (``n``: trials or exposure): ``n`` times the inverse link of ``eta``."""
        raise NotImplementedError

    def link_of(self, mu: np.ndarray) -> np.ndarray:
        """The link function of a mean per trial (per unit of exposure): eta = link(mu)."""
        mu = np.asarray(mu, dtype=float)
        with np.errstate(divide="ignore"):
            return {"identity": mu, "logit": np.log(mu) - np.log1p(-mu), "log": np.log(mu)}[self.link]

    def empirical_link(self, y: np.ndarray, n: np.ndarray) -> np.ndarray:
        """link(y) per row, smoothed where it would be infinite (deconfounded labels)."""
        raise NotImplementedError

    # -- from sums -------------------------------------------------------------------------
    def normaliser(self, sw: float, swn: float) -> float:
        """The loss's denominator: sum w n per trial, else sum w."""
        return float(swn if self.per_trial else sw)

    def null_eta(self, sw: float, swy: float, swn: float) -> float:
        """The intercept-only fit on the link scale."""
        raise NotImplementedError

    def curvature(self, sw: float, swy: float, swy2: float, swn: float) -> float:
        """The null model's curvature per observation (Fisher information of the intercept): it
        scales the penalties so that one alpha grid fits every family and outcome scale."""
        raise NotImplementedError

    def null_weight(self, null_eta: float, curv: float) -> float:
        """The curvature per unit of the Gram weight (:meth:`gram_weight`) at the null model."""
        return curv

    def gram_weight(self, w: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Row weights of the Gram matrix whose multiple is the null model's Hessian."""
        return w * n

    def at_boundary(self, swy: np.ndarray, swn: np.ndarray) -> np.ndarray:
        """Per group (sums of w y and w n over its rows): whether the group's own intercept would
        run off to infinity (no successes, or only successes): such a group says nothing about
        differences within it."""
        return np.zeros(np.shape(swy), dtype=bool)

    # -- from arrays -----------------------------------------------------------------------
    @staticmethod
    def sums(y: np.ndarray, n: np.ndarray, w: np.ndarray) -> tuple[float, float, float, float]:
        """(sum w, sum w y, sum w y^2, sum w n)."""
        y, n, w = (np.asarray(a, dtype=float) for a in (y, n, w))
        return float(w.sum()), float(w @ y), float(w @ (y * y)), float(w @ n)

    def deviance(self, eta: np.ndarray, y: np.ndarray, n: np.ndarray, w: np.ndarray) -> float:
        """Weighted mean unit deviance (per trial for binomial); lower is better."""
        sw, _, _, swn = self.sums(y, n, w)
        return float(np.sum(w * self.unit_deviance(eta, y, n)) / self.normaliser(sw, swn))

    def null_eta_of(self, y: np.ndarray, n: np.ndarray, w: np.ndarray) -> float:
        sw, swy, _, swn = self.sums(y, n, w)
        return self.null_eta(sw, swy, swn)

    def curvature_of(self, y: np.ndarray, n: np.ndarray, w: np.ndarray) -> float:
        return self.curvature(*self.sums(y, n, w))

    def unit_of(self, y: np.ndarray) -> float:
        """The unit an iterative solver measures the outcome in (it divides the outcome and any
        offset by it, and multiplies the fitted link-scale terms back): 1 where the outcome has no
        unit to choose (counts, successes)."""
        return 1.0

    # -- checks ----------------------------------------------------------------------------
    def check(self, outcome: np.ndarray, trials: np.ndarray | None, column: str, trials_column: str) -> None:
        """UserError naming the column when the outcome does not fit the family."""
        if trials is not None and not self.takes_trials:
            raise UserError(f"{label('trials')} is used with {label('family')} binomial (trials) or poisson (exposure), not {self.name}")

    def warn_non_integer(self, outcome: np.ndarray, trials: np.ndarray | None, column: str,
                         trials_column: str) -> None:
        """Counts are integers: say how many are not (they are used as given)."""


class Gaussian(Family):
    name = "gaussian"
    link = "identity"
    closed_form = True

    def terms(self, eta, y, n):
        r = eta - y
        return 0.5 * r * r, r, np.ones_like(r)

    def loss(self, eta, y, n, w):
        return 0.5 * (w * (y - eta) ** 2).sum() / w.sum()

    def unit_deviance(self, eta, y, n):
        return (y - eta) ** 2

    def mean(self, eta, n):
        return np.asarray(eta, dtype=float)

    def empirical_link(self, y, n):
        return np.asarray(y, dtype=float)

    def null_eta(self, sw, swy, swn):
        return float(swy / sw)

    def unit_of(self, y):
        # The outcome's standard deviation: step sizes, tolerances and learning rates then mean the
        # same in seconds as in milliseconds.
        sd = float(np.std(np.asarray(y, dtype=float))) if len(y) > 1 else 0.0
        return sd if np.isfinite(sd) and sd > 0 else 1.0

    def curvature(self, sw, swy, swy2, swn):
        # The loss's own curvature (d2/deta2 of (y - eta)^2 / 2): 1 whatever the outcome's scale, so
        # the ridge solution scales with the outcome and the same alpha is chosen in seconds or in
        # milliseconds (a curvature of var(y) made the penalty grow with the square of the unit).
        return 1.0

    def gram_weight(self, w, n):
        return w


class Binomial(Family):
    name = "binomial"
    link = "logit"
    per_trial = True
    takes_trials = True
    counts = True

    def terms(self, eta, y, n):
        p = logistic(eta)
        return n * np.logaddexp(0.0, eta) - y * eta, n * p - y, n * p * (1 - p)

    def loss(self, eta, y, n, w):  # softplus keeps large |eta| finite
        import torch.nn.functional as F

        return (w * (n * F.softplus(eta) - y * eta)).sum() / (w * n).sum()

    def unit_deviance(self, eta, y, n):
        mu = np.clip(logistic(eta), 1e-12, 1 - 1e-12)
        s, f = y, n - y
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = np.where(s > 0, s * np.log(s / (n * mu)), 0.0)
            t2 = np.where(f > 0, f * np.log(f / (n * (1 - mu))), 0.0)
        return 2 * (t1 + t2)

    def mean(self, eta, n):
        return n * logistic(eta)

    def empirical_link(self, y, n):
        y = np.asarray(y, dtype=float)
        return np.log((y + 0.5) / (n - y + 0.5))

    def null_eta(self, sw, swy, swn):
        p = float(np.clip(swy / swn, 1e-6, 1 - 1e-6))
        return float(np.log(p / (1 - p)))

    def curvature(self, sw, swy, swy2, swn):
        p = swy / swn
        return float(np.clip(p * (1 - p), 1e-6, None))

    def at_boundary(self, swy, swn):
        return (np.asarray(swy) <= 0) | (np.asarray(swy) >= np.asarray(swn))

    def check(self, outcome, trials, column, trials_column):
        if trials is None:
            raise UserError(f"{label('family')} binomial needs {label('trials')} (the number of trials per row)")
        if (outcome < 0).any():
            raise UserError(f"outcome column {column!r} has negative success counts")
        over = outcome > np.asarray(trials, dtype=float)
        if over.any():
            i = int(np.argmax(over))
            raise UserError(f"outcome column {column!r} exceeds trials column {trials_column!r} in "
                            f"{int(over.sum())} row(s) (e.g. {outcome[i]:g} > {float(trials[i]):g})")

    def warn_non_integer(self, outcome, trials, column, trials_column):
        _warn_non_integer(outcome, column, "outcome (successes)", self.name)
        _warn_non_integer(trials, trials_column, "trials", self.name)


class Bernoulli(Binomial):
    """Binomial with one trial per row (a 0/1 outcome)."""

    name = "bernoulli"
    takes_trials = False
    counts = False

    def check(self, outcome, trials, column, trials_column):
        Family.check(self, outcome, trials, column, trials_column)
        if not np.isin(outcome, (0.0, 1.0)).all():
            bad = outcome[~np.isin(outcome, (0.0, 1.0))][0]
            raise UserError(f"{label('family')} bernoulli needs a 0/1 outcome; column {column!r} has {bad:g}")

    def warn_non_integer(self, outcome, trials, column, trials_column):
        pass


class Poisson(Family):
    name = "poisson"
    link = "log"
    takes_trials = True
    counts = True

    def terms(self, eta, y, n):
        mu = n * np.exp(np.minimum(eta, MAX_ETA))
        return mu - y * eta, mu - y, mu

    def loss(self, eta, y, n, w):  # mean n exp(eta); n is the exposure
        import torch

        return (w * (n * torch.exp(eta.clamp(max=MAX_ETA)) - y * eta)).sum() / w.sum()

    def unit_deviance(self, eta, y, n):
        """In log space (``y log(y / mu)`` as ``y (log y - log n - eta)``): a mean that underflows
        to zero gives a large finite deviance, not infinity."""
        eta = np.minimum(eta, MAX_ETA)
        mu = n * np.exp(eta)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 2 * (np.where(y > 0, y * (np.log(y) - np.log(n) - eta), 0.0) - (y - mu))

    def mean(self, eta, n):
        return n * np.exp(np.minimum(eta, MAX_ETA))

    def empirical_link(self, y, n):  # log rate per unit of exposure, smoothed so zero counts stay finite
        return np.log((np.asarray(y, dtype=float) + 0.5) / n)

    def null_eta(self, sw, swy, swn):
        return float(np.log(max(swy / swn, 1e-12)))

    def curvature(self, sw, swy, swy2, swn):
        return float(np.clip(swy / sw, 1e-6, None))

    def null_weight(self, null_eta, curv):
        return float(np.exp(null_eta))

    def at_boundary(self, swy, swn):
        return np.asarray(swy) <= 0

    def check(self, outcome, trials, column, trials_column):
        if (outcome < 0).any():
            raise UserError(f"{label('family')} poisson needs a non-negative count; column {column!r} has "
                            f"{outcome[outcome < 0][0]:g}")

    def warn_non_integer(self, outcome, trials, column, trials_column):
        _warn_non_integer(outcome, column, "outcome (count)", self.name)


_FAMILIES: dict[str, Family] = {f.name: f for f in (Gaussian(), Bernoulli(), Binomial(), Poisson())}
FAMILIES = tuple(_FAMILIES)  # ("gaussian", "bernoulli", "binomial", "poisson")


def get_family(name: str | Family) -> Family:
    """The family object of a name (a Family is returned as is)."""
    if isinstance(name, Family):
        return name
    try:
        return _FAMILIES[name]
    except (KeyError, TypeError):
        raise UserError(f"{label('family')} {name!r}: use auto or one of " + ", ".join(FAMILIES)) from None


def auto_family(has_trials: bool, binary: bool, count: bool) -> str:
    """The "auto" rule: binomial with trials; bernoulli for a 0/1 outcome; poisson for another
    non-negative integer outcome (a count); else gaussian."""
    if has_trials:
        return "binomial"
    if binary:
        return "bernoulli"
    return "poisson" if count else "gaussian"


def is_binary(outcome: np.ndarray) -> bool:
    return bool(np.isin(outcome, (0.0, 1.0)).all())


def is_count(outcome: np.ndarray) -> bool:
    return bool(len(outcome)) and bool(np.all(outcome >= 0)) and bool(np.all(outcome == np.round(outcome)))


def resolve_family(family: str, outcome: np.ndarray, trials: np.ndarray | None, column: str = "outcome",
                   trials_column: str = "trials", warn: bool = False) -> str:
    """``family`` (or the :func:`auto_family` choice for ``auto``), after checking the outcome
    fits it; with ``warn``, non-integer counts get a warning."""
    outcome = np.asarray(outcome, dtype=float)
    if family == "auto":
        family = auto_family(trials is not None, is_binary(outcome), is_count(outcome))
    fam = get_family(family)
    fam.check(outcome, trials, column, trials_column)
    if warn:
        fam.warn_non_integer(outcome, trials, column, trials_column)
    return fam.name


def check_log_family(log, family: str) -> str:
    """Resolve ``--family`` on a validated log (an ``ObservationalLog``: its errors name the log's
    columns) and warn about non-integer counts. Returns the family's name."""
    roles = log.roles
    return resolve_family(family, log.outcome, log.trials, column=roles.outcome,
                          trials_column=roles.trials or "trials", warn=True)


def _warn_non_integer(values: np.ndarray | None, column: str | None, role: str, family: str) -> None:
    if values is None:
        return
    frac = values != np.round(values)
    if frac.any():
        warnings.warn(f"{role} column {column!r} has {int(frac.sum())} non-integer value(s) (e.g. "
                      f"{values[frac][0]:g}); {family} counts are usually integers", DataWarning, stacklevel=4)
