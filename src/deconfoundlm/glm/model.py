"""Penalized generalized additive model on text features and a confounder design.

    eta = b + f(phi) + beta . psi + offset

``f`` is linear (default) or an MLP; with ``interactions=True`` one MLP takes the
concatenation [phi, psi] instead (the confounder-input baseline). A fitted linear additive model
is its coefficients (``coefs_``, numpy float64): predicting, saving and loading it needs no
torch; the other heads keep their torch network (``net_``). ``fit`` is full-batch
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
from sklearn.base import BaseEstimator

from deconfoundlm.glm.families import get_family
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


def _column_moments(x, chunk: int = 100_000):
    """Column mean and (n-1) standard deviation of a tensor, accumulated in float64 over row
    chunks (no full-size temporary on large logs)."""
    import torch

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

    @classmethod
    def of_net(cls, net) -> StandardizedCoefs:
        """The coefficients of a linear additive torch network (float64 copies)."""
        def arr(t) -> np.ndarray:
            return t.detach().double().cpu().numpy().copy()

        return cls(x_mean=arr(net.x_mean), x_scale=arr(net.x_scale), conf_scale=arr(net.conf_scale),
                   bias=float(net.bias.detach()), weight=arr(net.text.weight)[0], conf=arr(net.conf))

    def tensors(self) -> dict[str, np.ndarray]:
        """The coefficients under the torch network's state names (safetensors' layout)."""
        return {"x_mean": self.x_mean, "x_scale": self.x_scale, "conf_scale": self.conf_scale,
                "bias": np.array([self.bias]), "text.weight": self.weight[None, :], "conf": self.conf}

    def conf_coef(self) -> np.ndarray:
        """The confounder coefficients on the design's raw columns."""
        return self.conf / self.conf_scale

    def text_effect(self, phi: np.ndarray, step: int = 100_000) -> np.ndarray:
        """((phi - x_mean) / x_scale) . weight, without a standardized copy of phi (in chunks:
        bounded memory on large logs)."""
        w = self.weight / self.x_scale
        shift = self.x_mean @ w
        out = [np.asarray(phi[i : i + step]) @ w - shift for i in range(0, len(phi), step)]
        return np.concatenate(out).astype(np.float64, copy=False) if out else np.zeros(0)

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.bias)) and all(bool(np.isfinite(v).all()) for v in
                                                    (self.x_mean, self.x_scale, self.conf_scale, self.weight, self.conf))


def _linear_shapes(d: int, q: int) -> dict[str, tuple[int, ...]]:
    return {"x_mean": (d,), "x_scale": (d,), "conf_scale": (q,), "bias": (1,), "text.weight": (1, d), "conf": (q,)}


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
    coefs_ : StandardizedCoefs
        The fitted coefficients of a linear additive model (``head="linear"``, no interactions).
    net_ : AdditiveNet
        The fitted network of the other heads (MLP, interactions).
    """

    def __init__(self, family: str = "gaussian", n_text: int = 0, head: str = "linear",
                 alpha: float = 1e-3, alpha_conf: float = 1e-4, hidden: int = 64,
                 interactions: bool = False, max_iter: int = 300, tol: float = 1e-6, seed: int = 0,
                 solver: str = "auto"):
        store_params(self, locals())

    @property
    def _linear(self) -> bool:
        """Whether the fitted model is its linear coefficients (``coefs_``)."""
        return self.head == "linear" and not self.interactions

    @property
    def _dtype(self):
        import torch

        return torch.float64 if self.head == "linear" else torch.float32

    def _keep(self, coefs: StandardizedCoefs | None = None, net=None) -> AdditiveGLM:
        """Hold the fitted model: the coefficients of a linear additive one, else the network."""
        self.__dict__.pop("coefs_", None)
        self.__dict__.pop("net_", None)
        if coefs is None and self._linear:
            coefs = StandardizedCoefs.of_net(net)
        if coefs is not None:
            self.coefs_ = coefs
        else:
            self.net_ = net.eval()
        return self

    def _tensors(self, X, dt=None):
        phi, psi = _split_features(X, self.n_text)
        return self._tensors_from(phi, psi, dt)

    def _tensors_from(self, phi, psi, dt=None):
        import torch

        from deconfoundlm.glm.network import torch_design

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
            self._keep(AdditiveGLM.from_path(fit, self.family, self.alpha_conf, self.seed).coefs_)
            self.unconverged_ = fit.unconverged  # nuisance fits stay quiet; the reward's own fit warns
            return self
        import torch

        from deconfoundlm.glm.network import AdditiveNet

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
        fam = get_family(self.family)
        unit = fam.unit_of(t.outcome)  # solved in this unit, the link-scale terms multiplied back below
        if unit != 1.0:
            t = t._replace(outcome=t.outcome / unit, offset=t.offset / unit)
        yy, n, w, off = (torch.from_numpy(np.ascontiguousarray(c)).to(dt) for c in t)
        with torch.no_grad():
            net.bias.fill_(fam.null_eta_of(t.outcome, t.trials, t.weight))
        # Penalties are scaled by the null model's curvature so one alpha grid fits all families.
        curv = fam.curvature_of(t.outcome, t.trials, t.weight)

        inputs = None
        if net.standardizes_inputs:  # the head's input does not change during the fit: built once
            with torch.no_grad():
                inputs = net.inputs(phi_t, psi_dense)

        def objective():
            eta = net(phi_t, psi_t, psi_dense, inputs) + off
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
        if unit != 1.0:
            net.scale_output(unit)
        return self._keep(net=net.to(self._dtype))

    # -- persistence ------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, np.ndarray]:
        """The fitted model's tensors as numpy arrays (names as :meth:`from_state` expects: the
        torch network's state names)."""
        if "coefs_" in self.__dict__:
            return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in self.coefs_.tensors().items()}
        return {k: v.detach().cpu().contiguous().numpy() for k, v in self.net_.state_dict().items()}

    def d_conf(self) -> int:
        """Width of the confounder input the fitted model expects."""
        return len(self.coefs_.conf) if "coefs_" in self.__dict__ else int(self.net_.conf.numel())

    @classmethod
    def from_state(cls, params: dict, d_conf: int, tensors: dict[str, np.ndarray]) -> AdditiveGLM:
        """A fitted model from its parameters and tensors (numpy arrays). Tensor names, shapes and
        values are checked against the model these parameters define (ValueError saying what
        differs)."""
        glm = cls(**params)
        if glm._linear:
            expected = _linear_shapes(glm.n_text, d_conf)
        else:
            import torch

            from deconfoundlm.glm.network import AdditiveNet

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = AdditiveNet(glm.n_text, d_conf, glm.head, glm.hidden, glm.interactions).to(glm._dtype)
            expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise ValueError(f"tensor {(missing or extra)[0]!r} is {'missing' if missing else 'unexpected'}")
        for name, shape in expected.items():
            t = np.asarray(tensors[name])
            if tuple(t.shape) != shape:
                raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {shape}")
            if not np.issubdtype(t.dtype, np.floating):
                raise ValueError(f"tensor {name!r} is not floating point")
            if not np.isfinite(t).all():
                raise ValueError(f"tensor {name!r} has non-finite values")
        if glm._linear:
            t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
            return glm._keep(StandardizedCoefs(x_mean=t["x_mean"], x_scale=t["x_scale"], conf_scale=t["conf_scale"],
                                               bias=float(t["bias"][0]), weight=t["text.weight"][0], conf=t["conf"]))
        net.load_state_dict({k: torch.from_numpy(np.array(v)).to(glm._dtype) for k, v in tensors.items()})
        return glm._keep(net=net)

    @classmethod
    def from_coefficients(cls, family: str, *, weight: np.ndarray, bias: float, x_mean: np.ndarray | None = None,
                          x_scale: np.ndarray | None = None, conf_coef: np.ndarray | None = None,
                          seed: int = 0) -> AdditiveGLM:
        """A fitted linear model from its coefficients (float64):
        eta = bias + ((phi - x_mean) / x_scale) . weight + psi . conf_coef."""
        weight = np.asarray(weight, dtype=np.float64).ravel()
        d = len(weight)
        conf = np.zeros(0) if conf_coef is None else np.asarray(conf_coef, dtype=np.float64).ravel()
        coefs = StandardizedCoefs(x_mean=np.zeros(d) if x_mean is None else np.asarray(x_mean, dtype=np.float64),
                                  x_scale=np.ones(d) if x_scale is None else np.asarray(x_scale, dtype=np.float64),
                                  conf_scale=np.ones(len(conf)), bias=float(bias), weight=weight, conf=conf)
        return cls(family, n_text=d, seed=seed)._keep(coefs)

    @classmethod
    def from_standardized(cls, family: str, coefs: StandardizedCoefs, *, alpha: float, alpha_conf: float,
                          seed: int) -> AdditiveGLM:
        """A fitted linear model from coefficients on standardized columns (float64):
        eta = bias + ((phi - x_mean) / x_scale) . weight + (psi / conf_scale) . conf, with the
        penalties it was fitted with (they enter its standard errors)."""
        c = coefs
        f64 = {k: np.array(getattr(c, k), dtype=np.float64) for k in ("x_mean", "x_scale", "conf_scale", "weight",
                                                                      "conf")}
        glm = cls(family, n_text=len(c.weight), alpha=alpha, alpha_conf=alpha_conf, seed=seed)
        return glm._keep(StandardizedCoefs(bias=float(c.bias), **f64))

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
        t, c = text_model.coefs_, confounder_model.coefs_
        return cls.from_coefficients(text_model.family, weight=t.weight, bias=c.bias, x_mean=t.x_mean,
                                     x_scale=t.x_scale, conf_coef=c.conf_coef(), seed=text_model.seed)

    def is_finite(self) -> bool:
        """Every fitted weight is finite."""
        if "coefs_" in self.__dict__:
            return self.coefs_.is_finite()
        return all(bool(np.isfinite(v).all()) for v in self.state_tensors().values())

    def conf_coef(self) -> np.ndarray:
        """The confounder coefficients on the design's raw columns (empty without an additive
        confounder term)."""
        if "coefs_" in self.__dict__:
            return self.coefs_.conf_coef()
        return self.net_.conf_coef().detach().double().numpy()

    # -- predictions ------------------------------------------------------------------------
    def predict(self, X) -> np.ndarray:
        """eta (link scale) including the confounder term, without the offset."""
        if "coefs_" in self.__dict__:
            phi, psi = _split_features(X, self.n_text)
            eta = self.coefs_.bias + self.coefs_.text_effect(phi)
            if psi is not None and len(self.coefs_.conf):
                eta = eta + np.asarray(psi @ self.coefs_.conf_coef()).ravel()
            return eta
        import torch

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
        if "coefs_" in self.__dict__:
            return self.coefs_.text_effect(phi)
        import torch

        dt, out, step = self._dtype, [], 100_000  # chunks: bounded memory on large logs
        for i in range(0, max(len(phi), 1), step):
            phi_t = torch.from_numpy(np.ascontiguousarray(phi[i : i + step])).to(dt)
            pd_t = None if psi_dense is None else torch.from_numpy(np.ascontiguousarray(psi_dense[i : i + step])).to(dt)
            with torch.no_grad():
                out.append(self.net_.f(phi_t, pd_t).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def text_effect_averaged(self, phi: np.ndarray, psi_ref: np.ndarray) -> np.ndarray:
        """The interaction model's text effect averaged over reference confounder rows."""
        import torch

        dt = self._dtype
        with torch.no_grad():
            return self.net_.f_averaged(torch.from_numpy(np.ascontiguousarray(phi)).to(dt),
                                        torch.from_numpy(np.ascontiguousarray(psi_ref)).to(dt)).double().numpy()

    def confounder_effect(self, psi: sp.spmatrix) -> np.ndarray:
        """beta . psi (link scale); zero when there are no additive confounders."""
        beta = self.conf_coef()
        if beta.size == 0:
            return np.zeros(psi.shape[0])
        return np.asarray(psi @ beta).ravel()
