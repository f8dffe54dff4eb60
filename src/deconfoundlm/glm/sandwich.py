"""Standard errors of a linear reward, from the fitted penalized GLM (sandwich).

For eta = b + ((phi - m) / s) . w + psi~ . beta (the linear text head plus the additive
confounder term), with theta = (b, w, beta) minimizing the mean loss plus its ridge penalty:

    V(theta) = H^-1 M H^-1

H is the Hessian of the penalized mean loss at the optimum (the penalty included), M the
covariance of the per-row score contributions (HC0), or of their per-cluster sums with the
G / (G - 1) correction when a group column is given (rows of one A/B test, author, ...). The
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

from deconfoundlm.glm.families import get_family
from deconfoundlm.glm.linalg import solve_psd
from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.glm.path import MAX_DENSE_CONF, Blocks, InMemoryBlocks, sandwich_pass

SE_METHOD = "sandwich"


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
    s = blocks.map_reduce(sandwich_pass, mean, glm.family, use_conf, T @ theta)
    norm = get_family(glm.family).normaliser(float(s["sw"][0]), float(s["swn"][0]))
    return {"bread": T.T @ s["bread"] @ T, "meat": T.T @ s["meat"] @ T, "norm": norm, "n": float(s["n"][0]),
            "text_mean": float(s["text_sum"][0] / s["n"][0])}


def _blocks(Z: np.ndarray, P: sp.csr_matrix | None, u: np.ndarray) -> np.ndarray:
    """[Z P]' diag(u) [Z P] with Z dense and P sparse, without densifying P row-wise."""
    uz = Z * u[:, None]
    zz = Z.T @ uz
    if P is None or P.shape[1] == 0:
        return zz
    zp = np.asarray((P.T @ uz).T)
    pp = np.asarray((P.T @ P.multiply(u[:, None])).todense())
    return np.block([[zz, zp], [zp.T, pp]])


def text_covariance(glm: AdditiveGLM, phi: np.ndarray, psi: sp.spmatrix | None, targets: np.ndarray,
                    groups: np.ndarray | None = None, chunk: int = 50_000) -> np.ndarray:
    """Covariance of the text coefficients on the raw feature scale (d x d), see the module."""
    if groups is None and (psi is None or psi.shape[1] <= MAX_DENSE_CONF):
        blocks = InMemoryBlocks(phi, psi if glm.d_conf() else None, targets, np.zeros(len(phi), np.int16))
        curv = get_family(glm.family).curvature_of(targets[:, 0], targets[:, 1], targets[:, 2])
        return covariance_from_sums(glm, sandwich_sums(blocks, glm), curv)
    net = glm.net_
    family = glm.family
    y, n, w, off = (targets[:, j] for j in range(4))
    mean_x = net.x_mean.detach().double().numpy()
    scale = net.x_scale.detach().double().numpy()
    has_conf = psi is not None and glm.d_conf() > 0
    conf_scale = net.conf_scale.detach().double().numpy() if has_conf else np.zeros(0)
    P_all = sp.csr_matrix(psi) @ sp.diags(1.0 / conf_scale) if has_conf else None
    d, k = phi.shape[1], (P_all.shape[1] if has_conf else 0)
    p = 1 + d + k
    fam = get_family(family)
    norm = fam.normaliser(float(np.sum(w)), float(np.sum(w * n)))
    curv = fam.curvature_of(y, n, w)
    H = np.zeros((p, p))
    M = np.zeros((p, p))
    if groups is not None:
        _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        S = np.zeros((inverse.max() + 1, p))
    else:
        S = None
    for i in range(0, len(phi), chunk):
        sl = slice(i, i + chunk)
        Z = np.hstack([np.ones((len(phi[sl]), 1)), (np.asarray(phi[sl], dtype=np.float64) - mean_x) / scale])
        P = P_all[sl] if has_conf else None
        eta = glm.predict(np.asarray(phi[sl])) if not has_conf else glm.predict(
            sp.hstack([sp.csr_matrix(phi[sl]), psi[sl]], format="csr"))
        _, resid, v = fam.terms(eta + off[sl], y[sl], n[sl])  # mean - y and the variance
        r = w[sl] * resid / norm
        H += _blocks(Z, P, w[sl] * v / norm)
        if groups is None:
            M += _blocks(Z, P, r * r)
        else:
            C = sp.csr_matrix((np.ones(len(r)), (inverse[sl], np.arange(len(r)))), shape=(S.shape[0], len(r)))
            S[:, : 1 + d] += C @ (Z * r[:, None])
            if has_conf:
                S[:, 1 + d :] += np.asarray((C @ P.multiply(r[:, None])).todense())
    return _text_block(glm, H, M, S if groups is not None else None, len(phi), curv)


def covariance_from_sums(glm: AdditiveGLM, sums: dict, curv: float) -> np.ndarray:
    """The text block of the sandwich from the bread and meat sums of :func:`sandwich_sums`, on
    the raw feature scale."""
    return _text_block(glm, sums["bread"] / sums["norm"], sums["meat"] / sums["norm"] ** 2, None, sums["n"], curv)


def _text_block(glm: AdditiveGLM, bread: np.ndarray, meat: np.ndarray, cluster_scores: np.ndarray | None,
                n: float, curv: float) -> np.ndarray:
    """V = H^-1 M H^-1 with H = bread + penalty, and its text block on the raw feature scale.

    Small-sample correction (one rule for both): (n - 1) / (n - edf), times G / (G - 1) with G
    clusters (Stata's CR1; with one row per cluster it equals the unclustered HC1), where edf =
    tr(H^-1 bread) is the penalized fit's effective number of parameters: it stays below n when the
    model has as many parameters as rows or more, where n - p would not."""
    scale = glm.net_.x_scale.detach().double().numpy()
    d = len(scale)
    k = bread.shape[0] - 1 - d
    H = bread + np.diag(2 * curv * np.concatenate([[0.0], np.full(d, glm.alpha), np.full(k, glm.alpha_conf)]))
    edf = float(np.trace(solve_psd(H, bread)))
    factor = (n - 1) / max(n - edf, 1.0)
    if cluster_scores is not None:
        g = len(cluster_scores)
        meat = cluster_scores.T @ cluster_scores * (g / max(g - 1, 1))
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
