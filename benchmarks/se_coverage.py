"""Coverage of the reward's 95% intervals on simulated data with a known linear effect.

    .venv/bin/python benchmarks/se_coverage.py gaussian 100
    .venv/bin/python benchmarks/se_coverage.py binomial 100

Each repetition simulates a log (1,500 rows, five text features, a confounder c that shifts
features 0 and 3 and the outcome), fits ``deconfound`` (3-fold CV), and checks, for 20 fixed
pairs of feature vectors, whether the 95% interval of the reward difference (sandwich standard
error) covers the true difference. Prints the share covered.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.rewards import make_estimator
from deconfoundlm.rewards.uncertainty import difference_se


def main() -> None:
    family, reps = sys.argv[1], int(sys.argv[2])
    t0, hits = time.time(), []
    rng0 = np.random.default_rng(123)
    a, b = rng0.normal(size=(20, 5)), rng0.normal(size=(20, 5))
    w = np.array([0.5, -0.3, 0.2, 0.0, 0.0])
    for r in range(reps):
        rng = np.random.default_rng(r)
        n = 1500
        c = rng.normal(size=n)
        X = rng.normal(size=(n, 5))
        X[:, 0] += c
        X[:, 3] += c
        eta = X @ w + c
        trials = None
        if family == "gaussian":
            y = eta + rng.normal(size=n)
        else:
            trials = rng.integers(20, 60, size=n).astype(float)
            y = rng.binomial(trials.astype(int), 1 / (1 + np.exp(-(eta - 1)))).astype(float)
        est = make_estimator("deconfound", family=family, cv=3).fit(
            X, y, confounders=pd.DataFrame({"c": c}), specs=[ConfounderSpec("c", "numeric")], trials=trials)
        diff = est.score(a) - est.score(b)
        hits.append(np.abs(diff - (a - b) @ w) <= 1.96 * difference_se(est.text_cov_, a, b))
    print(f"{family}: coverage {np.mean(hits):.4f} over {reps} logs x 20 pairs "
          f"(lowest pair {np.mean(hits, 0).min():.2f}); {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
