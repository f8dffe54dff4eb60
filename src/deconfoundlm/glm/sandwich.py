"""Standard errors of a linear reward, from the fitted penalized GLM (sandwich).

For eta = b + ((phi - m) / s) . w + psi~ . beta (the linear text head plus the additive
confounder term), with theta = (b, w, beta) minimizing the mean loss plus its ridge penalty:

    V(theta) = H^-1 M H^-1

H is the Hessian of the penalized mean loss at the optimum (the penalty included), M the
covariance of the per-row score contributions, or of their per-cluster sums when a group column
is given (rows of one A/B test, author, ...), with the small-sample corrections of
:func:`_text_block`. The
confounder coefficients and the intercept are estimated jointly, so their uncertainty flows into
the text block. The reward's standard error for a text x is sqrt(c' V_w c) with
c = phi(x) - mean phi over the training texts (the reward is centered there).

What it covers: sampling noise of the log given the fitted model, heteroskedasticity, and
within-cluster correlation with a group. What it does not cover: the choice of the penalty by
CV and the ridge's shrinkage bias (the interval is centered on the shrunk estimate), the
encoder's own error (frozen features are taken as given), and unobserved confounding (see the
sensitivity analysis).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from deconfoundlm.errors import UserError
from deconfoundlm.glm.families import get_family
from deconfoundlm.glm.linalg import solve_psd
from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.glm.path import Blocks, InMemoryBlocks, sandwich_pass
from deconfoundlm.glm.targets import unpack
from deconfoundlm.options import label

SE_METHOD = "sandwich"


def sandwich_sums(blocks: Blocks, glm: AdditiveGLM, n_groups: int = 0) -> dict[str, np.ndarray]:
    """The sandwich's bread and meat of a fitted linear GLM in its standardized coordinates
    [1, (phi - m) / s, psi / cs] (unnormalized sums over all rows), the mean of its text term,
    the row count and the loss's normalizer. With ``n_groups`` (blocks carrying cluster codes):
    the per-cluster score sums (``scores``, G x p) instead of the meat."""
    c = glm.coefs_
    mean, scale, conf_scale = c.x_mean, c.x_scale, c.conf_scale
    use_conf = conf_scale.size > 0 and blocks.n_conf > 0
    d, q = len(mean), (len(conf_scale) if use_conf else 0)
    theta = np.concatenate([[c.bias], c.weight, c.conf if use_conf else np.zeros(0)])
    T = np.zeros((1 + d + q, 1 + d + q))  # std -> raw coordinates centered at the feature mean
    T[0, 0] = 1.0
    T[np.arange(1, 1 + d), np.arange(1, 1 + d)] = 1.0 / scale
    if q:
        T[np.arange(1 + d, 1 + d + q), np.arange(1 + d, 1 + d + q)] = 1.0 / conf_scale
    s = blocks.map_reduce(sandwich_pass, mean, glm.family, use_conf, T @ theta, n_groups)
    norm = get_family(glm.family).normaliser(float(s["sw"][0]), float(s["swn"][0]))
    out = {"bread": T.T @ s["bread"] @ T, "norm": norm, "n": float(s["n"][0]),
           "text_mean": float(s["text_sum"][0] / s["n"][0])}
    if n_groups:
        out["scores"] = s["scores"] @ T
    else:
        out["meat"] = T.T @ s["meat"] @ T
    return out


def text_covariance(glm: AdditiveGLM, phi: np.ndarray, psi: sp.spmatrix | None, targets: np.ndarray,
                    groups: np.ndarray | None = None) -> np.ndarray:
    """Covariance of the text coefficients on the raw feature scale (d x d), see the module;
    cluster-robust with ``groups`` (one label per row)."""
    codes, n_groups = None, 0
    if groups is not None:
        _, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        n_groups = int(codes.max()) + 1
        if n_groups < 2:
            raise UserError(f"{label('group')}: the log has {n_groups} cluster; cluster-robust standard errors need at least "
                            "2 clusters (and a few dozen for a sound sandwich)")
    blocks = InMemoryBlocks(phi, psi if glm.d_conf() else None, targets, np.zeros(len(phi), np.int16),
                            groups=codes)
    curv = get_family(glm.family).curvature_of(*unpack(targets)[:3])
    return covariance_from_sums(glm, sandwich_sums(blocks, glm, n_groups), curv)


def covariance_from_sums(glm: AdditiveGLM, sums: dict, curv: float) -> np.ndarray:
    """The text block of the sandwich from the bread and meat sums of :func:`sandwich_sums`, on
    the raw feature scale."""
    scores = sums["scores"] / sums["norm"] if "scores" in sums else None
    meat = None if scores is not None else sums["meat"] / sums["norm"] ** 2
    return _text_block(glm, sums["bread"] / sums["norm"], meat, scores, sums["n"], curv)


def _text_block(glm: AdditiveGLM, bread: np.ndarray, meat: np.ndarray | None, cluster_scores: np.ndarray | None,
                n: float, curv: float) -> np.ndarray:
    """V = H^-1 M H^-1 with H = bread + penalty, and its text block on the raw feature scale.

    Small-sample corrections: n / (n - edf) without clusters (HC1), G / (G - 1) (n - 1) / (n - edf)
    with G clusters (CR1; with one row per cluster it equals HC1), where edf = tr(H^-1 bread) is
    the penalized fit's effective number of parameters: it stays below n when the model has as
    many parameters as rows or more, where n - p would not (that multiplied the unclustered
    errors by about sqrt(n) on small logs)."""
    scale = glm.coefs_.x_scale
    d = len(scale)
    k = bread.shape[0] - 1 - d
    H = bread + np.diag(2 * curv * np.concatenate([[0.0], np.full(d, glm.alpha), np.full(k, glm.alpha_conf)]))
    edf = float(np.trace(solve_psd(H, bread)))
    if cluster_scores is None:
        factor = n / max(n - edf, 1.0)
    else:
        g = len(cluster_scores)
        meat = cluster_scores.T @ cluster_scores
        factor = g / max(g - 1, 1) * (n - 1) / max(n - edf, 1.0)
    Hinv = np.linalg.pinv(H, hermitian=True)
    V = Hinv @ (meat * factor) @ Hinv
    Vw = V[1 : 1 + d, 1 : 1 + d] / np.outer(scale, scale)
    return (Vw + Vw.T) / 2


def reward_se(cov: np.ndarray, feature_mean: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Standard error of r(x) for each row of ``phi`` (the reward is centered at feature_mean)."""
    c = np.asarray(phi, dtype=np.float64) - feature_mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", c, cov, c), 0.0))


def difference_se(cov: np.ndarray, phi_a: np.ndarray, phi_b: np.ndarray) -> np.ndarray:
    """Standard error of r(a) - r(b), row by row."""
    c = np.asarray(phi_a, dtype=np.float64) - np.asarray(phi_b, dtype=np.float64)
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", c, cov, c), 0.0))
