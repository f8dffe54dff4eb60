"""Each family's likelihood is written three ways (numpy per-row terms with two derivatives, the
torch loss the heads train on, the unit deviance the metrics report): they must be one function.
Per family: the torch loss is the weighted mean of the numpy loss; torch's gradient is the numpy
derivative; the derivatives match finite differences; deviance differences are twice the loss
differences; the derivative is mean - y (a canonical link)."""

import numpy as np
import pytest
import torch

from deconfoundlm.glm.families import FAMILIES, get_family


def draw(name: str, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    eta = rng.normal(0, 1.5, n)
    w = rng.uniform(0.5, 2.0, n)
    if name == "gaussian":
        return eta, rng.normal(0, 2, n), np.ones(n), w
    if name == "bernoulli":
        return eta, rng.integers(0, 2, n).astype(float), np.ones(n), w
    if name == "binomial":
        trials = rng.integers(1, 50, n).astype(float)
        return eta - 2, rng.binomial(trials.astype(int), 0.1).astype(float), trials, w
    exposure = rng.uniform(0.5, 3.0, n)  # poisson: n is the exposure
    return eta, rng.poisson(2.0, n).astype(float), exposure, w


@pytest.mark.parametrize("name", FAMILIES)
def test_the_torch_loss_is_the_mean_of_the_numpy_terms(name):
    fam = get_family(name)
    eta, y, n, w = draw(name)
    loss, grad, _ = fam.terms(eta, y, n)
    norm = fam.normaliser(w.sum(), w @ n)
    t = torch.tensor(eta, dtype=torch.float64, requires_grad=True)
    got = fam.loss(t, *(torch.tensor(a, dtype=torch.float64) for a in (y, n, w)))
    got.backward()
    assert got.item() == pytest.approx(float(w @ loss) / norm, rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(t.grad.numpy(), w * grad / norm, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("name", FAMILIES)
def test_the_derivatives_match_finite_differences(name):
    fam = get_family(name)
    eta, y, n, _ = draw(name, seed=1)
    h = 1e-5
    lo, hi = fam.terms(eta - h, y, n), fam.terms(eta + h, y, n)
    _, grad, hess = fam.terms(eta, y, n)
    np.testing.assert_allclose((hi[0] - lo[0]) / (2 * h), grad, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose((hi[1] - lo[1]) / (2 * h), hess, rtol=1e-6, atol=1e-7)
    assert (hess >= 0).all()  # convex in eta


@pytest.mark.parametrize("name", FAMILIES)
def test_deviance_is_twice_the_loss_up_to_a_constant(name):
    fam = get_family(name)
    eta, y, n, _ = draw(name, seed=2)
    other = eta + np.random.default_rng(3).normal(0, 1, len(eta))
    d_loss = fam.terms(other, y, n)[0] - fam.terms(eta, y, n)[0]
    d_dev = fam.unit_deviance(other, y, n) - fam.unit_deviance(eta, y, n)
    np.testing.assert_allclose(d_dev, 2 * d_loss, rtol=1e-8, atol=1e-9)
    assert (fam.unit_deviance(eta, y, n) >= -1e-12).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_the_link_is_canonical(name):
    """The derivative is mean - y, and the deviance is zero where the mean equals the outcome."""
    fam = get_family(name)
    eta, y, n, _ = draw(name, seed=4)
    np.testing.assert_allclose(fam.terms(eta, y, n)[1], fam.mean(eta, n) - y, rtol=1e-10, atol=1e-12)
    inside = (y > 0) & (y < n) if fam.per_trial or name == "bernoulli" else (y > 0 if name == "poisson" else y == y)
    if name == "bernoulli":
        return  # a 0/1 outcome is never a mean strictly inside (0, 1)
    saturated = fam.empirical_link(y[inside], n[inside]) if name == "gaussian" else (
        np.log(y[inside] / (n[inside] - y[inside])) if fam.per_trial else np.log(y[inside] / n[inside]))
    np.testing.assert_allclose(fam.unit_deviance(saturated, y[inside], n[inside]), 0, atol=1e-8)


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_names_its_link_and_the_mean_inverts_it(name):
    """The link is explicit: ``link_of`` undoes ``mean`` (per trial / unit of exposure)."""
    fam = get_family(name)
    eta, _, n, _ = draw(name)
    assert fam.link == {"gaussian": "identity", "bernoulli": "logit", "binomial": "logit", "poisson": "log"}[name]
    np.testing.assert_allclose(fam.link_of(fam.mean(eta, n) / n), eta, rtol=1e-9, atol=1e-9)


def test_the_configs_offer_the_families_that_exist():
    from deconfoundlm.configs import FAMILY_NAMES

    assert set(FAMILY_NAMES) == set(FAMILIES)
