"""Coverage of the reward's 95% intervals on simulated data with a known linear effect.

    .venv/bin/python benchmarks/se_coverage.py gaussian 100
    .venv/bin/python benchmarks/se_coverage.py binomial 100

Each repetition simulates a log (1,500 rows of
:func:`deconfoundlm.evaluation.benchmark.linear_log.simulate_linear_log`), fits ``deconfound`` (3-fold CV), and checks, for 20 fixed
pairs of feature vectors, whether the 95% interval of the reward difference (sandwich standard
error) covers the true difference. Prints the share covered.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from deconfoundlm.evaluation.benchmark.linear_log import simulate_linear_log
from deconfoundlm.glm.sandwich import difference_se
from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.rewards import make_estimator


def main() -> None:
    family, reps = sys.argv[1], int(sys.argv[2])
    t0, hits = time.time(), []
    rng0 = np.random.default_rng(123)
    a, b = rng0.normal(size=(20, 5)), rng0.normal(size=(20, 5))
    for r in range(reps):
        X, y, conf, trials, w = simulate_linear_log(family, 1500, r)
        est = make_estimator("deconfound", family=family, cv=3).fit(
            X, y, confounders=conf, specs=[ConfounderSpec("c", "numeric")], trials=trials)
        diff = est.reward(a) - est.reward(b)
        hits.append(np.abs(diff - (a - b) @ w) <= 1.96 * difference_se(est.text_cov_, a, b))
    print(f"{family}: coverage {np.mean(hits):.4f} over {reps} logs x 20 pairs "
          f"(lowest pair {np.mean(hits, 0).min():.2f}); {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
