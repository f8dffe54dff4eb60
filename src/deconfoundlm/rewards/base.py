"""The reward-estimator contract shared by every method (scikit-learn style).

``fit(X, y, confounders=..., specs=..., trials=..., sample_weight=...)`` learns from text
features ``X`` (phi(x), one row per log row); ``score(X)`` returns the reward r(x), centered
to mean 0 over the training texts, on the link scale (log-odds for bernoulli / binomial,
outcome units for gaussian, log rate for poisson); ``save(dir)`` persists it as JSON +
safetensors and :func:`deconfoundlm.rewards.artifact.load_estimator` reads it back (validated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from safetensors.numpy import save_file
from sklearn.base import BaseEstimator

from deconfoundlm.checks import check_folds
from deconfoundlm.errors import UserError
from deconfoundlm.features.confounders import ConfounderDesign
from deconfoundlm.glm.families import get_family, resolve_family
from deconfoundlm.glm.model import AdditiveGLM, pack_features
from deconfoundlm.glm.path import Blocks, fit_path, warn_unconverged
from deconfoundlm.glm.sandwich import (
    covariance_from_sums,
    reward_se,
    sandwich_sums,
    text_covariance,
)
from deconfoundlm.glm.selection import DEFAULT_ALPHAS
from deconfoundlm.glm.targets import pack_targets
from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.options import label
from deconfoundlm.outputs import write_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "deconfoundlm-reward"


SOLVER_MATRICES = 6  # p x p float64 matrices alive at once in a Newton step (Gram, Hessian, factor, covariance)


def check_solver_memory(n_features: int) -> None:
    """The solver keeps a few p x p matrices: refuse, before any work, features too wide for this
    machine's free memory (a MemoryError or the kernel's OOM killer would come much later)."""
    need = SOLVER_MATRICES * 8 * (n_features + 64) ** 2
    try:
        import psutil

        free = psutil.virtual_memory().available
    except ImportError:  # pragma: no cover - psutil comes with dask.distributed
        return
    if need > free:
        raise UserError(f"the text features have {n_features:,} dimensions: the solver needs about "
                        f"{need / 2**30:.1f} GiB for its {n_features:,} x {n_features:,} matrices, more than the "
                        f"{free / 2**30:.1f} GiB free; use a smaller encoder (e.g. minilm or hashing-1024)")


class RewardEstimator(BaseEstimator):
    """Base class of the reward estimators (scikit-learn style; see the module).

    Subclasses set ``method`` (the registry name) and implement ``_fit`` (and ``_raw_score`` when
    the reward is not the fitted GLM's text term). Their parameters and fitted attributes are
    documented on each subclass; ``reward(X)`` is the reward r(x) and ``reward_se(X)`` its
    standard error (there is no ``score``: in scikit-learn that would be a goodness of fit; the
    penalty searches use :func:`~deconfoundlm.glm.selection.neg_deviance`).

    Attributes
    ----------
    family_ : str
        The family used.
    glm_ : AdditiveGLM
        The fitted model (its text term is the reward).
    alpha_ : float
        The chosen text penalty.
    cv_deviance_ : float
        Mean held-out deviance at ``alpha_``.
    center_ : float
        Mean raw text effect over the training texts (the reward is centered there).
    design_ : ConfounderDesign or None
        The fitted confounder design psi(c).
    text_cov_ : ndarray of shape (n_features, n_features) or None
        Sandwich covariance of the text coefficients (linear heads), see
        :mod:`deconfoundlm.glm.sandwich`.
    """

    method: ClassVar[str] = ""
    needs_confounders: ClassVar[bool] = False

    # -- public API -------------------------------------------------------------------------
    def fit(self, X, y, *, confounders: pd.DataFrame | None = None,
            specs: tuple[ConfounderSpec, ...] | list[ConfounderSpec] = (),
            trials=None, sample_weight=None, groups=None, se: bool = True) -> RewardEstimator:
        """Fit on text features ``X``. ``groups`` (optional, one label per row) makes the
        reward's standard errors cluster-robust (rows of one cluster are correlated); ``se=False``
        skips them (faster, when only the reward is needed)."""
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or len(X) != len(y):
            raise UserError(f"X must be 2-D with one row per outcome; got {X.shape} and {y.shape}")
        if len(y) < 10:
            raise UserError(f"need at least 10 rows to fit a reward model, got {len(y)}")
        check_folds(getattr(self, "cv", 2), len(y), label("cv"))
        for name, arr in (("outcome", y), ("trials", trials), ("weights", sample_weight)):
            if arr is not None and not np.isfinite(np.asarray(arr, dtype=np.float64)).all():
                raise UserError(f"{name} has missing or infinite values; drop or fix those rows")
        if not np.isfinite(X).all():
            raise UserError("the text features have non-finite values")
        check_solver_memory(X.shape[1])
        specs = tuple(specs)
        if self.needs_confounders and not specs:
            raise UserError(f"method {self.method!r} needs at least one {label('confounder')} COL:TYPE")
        self.family_ = resolve_family(self.family, y, trials)
        self.design_ = ConfounderDesign(specs, **self.design_options()).fit(confounders) if specs else None
        psi = self.design_.transform(confounders) if specs else None
        targets = pack_targets(y, trials, sample_weight)
        self.n_features_in_ = X.shape[1]
        self.text_cov_ = None
        self._fit(X, psi, targets, confounders, groups)  # raw confounders: for odin, crm
        self.center_ = float(np.mean(self._raw_score(X)))
        if not (self.glm_.is_finite() and np.isfinite(self.center_)):
            raise UserError(f"the {self.method} fit did not reach finite weights; check the outcome, "
                            "trials and weights for extreme values")
        if se and self.supports_se():
            self.text_cov_ = self._covariance(X, psi, targets, groups)
        if hasattr(self, "_po_stage"):
            del self._po_stage
        if self.text_cov_ is not None:
            self.feature_mean_ = X.mean(axis=0, dtype=np.float64)  # no float64 copy of X
            self.se_method_ = "sandwich" + (" (clustered)" if groups is not None else "")
        return self

    def supports_blocks(self) -> bool:
        """Whether :meth:`fit_blocks` can fit this estimator (linear naive, joint deconfound)."""
        return (self.method in ("naive", "deconfound") and getattr(self, "head", "linear") == "linear"
                and getattr(self, "estimator", "joint") == "joint")

    def fit_blocks(self, blocks: Blocks, *, family: str, design: ConfounderDesign | None,
                   se: bool = True) -> RewardEstimator:
        """Fit from row blocks whose folds are already assigned (e.g. blocks held by a Dask
        cluster): the same penalty path, model, center and standard errors as :meth:`fit` on the
        same rows."""
        if not self.supports_blocks():
            raise UserError(f"method {self.method!r} with these options cannot be fitted from blocks")
        check_solver_memory(blocks.n_text)
        self.family_ = family
        self.design_ = design if self.method == "deconfound" else None
        self.n_features_in_ = blocks.n_text
        alphas = self.alphas if self.alphas is not None else DEFAULT_ALPHAS["linear"]
        fit = fit_path(blocks, family, alphas, self.cv, use_conf=self.method == "deconfound")
        warn_unconverged(fit)
        self.glm_ = AdditiveGLM.from_path(fit, family, seed=self.seed)
        self.alpha_, self.cv_deviance_ = fit.alpha, fit.cv_deviance
        sums = sandwich_sums(blocks, self.glm_)
        self.center_ = sums["text_mean"]
        if not (self.glm_.is_finite() and np.isfinite(self.center_)):
            raise UserError(f"the {self.method} fit did not reach finite weights; check the outcome, "
                            "trials and weights for extreme values")
        self.text_cov_ = covariance_from_sums(self.glm_, sums, fit.train.curv) if se else None
        if self.text_cov_ is not None:
            self.feature_mean_ = fit.train.mean
            self.se_method_ = "sandwich"
        return self

    def _covariance(self, X, psi, targets, groups) -> np.ndarray:
        return text_covariance(self.glm_, X, psi if self.glm_.d_conf() else None, targets, groups)

    def supports_se(self) -> bool:
        """Standard errors exist for linear heads of the likelihood methods (naive, deconfound)."""
        return self.method in ("naive", "deconfound") and getattr(self, "head", "linear") == "linear"

    def reward_se(self, X) -> np.ndarray:
        """The standard error of r(x) per row (see :mod:`deconfoundlm.glm.sandwich`)."""
        if getattr(self, "text_cov_", None) is None:
            raise UserError(f"this {self.method} reward has no standard errors (they exist for the linear "
                            "heads of naive and deconfound, fitted with this version)")
        return reward_se(self.text_cov_, self.feature_mean_, np.asarray(X))

    def reward(self, X) -> np.ndarray:
        """The reward r(x): the text's effect on the link scale, mean 0 over training texts."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise UserError(f"expected features with {self.n_features_in_} columns, got {X.shape}")
        return self._raw_score(X) - self.center_

    def confounder_effect(self, confounders: pd.DataFrame) -> np.ndarray:
        """g^(c): the fitted confounder contribution on the link scale (0 for naive)."""
        if self.design_ is None or not hasattr(self, "glm_"):
            return np.zeros(len(confounders))
        return self.glm_.confounder_effect(self.design_.transform(confounders))

    def predict_outcome(self, X, setting: pd.DataFrame) -> np.ndarray:
        """The predicted outcome of each text under one confounder setting (a one-row frame,
        see :meth:`ConfounderDesign.setting`): mean^-1(b + f(x) + g(c)), e.g. the click-through
        rate (binomial: per trial; poisson: per unit of exposure; gaussian: the outcome)."""
        if self.design_ is None or not self.glm_.d_conf():
            raise UserError(f"{label('at')}: this {self.method} reward has no confounder term g(c) to set; a predicted "
                            "outcome needs a deconfound or confounder-input reward")
        X = np.asarray(X)
        psi = sp.csr_matrix(np.repeat(self.design_.transform(setting).toarray(), len(X), axis=0))
        eta = self.glm_.predict(pack_features(X, psi))
        return get_family(self.family_).mean(eta, np.ones(len(X)))

    def confounder_curves(self) -> list[dict[str, Any]]:
        """g(c) per confounder term (see :meth:`ConfounderDesign.effect_curves`); empty when the
        reward has no additive confounder term (naive, odin, crm)."""
        if self.design_ is None or not hasattr(self, "glm_") or not self.glm_.d_conf():
            return []
        return self.design_.effect_curves(self.glm_.conf_coef())

    def deconfounded_labels(self, y, confounders: pd.DataFrame, trials=None) -> np.ndarray:
        """docs/method.md, step 4: link(y) - g^(c), the outcome with the confounder part removed."""
        n = np.ones(len(y)) if trials is None else np.asarray(trials, float)
        return get_family(self.family_).empirical_link(np.asarray(y, float), n) - self.confounder_effect(confounders)

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path, extra_config: dict[str, Any] | None = None) -> None:
        """Write config.json and model.safetensors into ``directory`` (which must exist)."""
        directory = Path(directory)
        tensors = {f"glm.{k}": v for k, v in self.glm_.state_tensors().items()}
        tensors.update({k: np.ascontiguousarray(v) for k, v in self.extra_tensors().items()})
        save_file(tensors, directory / WEIGHTS_FILE)
        config = {
            "format": FORMAT,
            "method": self.method,
            "params": self.get_params(),
            "family": self.family_,
            "n_features_in": self.n_features_in_,
            "center": self.center_,
            "design": None if self.design_ is None else self.design_.to_config(),
            "glm": self.glm_.get_params(),
            "glm_dims": {"d_conf": self._d_conf()},
            **(extra_config or {}),
        }
        write_json(config, directory / CONFIG_FILE)

    # -- hooks for subclasses ---------------------------------------------------------------
    def design_options(self) -> dict[str, Any]:
        """Options of the confounder design this estimator fits (the levels' min_count)."""
        return {"min_count": getattr(self, "min_count", 5)}

    def _fit(self, X: np.ndarray, psi: sp.csr_matrix | None, targets: np.ndarray,
             confounders: pd.DataFrame | None = None, groups=None) -> None:
        raise NotImplementedError

    def _raw_score(self, X: np.ndarray) -> np.ndarray:
        return self.glm_.text_effect(X)

    def _d_conf(self) -> int:
        return self.glm_.d_conf()

    def extra_tensors(self) -> dict[str, np.ndarray]:
        if getattr(self, "text_cov_", None) is None:
            return {}
        return {"text_cov": self.text_cov_, "feature_mean": self.feature_mean_}

    def extra_tensor_shapes(self, d_conf: int) -> dict[str, tuple[int | None, ...]]:
        """Names and shapes (None: any size) of the tensors ``extra_tensors`` saves that every
        artifact of this method must hold."""
        return {}

    def optional_tensor_shapes(self, n_features: int) -> dict[str, tuple[int | None, ...]]:
        """Tensors an artifact may hold: the standard-error state."""
        return {"text_cov": (n_features, n_features), "feature_mean": (n_features,)}

    def restore_extra_tensors(self, tensors: dict[str, np.ndarray]) -> None:
        if "text_cov" in tensors:
            self.text_cov_ = tensors["text_cov"].astype(np.float64)
            self.feature_mean_ = tensors["feature_mean"].astype(np.float64)
        else:
            self.text_cov_ = None

