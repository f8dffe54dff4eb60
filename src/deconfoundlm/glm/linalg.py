"""The one symmetric solve of the package: penalized normal equations and Newton systems.

Ridge-penalized GLM systems are positive definite in exact arithmetic, but an unpenalized
intercept next to a full one-hot, duplicated or constant features, a near-zero penalty scale or a
tiny fold make them singular to rounding. :func:`factor_psd` tries Cholesky, then Cholesky with a
small relative ridge, and finally falls back to a symmetric eigendecomposition that solves in the
least-squares sense on the well-determined eigenvalues (a minimum-norm solution): it never
raises on a finite matrix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.linalg as la

RCOND = 1e-12  # eigenvalues below this share of the largest are treated as zero


@dataclass
class PSDFactor:
    """A factorization of a symmetric positive semi-definite matrix; :meth:`solve` applies its
    (pseudo-)inverse."""

    cho: tuple[np.ndarray, bool] | None = None
    vecs: np.ndarray | None = None
    inv_vals: np.ndarray | None = None

    def solve(self, b: np.ndarray) -> np.ndarray:
        if self.cho is not None:
            # scipy's cho_solve without its finiteness check of the factor (finite: it factors a
            # finite matrix), which costs more than the solve at these sizes; the same LAPACK call.
            b = np.asarray(b, dtype=np.float64)
            if not np.isfinite(b).all():
                raise ValueError("factor_psd: the right-hand side has non-finite entries")
            if b.size == 0:
                return np.zeros(b.shape)
            c, lower = self.cho
            x, info = la.lapack.dpotrs(c, b, lower=lower)
            if info != 0:
                raise ValueError(f"illegal value in argument {-info} of LAPACK dpotrs")
            return x
        coef = self.vecs.T @ b
        return self.vecs @ (coef * self.inv_vals.reshape(-1, *([1] * (coef.ndim - 1))))


def factor_psd(h: np.ndarray) -> PSDFactor:
    """Factor ``h`` (symmetric, finite): see the module docstring. One BLAS thread: on a few
    cores a threaded factorization of these small matrices waits on its own threads (measured on
    2 CPUs: 2 ms single-threaded, up to 70 ms threaded)."""
    with _blas().limit(limits=1, user_api="blas"):
        return _factor(np.asarray(h, dtype=np.float64))


@functools.cache
def _blas():
    """One threadpoolctl controller for the process: making one scans the loaded libraries
    (about 2 ms, as much as the factorization it guards). numpy's and scipy's BLAS are loaded
    by this module's imports, so the controller made at the first factorization sees them."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _factor(h: np.ndarray) -> PSDFactor:
    if not np.isfinite(h).all():
        raise FloatingPointError("factor_psd: the matrix has non-finite entries")
    h = 0.5 * (h + h.T)
    scale = float(np.abs(np.diag(h)).max()) if h.size else 1.0
    scale = scale if scale > 0 else 1.0
    for jitter in (0.0, 1e-13 * scale, 1e-10 * scale):
        try:
            cho = la.cho_factor(h + jitter * np.eye(len(h)) if jitter else h, check_finite=False)
        except la.LinAlgError:
            continue
        if np.all(np.abs(np.diag(cho[0])) > np.sqrt(RCOND * scale)):  # well enough conditioned
            return PSDFactor(cho=cho)
    vals, vecs = np.linalg.eigh(h)
    keep = vals > RCOND * max(float(vals.max()), 0.0) if vals.size else vals.astype(bool)
    inv = np.where(keep, 1.0 / np.where(keep, vals, 1.0), 0.0)
    return PSDFactor(vecs=vecs, inv_vals=inv)


def solve_psd(h: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``h^-1 b`` for a symmetric positive semi-definite ``h`` (minimum-norm where singular)."""
    return factor_psd(h).solve(np.asarray(b, dtype=np.float64))
