"""Invariance penalties of the counterfactual-invariance baselines (pure tensor functions).

- ODIN (Chen et al. 2024, arXiv 2402.07319): correlation targets and head orthogonality.
- CRM (Wang et al. 2025, arXiv 2501.09620): MMD between reward distributions across bins.
"""

from __future__ import annotations

import torch


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors (0 when either is constant)."""
    a = a - a.mean()
    b = b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + eps)


def odin_correlation_loss(r_q: torch.Tensor, r_c: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(1 - corr(r_C, c)) + |corr(r_Q, c)|: r_C should carry c, r_Q should not."""
    return (1.0 - pearson(r_c, c)) + pearson(r_q, c).abs()


def orthogonality_loss(w_q: torch.Tensor, w_c: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """|w_Q . w_C| on the normalized head weights."""
    return (w_q.flatten() @ w_c.flatten()).abs() / (w_q.norm() * w_c.norm() + eps)


def median_bandwidth(r: torch.Tensor, max_points: int = 64) -> torch.Tensor:
    """Median heuristic: the median pairwise distance of the (detached) rewards, over the
    first ``max_points`` of them (batches arrive in random order; this keeps it cheap)."""
    r = r.detach()[:max_points]
    d = (r[:, None] - r[None, :]).abs()
    med = d[d > 0].median() if (d > 0).any() else torch.tensor(1.0, dtype=r.dtype)
    return med.clamp_min(1e-6)


def mmd_penalty(r: torch.Tensor, bins: torch.Tensor, min_per_bin: int = 2) -> torch.Tensor:
    """Sum over pairs of bins present in the batch of the squared MMD between their rewards.

    Vectorized: with K the batch kernel matrix and M the column-normalized bin indicators,
    S = M^T K M holds every within/between-bin kernel mean, and
    sum_{a<b} (S_aa + S_bb - 2 S_ab) = (B - 1) tr(S) - (sum(S) - tr(S)).
    """
    sigma = median_bandwidth(r)
    levels, codes = torch.unique(bins, return_inverse=True)
    onehot = torch.nn.functional.one_hot(codes, len(levels)).to(r.dtype)
    counts = onehot.sum(0)
    onehot = onehot[:, counts >= min_per_bin]
    counts = counts[counts >= min_per_bin]
    n_bins = onehot.shape[1]
    if n_bins < 2:
        return r.new_zeros(())
    m = onehot / counts
    k = torch.exp(-((r[:, None] - r[None, :]) ** 2) / (2 * sigma**2))
    s = m.T @ k @ m
    tr = torch.diagonal(s).sum()
    return (n_bins - 1) * tr - (s.sum() - tr)
