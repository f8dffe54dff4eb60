"""ODIN and CRM penalties on small tensors with known values."""

import itertools
import math

import torch

from deconfoundlm.rewards.penalties import (
    gaussian_mmd2,
    median_bandwidth,
    mmd_penalty,
    odin_correlation_loss,
    orthogonality_loss,
    pearson,
)


def test_pearson_known_values():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert math.isclose(float(pearson(a, 2 * a + 1)), 1.0, abs_tol=1e-6)
    assert math.isclose(float(pearson(a, -a)), -1.0, abs_tol=1e-6)
    assert math.isclose(float(pearson(torch.tensor([1.0, -1.0, 1.0, -1.0]), torch.tensor([1.0, 1.0, -1.0, -1.0]))), 0.0, abs_tol=1e-6)


def test_odin_correlation_loss():
    c = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # r_C tracks c exactly and r_Q is uncorrelated with c: zero loss.
    assert math.isclose(float(odin_correlation_loss(torch.tensor([1.0, -1.0, -1.0, 1.0]), 3 * c, c)), 0.0, abs_tol=1e-6)
    # r_Q anti-correlated with c and r_C anti-correlated too: (1 - (-1)) + |-1| = 3.
    assert math.isclose(float(odin_correlation_loss(-c, -c, c)), 3.0, abs_tol=1e-6)


def test_orthogonality_loss():
    assert float(orthogonality_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 5.0]))) == 0.0
    assert math.isclose(float(orthogonality_loss(torch.tensor([2.0, 0.0]), torch.tensor([-3.0, 0.0]))), 1.0, abs_tol=1e-6)
    assert math.isclose(float(orthogonality_loss(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]))), 1 / math.sqrt(2), abs_tol=1e-6)


def test_gaussian_mmd_known_values():
    x = torch.tensor([0.0, 0.0])
    y = torch.tensor([1.0, 1.0])
    # Point masses at 0 and 1, sigma 1: k(0,0) + k(1,1) - 2 k(0,1) = 2 - 2 exp(-1/2).
    assert math.isclose(float(gaussian_mmd2(x, y, 1.0)), 2 - 2 * math.exp(-0.5), rel_tol=1e-6)
    assert float(gaussian_mmd2(x, x, 1.0)) == 0.0


def test_mmd_penalty_sums_pairs_of_bins():
    torch.manual_seed(0)
    r, bins = torch.randn(120), torch.randint(0, 3, (120,))
    sigma = median_bandwidth(r)
    expected = sum(gaussian_mmd2(r[bins == a], r[bins == b], sigma) for a, b in itertools.combinations(range(3), 2))
    assert math.isclose(float(mmd_penalty(r, bins)), float(expected), rel_tol=1e-4)
    # Identical distributions in every bin: no penalty; a single bin: none either.
    same = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert abs(float(mmd_penalty(same, torch.tensor([0, 0, 1, 1])))) < 1e-6
    assert float(mmd_penalty(r, torch.zeros(120))) == 0.0
