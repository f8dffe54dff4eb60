"""What is your log worth? Pairwise accuracy on held-out A/B tests against the number of tests used.

For each seeded split of the user's randomized tests into training and held-out tests, and each
number N of training tests (a seeded, nested sample: the first N of one permutation):

- ``tests only``: the tests' own reward, without the log: one intercept per test and a ridge on
  the text, its strength chosen by cross-validation over whole tests
  (:func:`~deconfoundlm.rewards.grounding.fit_tests_only`: the model of ``fit-reward TESTS
  --test TEST``: the solver of ``log + tests`` without the log's reward);
- ``log + tests``: the log's deconfounded reward grounded on the same N tests
  (:func:`~deconfoundlm.rewards.grounding.ground_reward`, the path of ``fit-reward --ab``);
- ``log only``: the log's reward, which does not depend on N.

Each is scored on the held-out tests' significant pairs (:func:`~deconfoundlm.evaluation.evaluate.significant_pairs`).
The curve's CIs are t-intervals over the splits; "the log is worth" the number of tests at which
the tests-only curve reaches the log-only accuracy (interpolated on log N).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from deconfoundlm.configs import CURVE_SIZES
from deconfoundlm.evaluation.evaluate import pair_correct
from deconfoundlm.rewards.base import RewardEstimator
from deconfoundlm.rewards.grounding import ABFeatures, fit_tests_only, ground_reward

SIZES = CURVE_SIZES
CURVES = ("tests only", "log + tests", "log only")


@dataclass
class SplitData:
    """One split: the log's fitted reward and features, the training tests' rows (features, test
    labels, outcome, trials, weights) and the held-out arms' features with their pairs."""

    log_reward: RewardEstimator
    log_x: np.ndarray
    x: np.ndarray
    tests: np.ndarray
    y: np.ndarray
    n: np.ndarray | None
    w: np.ndarray | None
    eval_x: np.ndarray
    pairs: pd.DataFrame
    arm: np.ndarray | None = None  # a text id per training row (rows of one test and text are pooled)
    # The tests-only reward on all training tests when it is already fitted (the demo's experimental
    # reference: tests_only_reward on the same rows, folds and seed): not fitted again.
    tests_only_all: RewardEstimator | None = None


def split_curve(data: SplitData, sizes: Sequence[int | None], family: str, *, cv: int, seed: int) -> list[dict]:
    """Accuracy of the three curves at each N (None: all training tests) on one split; the sizes
    at or above the number of training tests give the "all" point once."""
    labels, code = np.unique(data.tests, return_inverse=True)  # rows' test codes: membership without np.isin on labels
    order = np.random.default_rng([seed, 17]).permutation(labels)
    rank = np.empty(len(labels), dtype=np.int64)
    rank[np.searchsorted(labels, order)] = np.arange(len(order))  # each test's place in the permutation
    row_rank = rank[code.ravel()]
    log_acc = float(pair_correct(data.log_reward.reward(data.eval_x), data.pairs).mean())
    out: list[dict] = []
    done_all = False
    for size in sizes:
        if size is None or size >= len(order):  # all training tests: one point, however many sizes reach it
            if done_all:
                continue
            done_all = True
        use = order if size is None or size >= len(order) else order[:size]
        rows = np.flatnonzero(row_rank < len(use))
        codes = np.unique(data.tests[rows], return_inverse=True)[1]
        x, y = data.x[rows], data.y[rows]
        n = None if data.n is None else data.n[rows]
        w = None if data.w is None else data.w[rows]
        grounded = copy.deepcopy(data.log_reward)
        ab = ABFeatures(x, codes, y, n, w, arm=None if data.arm is None else data.arm[rows])
        info = ground_reward(grounded, data.log_x, ab, family=family, cv=cv, seed=seed)
        everything = size is None or size >= len(order)
        if everything and data.tests_only_all is not None:
            own = data.tests_only_all.reward(data.eval_x)
        else:
            own = fit_tests_only(ab, family=family, cv=cv, seed=seed).text_effect(data.eval_x, None)
        acc = {"tests only": own, "log + tests": grounded.reward(data.eval_x)}
        for curve, scores in acc.items():
            out.append({"tests": int(len(use)), "all": everything, "curve": curve,
                        "accuracy": float(pair_correct(scores, data.pairs).mean()),
                        "strength": info["strength"] if curve == "log + tests" else None,
                        "calibration_slope": info["calibration"]["slope"] if curve == "log + tests" else None})
        out.append({"tests": int(len(use)), "all": everything, "curve": "log only",
                    "accuracy": log_acc, "strength": None, "calibration_slope": None})
    return out


def summarize_curve(per_split: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per (N, curve) over splits (two or more) with a 95% t-interval over splits,
    clipped to [0, 1]. The "all" rows are labelled by their mean number of tests."""
    key = per_split.assign(size=np.where(per_split["all"], -1, per_split["tests"]))
    rows = []
    for (size, curve), g in key.groupby(["size", "curve"], sort=True):
        acc = g["accuracy"].to_numpy(float)
        half = float(stats.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / np.sqrt(len(acc)))
        rows.append({"tests": int(round(g["tests"].mean())), "all": bool(size == -1), "curve": curve,
                     "accuracy": float(acc.mean()), "ci_low": float(max(acc.mean() - half, 0.0)),
                     "ci_high": float(min(acc.mean() + half, 1.0)), "splits": int(len(acc))})
    table = pd.DataFrame(rows)
    order = {c: i for i, c in enumerate(CURVES)}
    return table.sort_values(["all", "tests", "curve"], key=lambda s: s.map(order) if s.name == "curve" else s) \
        .reset_index(drop=True)


def log_worth(table: pd.DataFrame) -> dict:
    """The number of tests at which the tests-only curve reaches the log-only accuracy
    (interpolated linearly in log N between the two sizes that bracket it)."""
    own = table[table["curve"] == "tests only"].sort_values("tests")
    log_acc = float(table.loc[table["curve"] == "log only", "accuracy"].mean())
    n, acc = own["tests"].to_numpy(float), own["accuracy"].to_numpy(float)
    above = np.flatnonzero(acc >= log_acc)
    if not len(above):
        return {"tests": None, "log_only_accuracy": log_acc, "at_most": False,
                "says": f"more than all {int(n.max())} tests: no number of tests used here reached the log's "
                        f"accuracy {log_acc:.3f}"}
    i = int(above[0])
    if i == 0:
        return {"tests": int(n[0]), "log_only_accuracy": log_acc, "at_most": True,
                "says": f"at most {int(n[0])} tests: the smallest number tried already reaches the log's accuracy"}
    lo, hi = np.log(n[i - 1]), np.log(n[i])
    frac = (log_acc - acc[i - 1]) / max(acc[i] - acc[i - 1], 1e-12)
    worth = float(np.exp(lo + frac * (hi - lo)))
    return {"tests": int(round(worth)), "log_only_accuracy": log_acc, "at_most": False,
            "says": f"about {int(round(worth)):,} A/B tests (the tests-only reward reaches the log's accuracy "
                    f"{log_acc:.3f} between {int(n[i - 1]):,} and {int(n[i]):,} tests)"}


def format_curve(table: pd.DataFrame, worth: dict) -> str:
    """The curve as a terminal table (one row per N) and the log's worth in tests."""
    wide = {(r.tests, r.all, r.curve): r for r in table.itertuples()}
    sizes = sorted({(r.all, r.tests) for r in table.itertuples()})
    lines = [f"{'A/B tests':>10}  " + "  ".join(f"{c:>22}" for c in CURVES)]
    for is_all, n in sizes:
        cells = []
        for c in CURVES:
            r = wide.get((n, is_all, c))
            cells.append(f"{r.accuracy:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" if r is not None else "-")
        lines.append(f"{(f'all ({n})' if is_all else str(n)):>10}  " + "  ".join(f"{c:>22}" for c in cells))
    lines.append(f"the log is worth {worth['says']}")
    return "\n".join(lines)


def curve_figure(table: pd.DataFrame, worth: dict):
    """The learning curve as a matplotlib figure (accuracy against tests on a log scale, CI bands,
    the log-only accuracy as a line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    colors = {"tests only": "#c44", "log + tests": "#26a", "log only": "#888"}
    for name in CURVES:
        c = table[table["curve"] == name].sort_values("tests")
        if name == "log only":
            ax.axhline(c["accuracy"].mean(), color=colors[name], ls="--", label="log only")
            continue
        ax.plot(c["tests"], c["accuracy"], marker="o", color=colors[name], label=name)
        ax.fill_between(c["tests"], c["ci_low"], c["ci_high"], color=colors[name], alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("A/B tests used (log scale)")
    ax.set_ylabel("pairwise accuracy on held-out pairs")
    ax.set_title(f"The log is worth {worth['says'].split(' (')[0]}")
    ax.legend()
    return fig
