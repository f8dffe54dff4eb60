"""Penalized linear GLMs fitted from sufficient statistics summed over row blocks.

One code path serves a log held in memory (row chunks, :class:`InMemoryBlocks`) and a log spread
over a Dask cluster (partitions held by the workers, :mod:`deconfoundlm.distributed`): every pass
over the data is a sum over blocks of a function of one block (:meth:`Blocks.map_reduce`), so
both give the same model up to the order of floating-point sums.

The model is :class:`~deconfoundlm.glm.model.AdditiveGLM`'s linear head,

    eta = b + ((phi - m) / s) . w + (psi / cs) . beta + offset,

minimizing the mean loss + curv * (alpha |w|^2 + alpha_conf |beta|^2) (``m``, ``s``: the training
rows' feature means and standard deviations; ``cs``: the confounder columns' RMS; ``curv``: the
null model's curvature, see :meth:`~deconfoundlm.glm.families.Family.curvature`).

- Folds are assigned per row by a seeded hash of its global row number
  (:func:`~deconfoundlm.glm.folds.hash_folds`): the same folds in memory and on a cluster.
- gaussian: closed form. One pass sums, per fold, the Gram matrix [1, phi, psi]' W [1, phi, psi]
  and its cross-product with the outcome; each training set's normal equations are the total
  minus its fold, and each fold's held-out deviance follows from its own sums.
- bernoulli / binomial / poisson: Newton steps for all K fold models and the all-rows model at
  once, one reduction per iteration. The penalty path runs from the largest alpha to the
  smallest, each solution warm-starting the next. The Hessian (n k^2 per model) is reused while
  the steps contract fast (a chord method: the fixed point is the same exact optimum), refreshed
  at the current point when they do not; the first one, at the null model, costs one Gram pass
  for all folds together.
- The penalty minimizing the mean held-out deviance over folds is chosen and the all-rows model
  at that penalty is returned: the path already computed it (no refit).
- Every solve is bounded and never fails on a finite, valid log: systems go through
  :func:`~deconfoundlm.glm.linalg.factor_psd` (collinear designs: a full one-hot next to the
  intercept, duplicated or constant features, tiny folds), each penalty of the path gets at most
  ``PATH_MAX_ITER`` passes and the returned model ``MAX_ITER`` (a model that has not converged by
  then keeps its best point; :attr:`PathFit.unconverged` counts them).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

from deconfoundlm.errors import DataWarning, UserError
from deconfoundlm.glm.families import Family, get_family
from deconfoundlm.glm.linalg import factor_psd, solve_psd
from deconfoundlm.glm.targets import unpack
from deconfoundlm.options import label

MAX_DENSE_CONF = 512  # wider confounder designs (thousands of one-hot levels) use the L-BFGS path
CHUNK_ROWS = 16_384
CACHE_BYTES = 1 << 30  # in memory, keep the float64 design between passes up to this size
TOL = 1e-9  # largest Newton step (standardized coefficients) at convergence of the returned model
PATH_TOL = 1e-6  # the same along the penalty path (held-out deviances to ~1e-12 relative)
MAX_ITER = 200  # passes for the returned model
PATH_MAX_ITER = 100  # passes per penalty along the path (then the best point so far is used)
REFRESH_RATIO = 0.25  # refresh a model's Hessian when its step shrank by less than this
OWN_RATIO = 0.5  # ... and give it its own when, after a shared refresh, it shrank by less than this
# A feature is constant in a training set when its variance is below the rounding noise of the
# sum-of-squares formula (about n * eps of its mean square about the log's center): a feature
# constant in one fold's training rows but not in its held-out rows (common for sparse features
# on a small log) otherwise got a scale of ~1e-10 from that noise, 1e9-sized coefficients and a
# held-out deviance decided by rounding.
_CONSTANT = 64 * np.finfo(np.float64).eps


# -- blocks -----------------------------------------------------------------------------------
@dataclass
class Block:
    """Rows of a log as the solver reads them: text features, the confounder design (dense up
    to ``MAX_DENSE_CONF`` columns, sparse beyond: only the sandwich reads those), the packed
    targets [outcome, trials, weight, offset], each row's fold and (for clustered standard errors)
    its cluster code."""

    phi: np.ndarray
    psi: np.ndarray | sp.csr_matrix | None
    targets: np.ndarray
    fold: np.ndarray
    cache: dict | None = None  # the float64 design, kept between passes when memory allows
    groups: np.ndarray | None = None  # cluster codes 0..G-1

    def __len__(self) -> int:
        return len(self.targets)


class Blocks(Protocol):
    """A log as blocks of rows: ``map_reduce(fn, *args)`` is the sum over blocks of
    ``fn(block, *args)`` (a dict of arrays); ``n_text`` and ``n_conf`` are the widths."""

    n_text: int
    n_conf: int

    def map_reduce(self, fn: Callable[..., dict[str, np.ndarray]], *args: Any) -> dict[str, np.ndarray]: ...


def add_results(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Elementwise sum of two block results (the reduction of :meth:`Blocks.map_reduce`)."""
    return {key: a[key] + b[key] for key in a}


class InMemoryBlocks:
    """Arrays in memory, read in row chunks (bounded temporaries on large logs)."""

    def __init__(self, phi: np.ndarray, psi: sp.spmatrix | np.ndarray | None, targets: np.ndarray,
                 fold: np.ndarray, chunk: int = CHUNK_ROWS, cache_bytes: int = CACHE_BYTES,
                 groups: np.ndarray | None = None) -> None:
        self.phi, self.targets, self.fold, self.chunk = phi, np.asarray(targets, float), fold, chunk
        self.groups = groups
        self.psi = None if psi is None or psi.shape[1] == 0 else psi
        self.n_text = phi.shape[1]
        self.n_conf = 0 if self.psi is None else self.psi.shape[1]
        fits = len(self.targets) * (1 + self.n_text + self.n_conf) * 8 <= cache_bytes
        self._blocks = [self._block(i) for i in range(0, len(self.targets), chunk)] if fits else None
        if fits:
            for b in self._blocks:
                b.cache = {}

    def _block(self, i: int) -> Block:
        sl = slice(i, i + self.chunk)
        psi = None
        if self.psi is not None:
            psi = self.psi[sl]
            if self.n_conf > MAX_DENSE_CONF:
                psi = sp.csr_matrix(psi, dtype=np.float64)
            else:
                psi = psi.toarray() if sp.issparse(psi) else np.asarray(psi, dtype=np.float64)
        groups = None if self.groups is None else self.groups[sl]
        return Block(self.phi[sl], psi, self.targets[sl], self.fold[sl], groups=groups)

    def map_reduce(self, fn, *args):
        out = None
        blocks = self._blocks or (self._block(i) for i in range(0, len(self.targets), self.chunk))
        for block in blocks:
            part = fn(block, *args)
            out = part if out is None else add_results(out, part)
        return out


def eligible(head: str, interactions: bool, n_conf: int) -> bool:
    """Whether a model is fitted here (linear head, additive, confounder design <= 512 wide)."""
    return head == "linear" and not interactions and n_conf <= MAX_DENSE_CONF


# -- per-block functions (they run on the workers in the distributed path) ---------------------
def _design(block: Block, center: np.ndarray, use_conf: bool) -> np.ndarray | sp.csr_matrix:
    """The one design of the package, [1, phi - center, psi], in float64 (sparse when psi is;
    from the block's cache when it keeps one)."""
    key = (center.tobytes(), use_conf)
    if block.cache is not None and key in block.cache:
        return block.cache[key]
    n = len(block)
    cols = [np.ones((n, 1)), np.asarray(block.phi, dtype=np.float64) - center]
    if use_conf and block.psi is not None and sp.issparse(block.psi):
        a = sp.hstack([sp.csr_matrix(np.hstack(cols)), block.psi], format="csr")
    else:
        if use_conf and block.psi is not None:
            cols.append(np.asarray(block.psi, dtype=np.float64))
        a = np.hstack(cols)
    if block.cache is not None:
        block.cache.clear()
        block.cache[key] = a
    return a


def _pilot(block: Block) -> dict[str, np.ndarray]:
    y, _, w, _ = unpack(block.targets)
    return {"n": np.array([len(block)], float), "sum_phi": np.asarray(block.phi, np.float64).sum(0),
            "sw": np.array([w.sum()]), "swy": np.array([(w * y).sum()])}


def _fold_matrix(fold: np.ndarray, k: int) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(len(fold)), (fold.astype(np.int64), np.arange(len(fold)))), shape=(k, len(fold)))


def _moments(block: Block, k: int, center: np.ndarray, y0: float, use_conf: bool) -> dict[str, np.ndarray]:
    """Per-fold row counts, centered feature sums and squares, confounder squares, and the
    weighted outcome sums behind each training set's null model and curvature."""
    F = _fold_matrix(block.fold, k)
    x = np.asarray(block.phi, dtype=np.float64) - center
    y, n, w, off = unpack(block.targets)
    yc = y - y0
    out = {
        "n": np.asarray(F.sum(1)).ravel(),
        "sum_x": F @ x, "sum_x2": F @ (x * x),
        "sw": F @ w, "swy": F @ (w * yc), "swy2": F @ (w * yc * yc), "swn": F @ (w * n),
    }
    if use_conf and block.psi is not None:
        out["sum_c2"] = F @ (block.psi.multiply(block.psi).toarray() if sp.issparse(block.psi) else block.psi**2)
    return out


def _gram(block: Block, k: int, center: np.ndarray, y0: float, family: str, use_conf: bool) -> dict[str, np.ndarray]:
    """Per-fold Gram matrices of [1, phi - center, psi] weighted by the family's
    :meth:`~deconfoundlm.glm.families.Family.gram_weight`, and the cross-products with the
    outcome (less offset and y0: the gaussian normal equations)."""
    a = _design(block, center, use_conf)
    y, n, w, off = unpack(block.targets)
    u = get_family(family).gram_weight(w, n)
    gram = np.zeros((k, a.shape[1], a.shape[1]))
    cross = np.zeros((k, a.shape[1]))
    tt = np.zeros(k)
    t = y - off - y0
    for f in np.unique(block.fold):
        rows = block.fold == f
        af = a[rows]
        gram[f] = af.T @ (af * u[rows, None])
        cross[f] = af.T @ (w[rows] * t[rows])
        tt[f] = np.sum(w[rows] * t[rows] ** 2)
    return {"gram": gram, "cross": cross, "tt": tt}


def _newton_pass(block: Block, center: np.ndarray, family: str, use_conf: bool, theta: np.ndarray,
                 excluded: np.ndarray, k: int, shared: bool, own: np.ndarray) -> dict[str, np.ndarray]:
    """For models m (raw coefficients ``theta[m]`` on [1, phi - center, psi]) each trained on the
    rows outside fold ``excluded[m]`` (-1: all rows; the last model): training loss and gradient
    sums and held-out deviance sums. With ``shared``: per-fold Gram matrices weighted by the
    loss's curvature at the last model (a model's Hessian, approximately, is their sum outside
    its fold: one n k^2 product for all models); for the models flagged in ``own``: their exact
    Hessians at their own coefficients."""
    a = _design(block, center, use_conf)
    y, n, w, off = unpack(block.targets)
    eta = a @ theta.T + off[:, None]
    fam = get_family(family)
    loss, d1, d2 = fam.terms(eta, y[:, None], n[:, None])
    train = block.fold[:, None] != excluded[None, :]
    wt = w[:, None] * train
    held = w[:, None] * ~train
    out = {"loss": (wt * loss).sum(0), "grad": (a.T @ (wt * d1)).T,
           "heldout": (held * fam.unit_deviance(eta, y[:, None], n[:, None])).sum(0)}
    if shared:
        u = w * d2[:, -1]
        out["hess"] = np.zeros((k, a.shape[1], a.shape[1]))
        for f in np.unique(block.fold):
            rows = block.fold == f
            out["hess"][f] = a[rows].T @ (a[rows] * u[rows, None])
    out["own"] = np.zeros((int(own.sum()), a.shape[1], a.shape[1]))
    for j, m in enumerate(np.flatnonzero(own)):
        out["own"][j] = a.T @ (a * (wt[:, m] * d2[:, m])[:, None])
    return out


def _weighted_gram(a: np.ndarray | sp.csr_matrix, u: np.ndarray) -> np.ndarray:
    """a' diag(u) a, dense result."""
    if sp.issparse(a):
        return np.asarray((a.T @ a.multiply(u[:, None])).todense())
    return a.T @ (a * u[:, None])


def sandwich_pass(block: Block, center: np.ndarray, family: str, use_conf: bool, theta: np.ndarray,
                  n_groups: int = 0) -> dict[str, np.ndarray]:
    """Bread and meat sums of the sandwich at raw coefficients ``theta`` (all rows), the sum of
    the text term (for the reward's center) and the loss's normalizers. With ``n_groups``: the
    per-cluster sums of the score contributions instead of the meat (rows' ``groups`` codes)."""
    a = _design(block, center, use_conf)
    y, n, w, off = unpack(block.targets)
    _, d1, d2 = get_family(family).terms(np.asarray(a @ theta).ravel() + off, y, n)
    r = w * d1
    d = block.phi.shape[1]
    out = {"bread": _weighted_gram(a, w * d2),
           "text_sum": np.array([np.sum((np.asarray(block.phi, dtype=np.float64) - center) @ theta[1 : 1 + d])]),
           "n": np.array([float(len(block))]), "sw": np.array([w.sum()]), "swn": np.array([(w * n).sum()])}
    if n_groups:
        C = sp.csr_matrix((r, (block.groups.astype(np.int64), np.arange(len(r)))), shape=(n_groups, len(r)))
        out["scores"] = np.asarray((C @ a).todense()) if sp.issparse(a) else C @ a
    else:
        out["meat"] = _weighted_gram(a, r * r)
    return out


# -- training sets ----------------------------------------------------------------------------
@dataclass
class _Train:
    """A training set's statistics (all rows, or all rows outside one fold)."""

    n: float
    mean: np.ndarray  # feature means
    scale: np.ndarray  # feature standard deviations (1 for constant features)
    conf_scale: np.ndarray
    norm: float  # the loss's normalizer: sum w, or sum w n for binomial
    curv: float
    null_eta: float  # intercept-only fit, link scale (gaussian: less y0)
    transform: np.ndarray  # raw-centered -> standardized coordinates: theta_raw = T theta_std

    def standardize(self, h: np.ndarray) -> np.ndarray:
        """T' h T for a matrix ``h`` on the raw-centered coordinates, in O(k^2): T is a diagonal
        (1, 1 / scale, 1 / conf_scale) plus the intercept row (-shift / scale on the text
        columns), so T = D + e0 t' and T' h T = D h D + (D h e0) t' + t (e0' h D) + h00 t t'."""
        T = self.transform
        dvec = np.diagonal(T).copy()
        t = T[0].copy()
        t[0] = 0.0
        out = h * np.outer(dvec, dvec)
        out += np.outer(dvec * h[:, 0], t) + np.outer(t, h[0] * dvec) + h[0, 0] * np.outer(t, t)
        return out


def _training_set(mom: dict[str, np.ndarray], excluded: int, center: np.ndarray, family: str,
                  n_conf: int) -> _Train:
    def total(key: str) -> np.ndarray:
        s = mom[key].sum(0)
        return s - mom[key][excluded] if excluded >= 0 else s

    n = float(total("n"))
    shift = total("sum_x") / n
    mean = center + shift
    var = np.maximum(total("sum_x2") - n * shift**2, 0.0) / max(n - 1, 1)
    mean_sq = total("sum_x2") / n + 1e-300
    scale = np.where(var > _CONSTANT * max(n, 1.0) * mean_sq, np.sqrt(var), 1.0)
    if n < 2:
        scale = np.ones_like(scale)
    if n_conf:
        rms = np.sqrt(total("sum_c2") / n)
        conf_scale = np.where(rms > 0, rms, 1.0)
    else:
        conf_scale = np.zeros(0)
    sw, swy, swy2, swn = (float(total(k)) for k in ("sw", "swy", "swy2", "swn"))
    fam = get_family(family)
    norm = fam.normaliser(sw, swn)
    if not norm > 0:
        raise UserError("no row with a positive weight" + (" and trials" if fam.per_trial else "")
                        + (" outside one cross-validation fold" if excluded >= 0 else "") + ": nothing to fit")
    curv = fam.curvature(sw, swy, swy2, swn)
    null = fam.null_eta(sw, swy, swn)  # the Newton path's start (gaussian is solved in closed form)
    d = len(mean)
    k = 1 + d + n_conf
    T = np.zeros((k, k))
    T[0, 0] = 1.0
    T[0, 1 : 1 + d] = -shift / scale
    T[np.arange(1, 1 + d), np.arange(1, 1 + d)] = 1.0 / scale
    if n_conf:
        T[np.arange(1 + d, k), np.arange(1 + d, k)] = 1.0 / conf_scale
    return _Train(n, mean, scale, conf_scale, norm, float(curv), null, T)


def _penalty(d: int, n_conf: int, alpha: float, alpha_conf: float) -> np.ndarray:
    return np.concatenate([[0.0], np.full(d, alpha), np.full(n_conf, alpha_conf)])


# -- the fit ----------------------------------------------------------------------------------
@dataclass
class PathFit:
    """The chosen model and what choosing it measured."""

    theta: np.ndarray  # standardized coefficients [b, w, beta] of the all-rows model
    alpha: float
    cv_deviance: float
    train: _Train
    center: np.ndarray
    cv_table: dict[float, float]
    unconverged: int = 0  # solves (penalty x model) that reached their pass budget


def fit_path(blocks: Blocks, family: str, alphas: Sequence[float], cv: int, alpha_conf: float = 1e-4,
             use_conf: bool = True) -> PathFit:
    """Choose alpha by held-out deviance over the blocks' ``cv`` folds and return the all-rows
    model at it (see the module docstring). ``alphas`` with one value: no cross-validation."""
    use_conf = use_conf and blocks.n_conf > 0
    n_conf = blocks.n_conf if use_conf else 0
    d = blocks.n_text
    pilot = blocks.map_reduce(_pilot)
    center = pilot["sum_phi"] / pilot["n"][0]
    fam = get_family(family)
    # A quadratic loss is solved in closed form on the outcome centered at its mean (y0).
    y0 = float(pilot["swy"][0] / pilot["sw"][0]) if fam.closed_form and pilot["sw"][0] > 0 else 0.0
    mom = blocks.map_reduce(_moments, cv, center, y0, use_conf)
    n_all = float(mom["n"].sum())
    norm_all = fam.normaliser(float(mom["sw"].sum()), float(mom["swn"].sum()))
    usable = [f for f in range(cv) if mom["n"][f] > 0 and n_all - mom["n"][f] >= 2
              and _heldout_norm(mom, f, fam) > 0 and norm_all - _heldout_norm(mom, f, fam) > 0]
    if len(alphas) > 1 and len(usable) < 2:
        raise UserError(f"{label('cv')} {cv}: cross-validation needs rows with a positive weight in at least 2 folds; "
                        f"{len(usable)} of the {cv} folds have them (give fewer folds, or more rows with weight)")
    folds = usable if len(alphas) > 1 else []
    excluded = np.array([*folds, -1])
    trains = [_training_set(mom, int(e), center, family, n_conf) for e in excluded]
    gram = blocks.map_reduce(_gram, cv, center, y0, family, use_conf)
    alphas_desc = sorted((float(a) for a in alphas), reverse=True)
    if fam.closed_form:
        thetas, heldout = _closed_form_path(gram, mom, trains, excluded, alphas_desc, alpha_conf, d, n_conf, y0,
                                            fam)
        unconverged = 0
    else:
        thetas, heldout, unconverged = _newton_path(blocks, gram, mom, trains, excluded, alphas_desc, alpha_conf,
                                                    d, n_conf, family, center, use_conf)
    cv_table = {a: float(np.mean(h)) for a, h in zip(alphas_desc, heldout, strict=True)} if folds else {}
    best = min(range(len(alphas_desc)), key=lambda i: (cv_table[alphas_desc[i]], -alphas_desc[i])) if folds else 0
    alpha = alphas_desc[best]
    return PathFit(thetas[best][-1], alpha, cv_table.get(alpha, float("nan")), trains[-1], center, cv_table,
                   unconverged)


def _train_gram(gram: dict[str, np.ndarray], e: int, key: str) -> np.ndarray:
    total = gram[key].sum(0)
    return total - gram[key][e] if e >= 0 else total


def _heldout_norm(mom: dict[str, np.ndarray], e: int, family: Family | str) -> float:
    return get_family(family).normaliser(float(mom["sw"][e]), float(mom["swn"][e]))


def _closed_form_path(gram, mom, trains, excluded, alphas_desc, alpha_conf, d, n_conf, y0, fam: Family):
    """The quadratic loss: each model at each penalty is one solve of its normal equations."""
    thetas: list[list[np.ndarray]] = []
    heldout: list[list[float]] = []
    for alpha in alphas_desc:
        pen = _penalty(d, n_conf, alpha, alpha_conf)
        row_t, row_h = [], []
        for e, tr in zip(excluded, trains, strict=True):
            T = tr.transform
            G = tr.standardize(_train_gram(gram, int(e), "gram")) / tr.norm
            b = T.T @ _train_gram(gram, int(e), "cross") / tr.norm
            theta = solve_psd(G + np.diag(2 * tr.curv * pen), b)
            if e >= 0:  # held-out deviance from the fold's own sums (fitted on y - offset - y0)
                raw = T @ theta
                dev = (gram["tt"][e] - 2 * raw @ gram["cross"][e] + raw @ gram["gram"][e] @ raw)
                row_h.append(float(max(dev, 0.0)) / _heldout_norm(mom, int(e), fam))
            theta = theta.copy()
            theta[0] += y0  # the intercept of y itself
            row_t.append(theta)
        thetas.append(row_t)
        heldout.append(row_h)
    return thetas, heldout


def _newton_path(blocks, gram, mom, trains, excluded, alphas_desc, alpha_conf, d, n_conf, family, center, use_conf):
    """The penalty path of every model to ``PATH_TOL`` (enough to rank the penalties), then the
    all-rows model at the chosen penalty polished to ``TOL``."""
    solver = _Newton(blocks, gram, mom, trains, excluded, alpha_conf, d, n_conf, family, center, use_conf)
    thetas: list[list[np.ndarray]] = []
    heldout: list[list[float]] = []
    M = len(trains)
    unconverged = 0
    for alpha in alphas_desc:
        h = solver.solve(alpha, np.ones(M, bool), PATH_TOL, PATH_MAX_ITER)
        unconverged += solver.unconverged
        thetas.append([t.copy() for t in solver.theta])
        heldout.append([float(h[m]) for m in range(M) if excluded[m] >= 0])
    folds = [m for m in range(M) if excluded[m] >= 0]
    cv_table = [float(np.mean(h)) for h in heldout] if folds else [0.0] * len(alphas_desc)
    best = min(range(len(alphas_desc)), key=lambda i: (cv_table[i], -alphas_desc[i]))
    solver.theta = np.stack(thetas[best])
    only_all = np.zeros(M, bool)
    only_all[-1] = True
    solver.solve(alphas_desc[best], only_all, TOL, MAX_ITER)
    unconverged += solver.unconverged
    thetas[best][-1] = solver.theta[-1].copy()
    return thetas, heldout, unconverged


class _Newton:
    """Newton steps with a reused Hessian (see the module docstring) for models trained on the
    rows outside one fold each; the last model uses all rows.

    A refresh first tries the cheap shared curvature (the last model's, split by fold); a model
    that still converges slowly after it (a fold model far from the all-rows model: a small log,
    a weak penalty) gets its own exact Hessian from then on."""

    def __init__(self, blocks, gram, mom, trains, excluded, alpha_conf, d, n_conf, family, center, use_conf):
        self.blocks, self.mom, self.trains, self.excluded = blocks, mom, trains, excluded
        self.alpha_conf, self.d, self.n_conf, self.family = alpha_conf, d, n_conf, family
        self.center, self.use_conf, self.k = center, use_conf, len(mom["n"])
        M = len(trains)
        self.theta = np.zeros((M, 1 + d + n_conf))
        for m, tr in enumerate(trains):
            self.theta[m, 0] = tr.null_eta
        # The first Hessian, at the null model: the Gram weighted by w n times the null variance
        # per unit of n (p (1 - p) for binomial, the rate for poisson).
        fam = get_family(family)
        c0 = [fam.null_weight(tr.null_eta, tr.curv) for tr in trains]
        self.hess = [_model_hessian(gram["gram"], tr, int(e), c / tr.norm)
                     for tr, e, c in zip(trains, excluded, c0, strict=True)]
        self.want = np.zeros(M, bool)  # a refresh is due
        self.own = np.zeros(M, bool)  # the model's Hessian is computed at its own coefficients
        self.shared_since = np.zeros(M, bool)  # a shared refresh came since its last request

    def solve(self, alpha: float, active: np.ndarray, tol: float, max_iter: int = MAX_ITER) -> np.ndarray:
        """Minimize the ``active`` models' objectives at ``alpha`` from their current
        coefficients, one pass over the blocks per step, at most ``max_iter`` passes; returns
        held-out deviances. A model that has not converged by then (a near-separable fold of a
        tiny log crawls) keeps its best point so far, and its held-out deviance is measured there
        (one more pass); ``self.unconverged`` counts such models."""
        trains, excluded, theta = self.trains, self.excluded, self.theta
        M = len(trains)
        pens = [2 * tr.curv * _penalty(self.d, self.n_conf, alpha, self.alpha_conf) for tr in trains]
        factors = [factor_psd(h + np.diag(p)) for h, p in zip(self.hess, pens, strict=True)]
        done = ~active
        self.shared_since[:] = False
        last_step = np.full(M, np.inf)
        prev_obj = np.full(M, np.inf)
        prev_theta = theta.copy()
        heldout = np.zeros(M)
        for _ in range(max_iter):
            raw = np.stack([tr.transform @ t for tr, t in zip(trains, theta, strict=True)])
            shared = bool((self.want & ~self.own & ~done).any())
            own = self.want & self.own & ~done
            res = self.blocks.map_reduce(_newton_pass, self.center, self.family, self.use_conf, raw, excluded,
                                         self.k, shared, own)
            objs = np.array([res["loss"][m] / trains[m].norm + 0.5 * float(pens[m] @ theta[m] ** 2)
                             for m in range(M)])
            ok = objs <= prev_obj + 1e-12 * np.abs(prev_obj)
            for j, m in enumerate(np.flatnonzero(own)):
                if ok[m]:  # the curvature at an accepted point only
                    self.hess[m] = trains[m].standardize(res["own"][j]) / trains[m].norm
                    factors[m] = factor_psd(self.hess[m] + np.diag(pens[m]))
                    self.want[m] = False
                    last_step[m] = np.inf  # judge the new Hessian on two steps of its own
            if shared and (ok[-1] or done[-1]):
                for m in np.flatnonzero(~self.own):
                    self.hess[m] = _model_hessian(res["hess"], trains[m], int(excluded[m]), 1.0 / trains[m].norm)
                    factors[m] = factor_psd(self.hess[m] + np.diag(pens[m]))
                last_step[self.want & ~self.own] = np.inf
                self.shared_since[self.want & ~self.own] = True
                self.want[~self.own] = False
            for m in np.flatnonzero(~done):
                tr = trains[m]
                if not ok[m]:  # overshot: halve the step
                    theta[m] = 0.5 * (theta[m] + prev_theta[m])
                    continue
                grad = tr.transform.T @ res["grad"][m] / tr.norm + pens[m] * theta[m]
                step = -factors[m].solve(grad)
                size = float(np.max(np.abs(step)))
                if size < tol:
                    done[m] = True
                    if excluded[m] >= 0:
                        heldout[m] = res["heldout"][m] / _heldout_norm(self.mom, int(excluded[m]), self.family)
                    continue
                if size > REFRESH_RATIO * last_step[m] and not self.want[m]:
                    if self.shared_since[m] and size > OWN_RATIO * last_step[m]:
                        self.own[m] = True  # the shared curvature did not help this model
                    self.want[m] = True
                    self.shared_since[m] = False
                last_step[m] = size
                prev_obj[m] = objs[m]
                prev_theta[m] = theta[m].copy()
                theta[m] = theta[m] + step
            if done.all():
                break
        left = np.flatnonzero(~done)
        self.unconverged = len(left)
        if len(left):  # back to the best accepted points; held-out deviance measured there
            theta[left] = prev_theta[left]
            raw = np.stack([tr.transform @ t for tr, t in zip(trains, theta, strict=True)])
            res = self.blocks.map_reduce(_newton_pass, self.center, self.family, self.use_conf, raw, excluded,
                                         self.k, False, np.zeros(M, bool))
            for m in left:
                if excluded[m] >= 0:
                    heldout[m] = res["heldout"][m] / _heldout_norm(self.mom, int(excluded[m]), self.family)
        return heldout


def _model_hessian(fold_grams: np.ndarray, tr: _Train, e: int, factor: float) -> np.ndarray:
    """A model's Hessian in its standardized coordinates from per-fold curvature Grams."""
    total = fold_grams.sum(0)
    h = (total - fold_grams[e]) if e >= 0 else total
    return tr.standardize(h) * factor


class PathConvergenceWarning(DataWarning, ConvergenceWarning):
    """Some solve of the penalty path reached its iteration bound (shown by the CLI)."""


def warn_unconverged(fit: PathFit) -> None:
    """A warning when some solve of the path reached its pass budget (the model is the best
    point found; the fit is still finite)."""
    if fit.unconverged:
        warnings.warn(f"the penalty path stopped {fit.unconverged} solve(s) at their iteration bound before full "
                      "convergence (a tiny or near-separable log); the best point found was used",
                      PathConvergenceWarning, stacklevel=3)
