"""Penalized linear GLMs fitted from sufficient statistics summed over row blocks.

One code path serves a log held in memory (row chunks, :class:`InMemoryBlocks`) and a log spread
over a Dask cluster (partitions held by the workers, :mod:`deconfoundlm.distributed`): every pass
over the data is a sum over blocks of a function of one block (:meth:`Blocks.map_reduce`), so
both give the same model up to the order of floating-point sums.

The model is :class:`~deconfoundlm.rewards.glm.AdditiveGLM`'s linear head,

    eta = b + ((phi - m) / s) . w + (psi / cs) . beta + offset,

minimizing the mean loss + curv * (alpha |w|^2 + alpha_conf |beta|^2) (``m``, ``s``: the training
rows' feature means and standard deviations; ``cs``: the confounder columns' RMS; ``curv``: the
null model's curvature, see :func:`~deconfoundlm.rewards.families.curvature`).

- Folds are assigned per row by a seeded hash of its global row number (:func:`hash_folds`): the
  same folds in memory and on a cluster, no shuffle, no gathering.
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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from deconfoundlm.rewards import families
from deconfoundlm.rewards.glm import AdditiveGLM

MAX_DENSE_CONF = 512  # wider confounder designs (thousands of one-hot levels) use the L-BFGS path
CHUNK_ROWS = 16_384
CACHE_BYTES = 1 << 30  # in memory, keep the float64 design between passes up to this size
TOL = 1e-9  # largest Newton step (standardized coefficients) at convergence of the returned model
PATH_TOL = 1e-6  # the same along the penalty path (held-out deviances to ~1e-12 relative)
MAX_ITER = 200
REFRESH_RATIO = 0.25  # refresh a model's Hessian when its step shrank by less than this
OWN_RATIO = 0.5  # ... and give it its own when, after a shared refresh, it shrank by less than this
_CONSTANT = 1e-20  # a feature whose variance is below this share of its mean square is constant


# -- folds ------------------------------------------------------------------------------------
def _splitmix(rows: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of (global row number, seed): a uniform 64-bit hash per row."""
    with np.errstate(over="ignore"):
        x = np.asarray(rows, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def hash_folds(rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold (0..k-1, k at most 32,767) of each global row number: splitmix64 of (row, seed)
    modulo k."""
    if not 1 <= k <= np.iinfo(np.int16).max:
        raise ValueError(f"hash_folds: k={k} folds (1..32767)")
    return (_splitmix(rows, seed) % np.uint64(k)).astype(np.int16)


def hash_sample(rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whether each global row number is in a seeded sample of about ``fraction`` of the rows
    (the same rows however the log is partitioned)."""
    threshold = np.uint64(min(max(fraction, 0.0), 1.0) * float(2**53)) << np.uint64(11)
    picked = _splitmix(rows, seed) < threshold
    return picked | (fraction >= 1.0)


DIAGNOSTIC_ROWS = 50_000  # size of the seeded sample the diagnostics of a large log use


def diagnostic_sample(rows: np.ndarray, n_rows: int, size: int, seed: int) -> np.ndarray:
    """Whether each global row number of an ``n_rows``-row log is in the seeded diagnostic
    sample of about ``size`` rows: the same rows in memory and on a cluster."""
    return hash_sample(rows, size / max(n_rows, 1), seed + 7919)


# -- blocks -----------------------------------------------------------------------------------
@dataclass
class Block:
    """Rows of a log as the solver reads them: text features, the dense confounder design (or
    None), the packed targets [outcome, trials, weight, offset] and each row's fold."""

    phi: np.ndarray
    psi: np.ndarray | None
    targets: np.ndarray
    fold: np.ndarray
    cache: dict | None = None  # the float64 design, kept between passes when memory allows

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
                 fold: np.ndarray, chunk: int = CHUNK_ROWS, cache_bytes: int = CACHE_BYTES) -> None:
        self.phi, self.targets, self.fold, self.chunk = phi, np.asarray(targets, float), fold, chunk
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
            psi = psi.toarray() if sp.issparse(psi) else np.asarray(psi, dtype=np.float64)
        return Block(self.phi[sl], psi, self.targets[sl], self.fold[sl])

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
def _design(block: Block, center: np.ndarray, use_conf: bool) -> np.ndarray:
    """[1, phi - center, psi] in float64 (from the block's cache when it keeps one)."""
    key = (center.tobytes(), use_conf)
    if block.cache is not None and key in block.cache:
        return block.cache[key]
    n = len(block)
    cols = [np.ones((n, 1)), np.asarray(block.phi, dtype=np.float64) - center]
    if use_conf and block.psi is not None:
        cols.append(np.asarray(block.psi, dtype=np.float64))
    a = np.hstack(cols)
    if block.cache is not None:
        block.cache.clear()
        block.cache[key] = a
    return a


def _pilot(block: Block) -> dict[str, np.ndarray]:
    y, _, w, _ = block.targets.T
    return {"n": np.array([len(block)], float), "sum_phi": np.asarray(block.phi, np.float64).sum(0),
            "sw": np.array([w.sum()]), "swy": np.array([(w * y).sum()])}


def _fold_matrix(fold: np.ndarray, k: int) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(len(fold)), (fold.astype(np.int64), np.arange(len(fold)))), shape=(k, len(fold)))


def _moments(block: Block, k: int, center: np.ndarray, y0: float, use_conf: bool) -> dict[str, np.ndarray]:
    """Per-fold row counts, centered feature sums and squares, confounder squares, and the
    weighted outcome sums behind each training set's null model and curvature."""
    F = _fold_matrix(block.fold, k)
    x = np.asarray(block.phi, dtype=np.float64) - center
    y, n, w, off = block.targets.T
    yc = y - y0
    out = {
        "n": np.asarray(F.sum(1)).ravel(),
        "sum_x": F @ x, "sum_x2": F @ (x * x),
        "sw": F @ w, "swy": F @ (w * yc), "swy2": F @ (w * yc * yc), "swn": F @ (w * n),
        "sw_resid": F @ (w * (yc - off)),
    }
    if use_conf and block.psi is not None:
        out["sum_c2"] = F @ (block.psi * block.psi)
    return out


def _gram(block: Block, k: int, center: np.ndarray, y0: float, family: str, use_conf: bool) -> dict[str, np.ndarray]:
    """Per-fold weighted Gram matrices of [1, phi - center, psi] (weights w for gaussian, w n
    otherwise); for gaussian also the cross-products with the outcome (less offset and y0)."""
    a = _design(block, center, use_conf)
    y, n, w, off = block.targets.T
    u = w if family == "gaussian" else w * n
    gram = np.zeros((k, a.shape[1], a.shape[1]))
    cross = np.zeros((k, a.shape[1]))
    tt = np.zeros(k)
    t = y - off - y0
    for f in np.unique(block.fold):
        rows = block.fold == f
        af = a[rows]
        gram[f] = af.T @ (af * u[rows, None])
        if family == "gaussian":
            cross[f] = af.T @ (w[rows] * t[rows])
            tt[f] = np.sum(w[rows] * t[rows] ** 2)
    return {"gram": gram, "cross": cross, "tt": tt}


def _eta_terms(family: str, eta: np.ndarray, y: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-row loss, d loss / d eta and d^2 loss / d eta^2 (unweighted)."""
    if family == "gaussian":
        r = eta - y
        return 0.5 * r * r, r, np.ones_like(eta)
    if family == "poisson":
        mu = n * np.exp(np.minimum(eta, families.MAX_ETA))
        return mu - y * eta, mu - y, mu
    p = 0.5 * (1.0 + np.tanh(0.5 * eta))  # a logistic that never overflows
    softplus = np.logaddexp(0.0, eta)
    return n * softplus - y * eta, n * p - y, n * p * (1 - p)


def _newton_pass(block: Block, center: np.ndarray, family: str, use_conf: bool, theta: np.ndarray,
                 excluded: np.ndarray, k: int, shared: bool, own: np.ndarray) -> dict[str, np.ndarray]:
    """For models m (raw coefficients ``theta[m]`` on [1, phi - center, psi]) each trained on the
    rows outside fold ``excluded[m]`` (-1: all rows; the last model): training loss and gradient
    sums and held-out deviance sums. With ``shared``: per-fold Gram matrices weighted by the
    loss's curvature at the last model (a model's Hessian, approximately, is their sum outside
    its fold: one n k^2 product for all models); for the models flagged in ``own``: their exact
    Hessians at their own coefficients."""
    a = _design(block, center, use_conf)
    y, n, w, off = block.targets.T
    eta = a @ theta.T + off[:, None]
    loss, d1, d2 = _eta_terms(family, eta, y[:, None], n[:, None])
    train = block.fold[:, None] != excluded[None, :]
    wt = w[:, None] * train
    held = w[:, None] * ~train
    out = {"loss": (wt * loss).sum(0), "grad": (a.T @ (wt * d1)).T,
           "heldout": (held * families.unit_deviance(family, eta, y[:, None], n[:, None])).sum(0)}
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


def _sandwich(block: Block, center: np.ndarray, family: str, use_conf: bool, theta: np.ndarray) -> dict[str, np.ndarray]:
    """Bread and meat sums of the sandwich at raw coefficients ``theta`` (all rows), the sum of
    the text term (for the reward's center) and the loss's normalizers."""
    a = _design(block, center, use_conf)
    y, n, w, off = block.targets.T
    _, d1, d2 = _eta_terms(family, a @ theta + off, y, n)
    r = w * d1
    d = block.phi.shape[1]
    return {"bread": a.T @ (a * (w * d2)[:, None]), "meat": a.T @ (a * (r * r)[:, None]),
            "text_sum": np.array([np.sum(a[:, 1 : 1 + d] @ theta[1 : 1 + d])]),
            "n": np.array([float(len(block))]), "sw": np.array([w.sum()]), "swn": np.array([(w * n).sum()])}


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
    scale = np.where(var > _CONSTANT * mean_sq, np.sqrt(var), 1.0)
    if n < 2:
        scale = np.ones_like(scale)
    if n_conf:
        rms = np.sqrt(total("sum_c2") / n)
        conf_scale = np.where(rms > 0, rms, 1.0)
    else:
        conf_scale = np.zeros(0)
    sw, swy, swy2, swn = (float(total(k)) for k in ("sw", "swy", "swy2", "swn"))
    if family == "gaussian":
        norm = sw
        curv = (swy2 / sw - (swy / sw) ** 2) or 1.0
        null = float(total("sw_resid")) / sw
    elif family == "poisson":
        norm = sw
        curv = float(np.clip(swy / sw, 1e-6, None))
        null = float(np.log(max(swy / swn, 1e-12)))
    else:
        norm = swn
        p = swy / swn
        curv = float(np.clip(p * (1 - p), 1e-6, None))
        pc = float(np.clip(p, 1e-6, 1 - 1e-6))
        null = float(np.log(pc / (1 - pc)))
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


def fit_path(blocks: Blocks, family: str, alphas: Sequence[float], cv: int, alpha_conf: float = 1e-4,
             use_conf: bool = True) -> PathFit:
    """Choose alpha by held-out deviance over the blocks' ``cv`` folds and return the all-rows
    model at it (see the module docstring). ``alphas`` with one value: no cross-validation."""
    use_conf = use_conf and blocks.n_conf > 0
    n_conf = blocks.n_conf if use_conf else 0
    d = blocks.n_text
    pilot = blocks.map_reduce(_pilot)
    center = pilot["sum_phi"] / pilot["n"][0]
    y0 = float(pilot["swy"][0] / pilot["sw"][0]) if family == "gaussian" else 0.0
    mom = blocks.map_reduce(_moments, cv, center, y0, use_conf)
    n_all = float(mom["n"].sum())
    folds = [f for f in range(cv) if mom["n"][f] > 0 and n_all - mom["n"][f] >= 2] if len(alphas) > 1 else []
    excluded = np.array([*folds, -1])
    trains = [_training_set(mom, int(e), center, family, n_conf) for e in excluded]
    gram = blocks.map_reduce(_gram, cv, center, y0, family, use_conf)
    alphas_desc = sorted((float(a) for a in alphas), reverse=True)
    if family == "gaussian":
        thetas, heldout = _gaussian_path(gram, mom, trains, excluded, alphas_desc, alpha_conf, d, n_conf, y0)
    else:
        thetas, heldout = _newton_path(blocks, gram, mom, trains, excluded, alphas_desc, alpha_conf, d, n_conf,
                                       family, center, use_conf)
    cv_table = {a: float(np.mean(h)) for a, h in zip(alphas_desc, heldout, strict=True)} if folds else {}
    best = min(range(len(alphas_desc)), key=lambda i: (cv_table[alphas_desc[i]], -alphas_desc[i])) if folds else 0
    alpha = alphas_desc[best]
    return PathFit(thetas[best][-1], alpha, cv_table.get(alpha, float("nan")), trains[-1], center, cv_table)


def _train_gram(gram: dict[str, np.ndarray], e: int, key: str) -> np.ndarray:
    total = gram[key].sum(0)
    return total - gram[key][e] if e >= 0 else total


def _heldout_norm(mom: dict[str, np.ndarray], e: int, family: str) -> float:
    return float(mom["swn"][e] if family in ("binomial", "bernoulli") else mom["sw"][e])


def _gaussian_path(gram, mom, trains, excluded, alphas_desc, alpha_conf, d, n_conf, y0):
    thetas: list[list[np.ndarray]] = []
    heldout: list[list[float]] = []
    for alpha in alphas_desc:
        pen = _penalty(d, n_conf, alpha, alpha_conf)
        row_t, row_h = [], []
        for e, tr in zip(excluded, trains, strict=True):
            T = tr.transform
            G = T.T @ _train_gram(gram, int(e), "gram") @ T / tr.norm
            b = T.T @ _train_gram(gram, int(e), "cross") / tr.norm
            theta = la.solve(G + np.diag(2 * tr.curv * pen), b, assume_a="pos")
            if e >= 0:  # held-out deviance from the fold's own sums (fitted on y - offset - y0)
                raw = T @ theta
                dev = (gram["tt"][e] - 2 * raw @ gram["cross"][e] + raw @ gram["gram"][e] @ raw)
                row_h.append(float(max(dev, 0.0)) / _heldout_norm(mom, int(e), "gaussian"))
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
    for alpha in alphas_desc:
        h = solver.solve(alpha, np.ones(M, bool), PATH_TOL)
        thetas.append([t.copy() for t in solver.theta])
        heldout.append([float(h[m]) for m in range(M) if excluded[m] >= 0])
    folds = [m for m in range(M) if excluded[m] >= 0]
    cv_table = [float(np.mean(h)) for h in heldout] if folds else [0.0] * len(alphas_desc)
    best = min(range(len(alphas_desc)), key=lambda i: (cv_table[i], -alphas_desc[i]))
    solver.theta = np.stack(thetas[best])
    only_all = np.zeros(M, bool)
    only_all[-1] = True
    solver.solve(alphas_desc[best], only_all, TOL)
    thetas[best][-1] = solver.theta[-1].copy()
    return thetas, heldout


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
        c0 = [float(np.exp(tr.null_eta)) if family == "poisson" else tr.curv for tr in trains]
        self.hess = [_model_hessian(gram["gram"], tr, int(e), c / tr.norm)
                     for tr, e, c in zip(trains, excluded, c0, strict=True)]
        self.want = np.zeros(M, bool)  # a refresh is due
        self.own = np.zeros(M, bool)  # the model's Hessian is computed at its own coefficients
        self.shared_since = np.zeros(M, bool)  # a shared refresh came since its last request

    def solve(self, alpha: float, active: np.ndarray, tol: float) -> np.ndarray:
        """Minimize the ``active`` models' objectives at ``alpha`` from their current
        coefficients, one pass over the blocks per step; returns held-out deviances."""
        trains, excluded, theta = self.trains, self.excluded, self.theta
        M = len(trains)
        pens = [2 * tr.curv * _penalty(self.d, self.n_conf, alpha, self.alpha_conf) for tr in trains]
        factors = [_cholesky(h + np.diag(p)) for h, p in zip(self.hess, pens, strict=True)]
        done = ~active
        self.shared_since[:] = False
        last_step = np.full(M, np.inf)
        prev_obj = np.full(M, np.inf)
        prev_theta = theta.copy()
        heldout = np.zeros(M)
        for _ in range(MAX_ITER):
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
                    self.hess[m] = trains[m].transform.T @ res["own"][j] @ trains[m].transform / trains[m].norm
                    factors[m] = _cholesky(self.hess[m] + np.diag(pens[m]))
                    self.want[m] = False
                    last_step[m] = np.inf  # judge the new Hessian on two steps of its own
            if shared and (ok[-1] or done[-1]):
                for m in np.flatnonzero(~self.own):
                    self.hess[m] = _model_hessian(res["hess"], trains[m], int(excluded[m]), 1.0 / trains[m].norm)
                    factors[m] = _cholesky(self.hess[m] + np.diag(pens[m]))
                last_step[self.want & ~self.own] = np.inf
                self.shared_since[self.want & ~self.own] = True
                self.want[~self.own] = False
            for m in np.flatnonzero(~done):
                tr = trains[m]
                if not ok[m]:  # overshot: halve the step
                    theta[m] = 0.5 * (theta[m] + prev_theta[m])
                    continue
                grad = tr.transform.T @ res["grad"][m] / tr.norm + pens[m] * theta[m]
                step = -la.cho_solve(factors[m], grad)
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
        return heldout


def _cholesky(h: np.ndarray):
    """Cholesky factor; a matrix that rounding left barely indefinite gets a small ridge."""
    jitter = 0.0
    for _ in range(8):
        try:
            return la.cho_factor(h + jitter * np.eye(len(h)))
        except la.LinAlgError:
            jitter = max(jitter * 100, 1e-12 * float(np.abs(np.diag(h)).max() or 1.0))
    return la.cho_factor(h + jitter * np.eye(len(h)))


def _model_hessian(fold_grams: np.ndarray, tr: _Train, e: int, factor: float) -> np.ndarray:
    """A model's Hessian in its standardized coordinates from per-fold curvature Grams."""
    total = fold_grams.sum(0)
    h = (total - fold_grams[e]) if e >= 0 else total
    return tr.transform.T @ h @ tr.transform * factor


def to_glm(fit: PathFit, family: str, alpha_conf: float = 1e-4, seed: int = 0) -> AdditiveGLM:
    """The fitted :class:`AdditiveGLM` of a path fit (its all-rows model at the chosen alpha)."""
    tr, d = fit.train, len(fit.train.mean)
    return AdditiveGLM.from_standardized(
        family, alpha=fit.alpha, alpha_conf=alpha_conf, seed=seed, x_mean=tr.mean, x_scale=tr.scale,
        conf_scale=tr.conf_scale, bias=float(fit.theta[0]), weight=fit.theta[1 : 1 + d], conf=fit.theta[1 + d :])


def sandwich_sums(blocks: Blocks, glm: AdditiveGLM) -> dict[str, np.ndarray]:
    """The sandwich's bread and meat of a fitted linear GLM in its standardized coordinates
    [1, (phi - m) / s, psi / cs] (unnormalized sums over all rows), the mean of its text term,
    the row count and the loss's normalizer."""
    net = glm.net_
    mean = net.x_mean.detach().double().numpy()
    scale = net.x_scale.detach().double().numpy()
    conf_scale = net.conf_scale.detach().double().numpy()
    use_conf = conf_scale.size > 0 and blocks.n_conf > 0
    d, q = len(mean), (len(conf_scale) if use_conf else 0)
    theta = np.concatenate([[float(net.bias.detach())], net.text.weight.detach()[0].double().numpy(),
                            net.conf.detach().double().numpy() if use_conf else np.zeros(0)])
    T = np.zeros((1 + d + q, 1 + d + q))  # std -> raw coordinates centered at the feature mean
    T[0, 0] = 1.0
    T[np.arange(1, 1 + d), np.arange(1, 1 + d)] = 1.0 / scale
    if q:
        T[np.arange(1 + d, 1 + d + q), np.arange(1 + d, 1 + d + q)] = 1.0 / conf_scale
    s = blocks.map_reduce(_sandwich, mean, glm.family, use_conf, T @ theta)
    norm = float(s["swn"][0] if glm.family in ("binomial", "bernoulli") else s["sw"][0])
    return {"bread": T.T @ s["bread"] @ T, "meat": T.T @ s["meat"] @ T, "norm": norm, "n": float(s["n"][0]),
            "text_mean": float(s["text_sum"][0] / s["n"][0]) - float(mean @ (theta[1 : 1 + d] / scale)) * 0.0}
