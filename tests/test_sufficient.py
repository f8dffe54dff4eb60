"""The sufficient-statistics solver: the same optimum and CV choice as GridSearchCV over L-BFGS,
folds by a seeded hash of the row number, CV on every row of large logs."""

import numpy as np
import pytest
import scipy.sparse as sp

from deconfoundlm.glm.folds import hash_folds
from deconfoundlm.glm.model import AdditiveGLM, pack_features
from deconfoundlm.glm.path import InMemoryBlocks, fit_path
from deconfoundlm.glm.selection import fit_cv, search_alpha
from deconfoundlm.glm.targets import pack_targets

ALPHAS = list(np.logspace(-4, 1, 6))


def _log(family: str, n: int = 3000, d: int = 12, q: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    phi = (rng.normal(size=(n, d)) + 0.3).astype(np.float32)
    psi = sp.csr_matrix(rng.normal(size=(n, q)))
    eta = phi @ (rng.normal(size=d) * 0.3) + psi @ np.full(q, 0.5) - 1
    trials = None
    if family == "gaussian":
        y = eta + rng.normal(size=n)
    elif family == "binomial":
        trials = rng.integers(1, 50, n).astype(float)
        y = rng.binomial(trials.astype(int), 1 / (1 + np.exp(-eta))).astype(float)
    elif family == "bernoulli":
        y = rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float)
    else:
        trials = rng.integers(1, 5, n).astype(float)
        y = rng.poisson(trials * np.exp(eta)).astype(float)
    return phi, psi, pack_targets(y, trials)


@pytest.mark.parametrize("family", ["gaussian", "binomial", "bernoulli", "poisson"])
def test_path_matches_gridsearch_over_lbfgs(family):
    phi, psi, targets = _log(family)
    fit = fit_path(InMemoryBlocks(phi, psi, targets, hash_folds(np.arange(len(phi)), 5, 0)), family, ALPHAS, 5)
    glm = AdditiveGLM.from_path(fit, family)
    ref = search_alpha(AdditiveGLM(family, n_text=phi.shape[1], tol=1e-12, max_iter=3000, solver="lbfgs"), pack_features(phi, psi),
                       targets, ALPHAS, 5, 0)
    X = pack_features(phi, psi)
    assert fit.alpha == ref.best_params_["alpha"]
    assert fit.cv_deviance == pytest.approx(-ref.best_score_, rel=1e-6)
    for a, row in zip(ALPHAS, ref.cv_results_["mean_test_score"], strict=True):
        assert fit.cv_table[a] == pytest.approx(-row, rel=1e-5)
    assert np.abs(glm.predict(X) - ref.best_estimator_.predict(X)).max() < 1e-5


def test_blocks_of_any_size_give_the_same_model():
    phi, psi, targets = _log("binomial", n=2000)
    folds = hash_folds(np.arange(len(phi)), 3, 7)
    a = AdditiveGLM.from_path(fit_path(InMemoryBlocks(phi, psi, targets, folds, chunk=100_000), "binomial", ALPHAS, 3),
                              "binomial")
    b = AdditiveGLM.from_path(fit_path(InMemoryBlocks(phi, psi, targets, folds, chunk=137, cache_bytes=0), "binomial",
                                       ALPHAS, 3), "binomial")
    X = pack_features(phi, psi)
    assert np.abs(a.predict(X) - b.predict(X)).max() < 1e-9


def test_hash_folds_are_seeded_balanced_and_positional():
    rows = np.arange(100_000)
    f = hash_folds(rows, 5, 3)
    assert f.min() == 0 and f.max() == 4
    assert np.abs(np.bincount(f) / len(f) - 0.2).max() < 0.01
    np.testing.assert_array_equal(hash_folds(rows[500:900], 5, 3), f[500:900])  # a partition sees its rows' folds
    assert (hash_folds(rows, 5, 4) != f).mean() > 0.7  # another seed, other folds


def test_large_logs_choose_the_penalty_on_every_row():
    """The best penalty of a per-row-mean loss shrinks with n: a 120,000-row log must not reuse the
    penalty a 100,000-row subsample would choose... nor any subsample's: its CV sees every row."""
    rng = np.random.default_rng(0)
    n, d = 120_000, 40
    phi = rng.normal(size=(n, d)).astype(np.float32)
    y = phi @ (rng.normal(size=d) * 0.02) + rng.normal(size=n)
    targets = pack_targets(y)
    alphas = tuple(np.logspace(-7, 0, 15))
    glm = AdditiveGLM("gaussian", n_text=d)
    _, alpha_all, _ = fit_cv(glm, phi, None, targets, alphas, 5, 0)
    _, alpha_small, _ = fit_cv(glm, phi[:3000], None, targets[:3000], alphas, 5, 0)
    assert alpha_all < alpha_small
    blocks = InMemoryBlocks(phi, None, targets, hash_folds(np.arange(n), 5, 0))
    counts = blocks.map_reduce(lambda b: {"n": np.bincount(b.fold, minlength=5).astype(float)})
    assert counts["n"].sum() == n


def test_hashed_sample_has_the_asked_size_and_does_not_depend_on_partitioning():
    from deconfoundlm.glm.folds import hash_sample

    rows = np.arange(1_000_000)
    picked = hash_sample(rows, 0.05, seed=7)
    assert abs(picked.sum() - 50_000) < 4 * np.sqrt(50_000)  # binomial(1e6, 0.05) within 4 sd
    parts = np.concatenate([hash_sample(rows[a:a + 123_457], 0.05, seed=7) for a in range(0, len(rows), 123_457)])
    np.testing.assert_array_equal(parts, picked)
    assert hash_sample(rows[:1000], 1.0, seed=7).all() and not hash_sample(rows[:1000], 0.0, seed=7).any()
    assert not np.array_equal(hash_sample(rows[:1000], 0.5, seed=8), hash_sample(rows[:1000], 0.5, seed=7))
    with pytest.raises(ValueError):
        hash_folds(rows[:10], 1 << 30, seed=0)  # folds are int16: a larger k would wrap around
