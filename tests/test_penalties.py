"""ODIN and CRM penalties on small tensors with known values."""

import itertools
import math

import pytest
import torch

from deconfoundlm.rewards.penalties import (
    median_bandwidth,
    mmd_penalty,
    odin_correlation_loss,
    orthogonality_loss,
    pearson,
)


def gaussian_mmd2(a: torch.Tensor, b: torch.Tensor, sigma) -> torch.Tensor:
    """Reference for the vectorized penalty: the biased squared MMD between two 1-D samples,
    kernel exp(-d^2 / (2 sigma^2)), written from its definition."""

    def k(x, y):
        return torch.exp(-((x[:, None] - y[None, :]) ** 2) / (2 * sigma**2))

    return k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()


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


@pytest.mark.slow  # a grid of Adam fits
def test_invariance_weight_is_chosen_by_the_one_se_rule_and_recorded():
    from conftest import simulate

    from deconfoundlm.logs.roles import ConfounderSpec
    from deconfoundlm.rewards import make_estimator
    from deconfoundlm.rewards.invariance import INVARIANCE_WEIGHTS

    X, y, conf, trials, w = simulate("gaussian", n=1200)
    spec = [ConfounderSpec("c", "numeric")]
    for method in ("odin", "crm"):
        est = make_estimator(method, family="gaussian", cv=3, steps=60).fit(X, y, confounders=conf, specs=spec)
        table = {r["weight"]: r for r in est.weight_table_}
        assert set(table) == set(INVARIANCE_WEIGHTS) and est.invariance_weight_ in table
        best = min(table.values(), key=lambda r: r["cv_deviance"])
        # chosen: within one SE of the best CV deviance, and the largest such weight
        assert table[est.invariance_weight_]["cv_deviance"] <= best["cv_deviance"] + best["se"] + 1e-12
        assert all(r["cv_deviance"] > best["cv_deviance"] + best["se"] for wt, r in table.items()
                   if wt > est.invariance_weight_)
        fixed = make_estimator(method, family="gaussian", cv=3, steps=60, invariance_weight=10.0).fit(
            X, y, confounders=conf, specs=spec)
        assert fixed.invariance_weight_ == 10.0 and len(fixed.weight_table_) == 1


@pytest.mark.parametrize("extra,needle", [(["--method", "deconfound", "--invariance-weight", "1"], "odin or crm"),
                                          (["--method", "odin", "--invariance-weight", "0"], "--invariance-weight"),
                                          (["--method", "crm", "--invariance-weight", "nan"], "--invariance-weight")])
def test_invariance_weight_bad_input(tmp_path, upworthy_sample, extra, needle, capsys):
    from deconfoundlm.cli import main

    data = tmp_path / "log.csv"
    upworthy_sample.to_csv(data, index=False)
    code = main(["fit-reward", str(data), "--text", "headline", "--outcome", "clicks", "--confounder",
                 "test_week:time", "--encoder", "hashing", "--out", str(tmp_path / "m"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
