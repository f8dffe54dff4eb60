"""Penalized generalized additive model on text features and a confounder design.

    eta = b + f(phi) + beta . psi + offset

``f`` is linear (default) or an MLP; with ``interactions=True`` one MLP takes the
concatenation [phi, psi] instead (the confounder-input baseline). ``fit`` is full-batch
L-BFGS in float64 for linear heads on wide sparse confounder designs and seeded Adam for MLPs;
linear additive heads on dense designs (up to 512 confounder columns) are solved by the
sufficient-statistics path (:mod:`deconfoundlm.glm.path`: closed form for gaussian, bounded
Newton otherwise). The class follows the scikit-learn estimator contract so that ``GridSearchCV``
can choose the penalty.

Data are packed for scikit-learn's splitters: ``X = [phi | psi]`` (dense or sparse, the first
``n_text`` columns are phi) and ``y = [outcome, trials, weight, offset]``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator

from deconfoundlm.glm.families import get_family
from deconfoundlm.glm.network import AdditiveNet, torch_design
from deconfoundlm.glm.path import InMemoryBlocks, PathFit, eligible, fit_path
from deconfoundlm.glm.targets import unpack
from deconfoundlm.options import store_params


def pack_features(phi: np.ndarray, psi: sp.spmatrix | None) -> np.ndarray | sp.csr_matrix:
    if psi is None or psi.shape[1] == 0:
        return np.asarray(phi)
    return sp.hstack([sp.csr_matrix(phi), psi], format="csr")


def _split_features(X, n_text: int) -> tuple[np.ndarray, sp.csr_matrix | None]:
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        phi = X[:, :n_text].toarray()
        psi = X[:, n_text:] if X.shape[1] > n_text else None
        return phi, psi
    X = np.asarray(X)
    return X[:, :n_text], (sp.csr_matrix(X[:, n_text:]) if X.shape[1] > n_text else None)


def _column_moments(x: torch.Tensor, chunk: int = 100_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Column mean and (n-1) standard deviation, accumulated in float64 over row chunks (no
    full-size temporary on large logs)."""
    n = len(x)
    s1 = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, n, chunk):
        s1 += x[i : i + chunk].double().sum(0)
    mean = s1 / max(n, 1)
    s2 = torch.zeros_like(s1)
    for i in range(0, n, chunk):
        s2 += ((x[i : i + chunk].double() - mean) ** 2).sum(0)
    std = (s2 / max(n - 1, 1)).sqrt()
    return mean.to(x.dtype), std.to(x.dtype)


@dataclass
class StandardizedCoefs:
    """A linear model's coefficients on standardized columns, by name: the text columns' means
    and scales, the confounder columns' scales, the intercept, the text weights, the confounder
    weights."""

    x_mean: np.ndarray
    x_scale: np.ndarray
    conf_scale: np.ndarray
    bias: float
    weight: np.ndarray
    conf: np.ndarray


class AdditiveGLM(BaseEstimator):
    """Penalized generalized additive model eta = b + f(phi) + beta . psi + offset.

    Parameters
    ----------
    family : {"gaussian", "bernoulli", "binomial", "poisson"}
        The outcome family (:mod:`deconfoundlm.glm.families`).
    n_text : int
        Number of text-feature columns; packed inputs ``X = [phi | psi]`` hold them first.
    head : {"linear", "mlp"}
        The text term f: linear on standardized features, or a one-hidden-layer MLP.
    alpha : float
        Ridge penalty of the text (or joint) head's weights on standardized features, scaled by
        the null model's curvature so that one grid fits every family.
    alpha_conf : float
        A small ridge on the confounder coefficients that only keeps them identifiable
        (confounders are adjusted for, not shrunk).
    hidden : int
        Width of the MLP head.
    interactions : bool
        One MLP on [phi, psi] instead of an additive model (the confounder-input baseline).
    max_iter, tol : int, float
        Iteration budget and tolerance of L-BFGS / Adam (the heads not solved by the path).
    seed : int
        Seed of the network's initialization.
    solver : {"auto", "lbfgs"}
        "auto": linear additive heads on dense designs by the sufficient-statistics path, the rest
        by L-BFGS (linear) or Adam (MLP); "lbfgs": L-BFGS for every linear head (a reference).

    Attributes
    ----------
    net_ : AdditiveNet
        The fitted network (float64 for linear heads).
    """

    def __init__(self, family: str = "gaussian", n_text: int = 0, head: str = "linear",
                 alpha: float = 1e-3, alpha_conf: float = 1e-4, hidden: int = 64,
                 interactions: bool = False, max_iter: int = 300, tol: float = 1e-6, seed: int = 0,
                 solver: str = "auto"):
        store_params(self, locals())

    @property
    def _dtype(self):
        return torch.float64 if self.head == "linear" else torch.float32

    def _tensors(self, X, dt=None):
        phi, psi = _split_features(X, self.n_text)
        return self._tensors_from(phi, psi, dt)

    def _tensors_from(self, phi, psi, dt=None):
        dt = dt or self._dtype
        phi_t = torch.from_numpy(np.ascontiguousarray(phi)).to(dt)
        psi_t = torch_design(psi, dt) if psi is not None and not self.interactions else None
        psi_dense = (torch.from_numpy(psi.toarray()).to(dt) if self.interactions and psi is not None
                     else (torch.zeros(len(phi), 0, dtype=dt) if self.interactions else None))
        return phi_t, psi_t, psi_dense

    def fit(self, X, y) -> AdditiveGLM:
        """Fit on packed features ``X = [phi | psi]`` and targets ``y = [outcome, trials, weight,
        offset]`` (:func:`pack_targets`)."""
        phi, psi = _split_features(X, self.n_text)
        return self.fit_arrays(phi, psi, y)

    def fit_arrays(self, phi: np.ndarray, psi: sp.spmatrix | None, y) -> AdditiveGLM:
        """Fit from text features and the confounder design given separately (no packing:
        the path for large logs). Very large problems optimize in float32 to halve memory;
        the fitted model is always kept in the head's own precision."""
        y = np.asarray(y, float)
        n_conf = 0 if psi is None else psi.shape[1]
        if self.solver == "auto" and eligible(self.head, self.interactions, n_conf):  # one solver, see above
            blocks = InMemoryBlocks(np.asarray(phi), psi, y, np.zeros(len(y), np.int16))
            fit = fit_path(blocks, self.family, (self.alpha,), 1, self.alpha_conf)
            fitted = AdditiveGLM.from_path(fit, self.family, self.alpha_conf, self.seed)
            self.net_ = fitted.net_
            self.unconverged_ = fit.unconverged  # nuisance fits stay quiet; the reward's own fit warns
            return self
        large = phi.shape[0] * max(phi.shape[1], 1) > 20_000_000
        dt = torch.float32 if large else self._dtype
        phi_t, psi_t, psi_dense = self._tensors_from(phi, psi, dt)
        d_conf = (psi_dense.shape[1] if self.interactions else (psi_t.shape[1] if psi_t is not None else 0))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = AdditiveNet(self.n_text, d_conf, self.head, self.hidden, self.interactions).to(dt)
        mean, std = _column_moments(phi_t)
        net.x_mean.copy_(mean)
        if self.n_text and len(phi_t) > 1:
            net.x_scale.copy_(std.clamp_min(1e-8))
        if net.conf.numel():
            rms = np.sqrt(np.asarray(psi.multiply(psi).mean(axis=0)).ravel())
            net.conf_scale.copy_(torch.from_numpy(np.where(rms > 0, rms, 1.0)).to(dt))
        t = unpack(y)
        yy, n, w, off = (torch.from_numpy(np.ascontiguousarray(c)).to(dt) for c in t)
        fam = get_family(self.family)
        with torch.no_grad():
            net.bias.fill_(fam.null_eta_of(t.outcome, t.trials, t.weight))
        # Penalties are scaled by the null model's curvature so one alpha grid fits all families.
        curv = fam.curvature_of(t.outcome, t.trials, t.weight)

        def objective():
            eta = net(phi_t, psi_t, psi_dense) + off
            pt, pc = net.penalty()
            return fam.loss(eta, yy, n, w) + curv * (self.alpha * pt + self.alpha_conf * pc)

        if self.head == "linear":
            opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=self.max_iter, history_size=20,
                                    tolerance_grad=self.tol, tolerance_change=self.tol * 1e-3,
                                    line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                obj = objective()
                obj.backward()
                return obj

            opt.step(closure)
        else:
            opt = torch.optim.Adam(net.parameters(), lr=1e-2)
            for _ in range(self.max_iter):
                opt.zero_grad()
                objective().backward()
                opt.step()
        self.net_ = net.to(self._dtype).eval()
        return self

    # -- persistence ------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The fitted network's tensors (names as :meth:`from_state` expects)."""
        return {k: v.detach().contiguous() for k, v in self.net_.state_dict().items()}

    def d_conf(self) -> int:
        """Width of the confounder input the fitted network expects."""
        return int(self.net_.conf.numel())

    @classmethod
    def from_state(cls, params: dict, d_conf: int, tensors: dict[str, torch.Tensor]) -> AdditiveGLM:
        """A fitted model from its parameters and tensors. Tensor names, shapes and values are
        checked against the network these parameters define (ValueError saying what differs)."""
        glm = cls(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = AdditiveNet(glm.n_text, d_conf, glm.head, glm.hidden, glm.interactions).to(glm._dtype)
        expected = net.state_dict()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise ValueError(f"tensor {(missing or extra)[0]!r} is {'missing' if missing else 'unexpected'}")
        for name, ref in expected.items():
            t = tensors[name]
            if tuple(t.shape) != tuple(ref.shape):
                raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}")
            if not t.is_floating_point():
                raise ValueError(f"tensor {name!r} is not floating point")
            if not torch.isfinite(t).all():
                raise ValueError(f"tensor {name!r} has non-finite values")
        net.load_state_dict({k: v.to(glm._dtype) for k, v in tensors.items()})
        glm.net_ = net.eval()
        return glm

    @classmethod
    def from_coefficients(cls, family: str, *, weight: np.ndarray, bias: float, x_mean: np.ndarray | None = None,
                          x_scale: np.ndarray | None = None, conf_coef: np.ndarray | None = None,
                          seed: int = 0) -> AdditiveGLM:
        """A fitted linear model from its coefficients (float64):
        eta = bias + ((phi - x_mean) / x_scale) . weight + psi . conf_coef."""
        weight = np.asarray(weight, dtype=np.float64).ravel()
        d = len(weight)
        conf = np.zeros(0) if conf_coef is None else np.asarray(conf_coef, dtype=np.float64).ravel()
        glm = cls(family, n_text=d, seed=seed)
        net = AdditiveNet(d, len(conf), "linear", glm.hidden, False).double()
        with torch.no_grad():
            net.x_mean.copy_(torch.zeros(d) if x_mean is None else torch.as_tensor(x_mean, dtype=torch.float64))
            net.x_scale.copy_(torch.ones(d) if x_scale is None else torch.as_tensor(x_scale, dtype=torch.float64))
            net.text.weight.copy_(torch.as_tensor(weight)[None, :])
            net.conf.copy_(torch.as_tensor(conf))
            net.bias.fill_(float(bias))
        glm.net_ = net.eval()
        return glm

    @classmethod
    def from_standardized(cls, family: str, coefs: StandardizedCoefs, *, alpha: float, alpha_conf: float,
                          seed: int) -> AdditiveGLM:
        """A fitted linear model from coefficients on standardized columns (float64):
        eta = bias + ((phi - x_mean) / x_scale) . weight + (psi / conf_scale) . conf, with the
        penalties it was fitted with (they enter its standard errors)."""
        c = coefs
        d, q = len(c.weight), len(c.conf)
        glm = cls(family, n_text=d, alpha=alpha, alpha_conf=alpha_conf, seed=seed)
        net = AdditiveNet(d, q, "linear", glm.hidden, False).double()
        with torch.no_grad():
            net.x_mean.copy_(torch.as_tensor(np.asarray(c.x_mean, dtype=np.float64)))
            net.x_scale.copy_(torch.as_tensor(np.asarray(c.x_scale, dtype=np.float64)))
            net.conf_scale.copy_(torch.as_tensor(np.asarray(c.conf_scale, dtype=np.float64)))
            net.text.weight.copy_(torch.as_tensor(np.asarray(c.weight, dtype=np.float64))[None, :])
            net.conf.copy_(torch.as_tensor(np.asarray(c.conf, dtype=np.float64)))
            net.bias.fill_(float(c.bias))
        glm.net_ = net.eval()
        return glm

    @classmethod
    def from_path(cls, fit: PathFit, family: str, alpha_conf: float = 1e-4, seed: int = 0) -> AdditiveGLM:
        """The fitted model of a :func:`~deconfoundlm.glm.path.fit_path` result (its all-rows
        model at the chosen alpha)."""
        tr, d = fit.train, len(fit.train.mean)
        coefs = StandardizedCoefs(x_mean=tr.mean, x_scale=tr.scale, conf_scale=tr.conf_scale, bias=float(fit.theta[0]),
                                  weight=fit.theta[1 : 1 + d], conf=fit.theta[1 + d :])
        return cls.from_standardized(family, coefs, alpha=fit.alpha, alpha_conf=alpha_conf, seed=seed)

    @classmethod
    def combine(cls, text_model: AdditiveGLM, confounder_model: AdditiveGLM) -> AdditiveGLM:
        """The text term of one fitted linear model with the intercept and confounder term of
        another (e.g. a partialled-out text fit and a confounder-only fit with it as offset)."""
        t = text_model.net_
        return cls.from_coefficients(
            text_model.family, weight=t.text.weight.detach()[0].double().numpy(),
            bias=float(confounder_model.net_.bias.detach()), x_mean=t.x_mean.double().numpy(),
            x_scale=t.x_scale.double().numpy(), conf_coef=confounder_model.net_.conf_coef().detach().double().numpy(),
            seed=text_model.seed)

    def is_finite(self) -> bool:
        """Every fitted weight is finite."""
        return all(bool(torch.isfinite(v).all()) for v in self.net_.state_dict().values())

    # -- predictions ------------------------------------------------------------------------
    def predict(self, X) -> np.ndarray:
        """eta (link scale) including the confounder term, without the offset."""
        phi_t, psi_t, psi_dense = self._tensors(X)
        with torch.no_grad():
            return self.net_(phi_t, psi_t, psi_dense).double().numpy()

    def deviance(self, X, y) -> float:
        """Mean deviance on packed ``(X, y)`` (offset included); lower is better."""
        y = np.asarray(y, float)
        t = unpack(y)
        return get_family(self.family).deviance(self.predict(X) + t.offset, t.outcome, t.trials, t.weight)

    def text_effect(self, phi: np.ndarray, psi_dense: np.ndarray | None = None) -> np.ndarray:
        """f(phi) on the link scale (no intercept, no confounder term)."""
        dt, out, step = self._dtype, [], 100_000  # chunks: bounded memory on large logs
        for i in range(0, max(len(phi), 1), step):
            phi_t = torch.from_numpy(np.ascontiguousarray(phi[i : i + step])).to(dt)
            pd_t = None if psi_dense is None else torch.from_numpy(np.ascontiguousarray(psi_dense[i : i + step])).to(dt)
            with torch.no_grad():
                out.append(self.net_.f(phi_t, pd_t).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def text_effect_averaged(self, phi: np.ndarray, psi_ref: np.ndarray) -> np.ndarray:
        """The interaction model's text effect averaged over reference confounder rows."""
        dt = self._dtype
        with torch.no_grad():
            return self.net_.f_averaged(torch.from_numpy(np.ascontiguousarray(phi)).to(dt),
                                        torch.from_numpy(np.ascontiguousarray(psi_ref)).to(dt)).double().numpy()

    def confounder_effect(self, psi: sp.spmatrix) -> np.ndarray:
        """beta . psi (link scale); zero when there are no additive confounders."""
        beta = self.net_.conf_coef().detach().double().numpy()
        if beta.size == 0:
            return np.zeros(psi.shape[0])
        return np.asarray(psi @ beta).ravel()


