import os

import numpy as np
import pandas as pd
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DECONFOUNDLM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def upworthy_sample() -> pd.DataFrame:
    from deconfoundlm.logs.upworthy import load_packages

    return load_packages().sample(400, random_state=0).reset_index(drop=True)


@pytest.fixture
def log_csv(tmp_path, upworthy_sample):
    path = tmp_path / "log.csv"
    upworthy_sample.to_csv(path, index=False)
    return path


def simulate(family: str, n: int = 4000, seed: int = 0):
    """Known text features X, a confounder c that shifts both X and the outcome."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=n)
    X = rng.normal(size=(n, 5))
    X[:, 0] += 1.0 * c  # entangled: a causal feature drifts with c
    X[:, 3] += 1.0 * c  # spurious: no effect, but drifts with c
    w = np.array([0.5, -0.3, 0.2, 0.0, 0.0])
    eta = X @ w + 1.0 * c
    trials = None
    if family == "gaussian":
        y = eta + rng.normal(size=n)
    elif family == "bernoulli":
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    else:
        trials = rng.integers(20, 60, size=n).astype(float)
        y = rng.binomial(trials.astype(int), 1 / (1 + np.exp(-(eta - 1.0)))).astype(float)
    return X, y, pd.DataFrame({"c": c}), trials, w
