"""``deconfoundlm evaluate``: how well does a reward rank texts that were randomized against each other?

A user's A/B tests are the ground truth an observational reward can be checked against: rows of
the same ``--test`` were randomized against each other, so within a test a difference in outcome
is caused by the text (and whatever else differed between the arms). For every pair of different
texts within a test whose outcomes differ significantly, the reward should rank the winner higher.

The test of a pair depends on what the log holds:

``--outcome`` with ``--trials`` (successes out of trials, e.g. clicks out of impressions)
    each row is one arm of its test; two-sided two-proportion z-test with the pooled rate
    (rows sharing a text are not compared with each other).
``--outcome`` without ``--trials``, several rows per text in a test (e.g. one row per recipient)
    each (test, text) is one arm and its rows are the observations; Welch's t-test.
``--outcome`` without ``--trials``, one row per text in a test, the outcome a count
    each row is one arm, its count from equal exposure; the exact conditional test of two
    Poisson rates (binomial with p = 1/2).
``--outcome`` with ``--trials`` and ``--family poisson`` (a count and its exposure, e.g. views in hours shown)
    each row is one arm; the exact conditional test of two Poisson rates: given the pair's total
    count, the first arm's count is binomial with p its share of the exposure (two-sided: twice
    the smaller tail).
``--winner`` (a column that is true for the row that won its test)
    the winner against every other text of its test; no significance test (``--alpha`` does not
    apply). Tests with no winner, or more than one, are left out with a warning.

Pairwise accuracy is the share of pairs ranked like the test's result (a tie in reward counts as
half right). Its 95% CI is a cluster bootstrap over tests (pairs of one test share texts, so they
are not independent); with several rewards the same resampled tests serve every reward, which
gives the paired difference of each reward against the first with its CI.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from deconfoundlm.configs import EvaluateConfig
from deconfoundlm.errors import UserError
from deconfoundlm.evaluation.provenance import frame_fingerprint, reward_identity
from deconfoundlm.glm.families import resolve_family
from deconfoundlm.logs.ab import load_randomized_tests, test_digests
from deconfoundlm.logs.tables import read_table, table_columns
from deconfoundlm.logs.validate import (
    DataWarning,
    check_text_column,
    numeric_column,
    require_columns,
    warn_drop,
)
from deconfoundlm.options import label
from deconfoundlm.outputs import JSON_FILE, check_output, write_json
from deconfoundlm.pipeline import load_reward
from deconfoundlm.rewards.grounding import calibrate

DEFAULT_ALPHA = 0.05
DEFAULT_BOOTSTRAP = 1000
TRUE_WORDS = {"true", "1", "yes", "y", "t", "winner", "1.0"}
FALSE_WORDS = {"false", "0", "no", "n", "f", "", "0.0", "nan", "none"}


# -- the pairs of a set of A/B tests -------------------------------------------------------------
def _winner_flags(series: pd.Series) -> np.ndarray:
    """A winner column as booleans: true/false, 1/0, yes/no (anything else is an error)."""
    if series.dtype == bool:
        return series.to_numpy()
    words = series.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip().lower())
    bad = ~words.isin(TRUE_WORDS | FALSE_WORDS)
    if bad.any():
        raise UserError(f"{label('winner')} column {series.name!r} must be true/false, 1/0 or yes/no (e.g. value "
                        f"{series[bad].iloc[0]!r} in {int(bad.sum())} row(s))")
    return words.isin(TRUE_WORDS).to_numpy()


def significant_pairs(frame: pd.DataFrame, *, text: str, test: str, outcome: str | None = None,
                      trials: str | None = None, winner: str | None = None,
                      alpha: float | None = DEFAULT_ALPHA,
                      family: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The arms of the tests and the pairs of arms whose outcomes differ significantly.

    ``frame`` holds validated columns (see :func:`read_ab_tests`); ``family`` ``"poisson"`` makes
    ``trials`` an exposure (a rate test), any other value leaves the choice to the columns.
    Returns ``(arms, pairs, test_name)``:
    ``arms`` has ``test_id`` and ``text`` (one row per arm), ``pairs`` has positional indices ``i``, ``j``
    into ``arms``, the ``test_id`` and ``sign`` = +1 when arm ``i`` won, -1 when ``j`` did; ``test_name``
    says which test was used (see the module)."""
    if (outcome is None) == (winner is None):
        raise UserError(f"give exactly one of {label('outcome')} (with optional {label('trials')}) and {label('winner')}")
    if winner is not None:
        return (*_winner_pairs(frame, text, test, winner), "declared winner")
    if alpha is None or not 0 < alpha < 1:
        raise UserError(f"{label('alpha')} {alpha}: must be above 0 and below 1")
    exposure = trials is not None and family == "poisson"
    if trials is not None and not exposure:
        return (*_row_pairs(frame, text, test, outcome, trials, alpha), "two-proportion z-test")
    if not exposure and frame.duplicated([test, text]).any():
        return (*_welch_pairs(frame, text, test, outcome, alpha), "Welch's t-test")
    y = frame[outcome].to_numpy(float)
    if (y < 0).any() or not np.array_equal(y, np.round(y)):
        if exposure:
            raise UserError(f"cannot test the pairs: {label('family')} poisson with {label('trials')} {trials!r} (the "
                            f"exposure) compares counts, and {outcome!r} is not a count (e.g. {y[y != np.round(y)][0]:g})")
        raise UserError(f"cannot test the pairs: each text has one row in its test and {outcome!r} is not a count; "
                        f"give {label('trials')} (successes out of trials), several rows per text (one per recipient), "
                        f"or {label('winner')}")
    if exposure:
        return (*_row_pairs(frame, text, test, outcome, trials, alpha, exposure=True),
                "exact test of two Poisson rates given their exposures")
    return (*_row_pairs(frame, text, test, outcome, None, alpha), "exact test of two Poisson rates")


def _pairs_within(arms: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positional indices (i < j) of arms of the same test with different texts."""
    left = pd.DataFrame({"t": arms["test_id"].to_numpy(), "x": arms["text"].to_numpy(), "i": np.arange(len(arms))})
    both = left.merge(left, on="t", suffixes=("_i", "_j"))
    both = both[(both["i_i"] < both["i_j"]) & (both["x_i"] != both["x_j"])]
    return both["i_i"].to_numpy(), both["i_j"].to_numpy()


def _keep(arms: pd.DataFrame, i: np.ndarray, j: np.ndarray, stat: np.ndarray, significant: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"i": i[significant], "j": j[significant],
                         "test_id": arms["test_id"].to_numpy()[i[significant]],
                         "sign": np.sign(stat[significant])})


def _row_pairs(frame: pd.DataFrame, text: str, test: str, outcome: str, trials: str | None,
               alpha: float, exposure: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairs of rows (arms): successes out of ``trials`` (z-test), else counts (exact rate test)
    from ``trials`` as exposures (``exposure``) or from equal exposures."""
    arms = pd.DataFrame({"test_id": frame[test].to_numpy(), "text": frame[text].to_numpy()})
    i, j = _pairs_within(arms)
    c = frame[outcome].to_numpy(float)
    if trials is not None and not exposure:
        n = frame[trials].to_numpy(float)
        ci, cj, ni, nj = c[i], c[j], n[i], n[j]
        p = (ci + cj) / (ni + nj)
        se = np.sqrt(p * (1 - p) * (1 / ni + 1 / nj))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, (ci / ni - cj / nj) / se, 0.0)
        return arms, _keep(arms, i, j, z, np.abs(z) > stats.norm.isf(alpha / 2))
    ci, cj = c[i], c[j]
    total = ci + cj
    if not exposure:
        low = np.minimum(ci, cj)
        p_value = np.minimum(1.0, 2 * stats.binom.cdf(low, total, 0.5))  # symmetric: the two tails are equal
        return arms, _keep(arms, i, j, ci - cj, (total > 0) & (p_value < alpha))
    e = frame[trials].to_numpy(float)
    share = e[i] / (e[i] + e[j])  # arm i's count given the total, under equal rates: Binomial(total, share)
    tails = np.minimum(stats.binom.cdf(ci, total, share), stats.binom.sf(ci - 1, total, share))
    p_value = np.minimum(1.0, 2 * tails)
    return arms, _keep(arms, i, j, ci / e[i] - cj / e[j], (total > 0) & (p_value < alpha))


def _welch_pairs(frame: pd.DataFrame, text: str, test: str, outcome: str,
                 alpha: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    g = frame.groupby([test, text], sort=False)[outcome].agg(["mean", "var", "count"]).reset_index()
    arms = pd.DataFrame({"test_id": g[test].to_numpy(), "text": g[text].to_numpy()})
    i, j = _pairs_within(arms)
    m, v, n = g["mean"].to_numpy(), g["var"].fillna(0).to_numpy(), g["count"].to_numpy(float)
    both = (n[i] >= 2) & (n[j] >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t, p_value = stats.ttest_ind_from_stats(m[i], np.sqrt(v[i]), n[i], m[j], np.sqrt(v[j]), n[j], equal_var=False)
    t, p_value = np.nan_to_num(t), np.nan_to_num(p_value, nan=1.0)
    return arms, _keep(arms, i, j, t, both & (p_value < alpha))


def _winner_pairs(frame: pd.DataFrame, text: str, test: str, winner: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    arms = pd.DataFrame({"test_id": frame[test].to_numpy(), "text": frame[text].to_numpy(),
                         "won": _winner_flags(frame[winner])})
    won_texts = arms[arms["won"]].groupby("test_id")["text"].nunique()
    ok = won_texts[won_texts == 1].index
    bad = arms["test_id"].nunique() - len(ok)
    if bad:
        warnings.warn(f"left out {bad} test(s) with no winner or winners with different texts in {winner!r}",
                      DataWarning, stacklevel=3)
    arms = arms[arms["test_id"].isin(ok)].reset_index(drop=True)
    i, j = _pairs_within(arms)
    w = arms["won"].to_numpy()
    one = w[i] != w[j]  # the winner against each other text; two losers are not a pair
    stat = np.where(w[i], 1.0, -1.0)
    return arms.drop(columns="won"), _keep(arms, i, j, stat, one)


def pair_correct(scores: np.ndarray, pairs: pd.DataFrame) -> np.ndarray:
    """Per pair: 1 if the reward ranks it like the test, 0 if not, 1/2 for a tie in reward."""
    diff = np.sign(scores[pairs["i"].to_numpy()] - scores[pairs["j"].to_numpy()])
    return np.where(diff == 0, 0.5, (diff == pairs["sign"].to_numpy()).astype(float))


# -- accuracy with a cluster bootstrap over tests ----------------------------------------------
def cluster_bootstrap(correct: pd.DataFrame, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                      baseline: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy of each reward with a 95% cluster-bootstrap CI, and paired differences.

    ``correct`` has columns ``method``, ``split``, ``test_id`` and ``correct`` (one row per pair and
    reward; every reward judged on the same pairs). Within each split the tests are resampled with
    replacement, the same draws for every reward; a split's accuracy is its correct pairs over its
    pairs and the estimate is the mean over splits. Returns ``(table, differences)``: ``table`` per
    method (accuracy, ci_low, ci_high, split_min, split_max, pairs_per_split, tests_per_split) and
    ``differences`` of each method against ``baseline`` (default: the first method) with its CI and
    the number of splits it wins."""
    methods = list(dict.fromkeys(correct["method"]))
    baseline = baseline or methods[0]
    rng = np.random.default_rng(seed)
    boots = {m: np.zeros(n_boot) for m in methods}
    per_split: dict[str, list[float]] = {m: [] for m in methods}
    pairs_n, tests_n = [], []
    for _, s in correct.groupby("split", sort=True):
        sums = s.pivot_table(index="test_id", columns="method", values="correct", aggfunc=["sum", "count"])
        n_tests = len(sums)
        draw = rng.integers(0, n_tests, size=(n_boot, n_tests))
        for m in methods:
            got, cnt = sums[("sum", m)].to_numpy(float), sums[("count", m)].to_numpy(float)
            per_split[m].append(got.sum() / cnt.sum())
            boots[m] += got[draw].sum(1) / cnt[draw].sum(1)
        pairs_n.append(int(sums[("count", methods[0])].sum()))
        tests_n.append(n_tests)
    n_splits = len(pairs_n)
    rows = []
    for m in methods:
        b = boots[m] / n_splits
        lo, hi = np.quantile(b, [0.025, 0.975])
        rows.append({"method": m, "accuracy": float(np.mean(per_split[m])), "ci_low": float(lo), "ci_high": float(hi),
                     "split_min": float(min(per_split[m])), "split_max": float(max(per_split[m])),
                     "pairs_per_split": float(np.mean(pairs_n)), "tests_per_split": float(np.mean(tests_n))})
    diffs = []
    for m in methods:
        if m == baseline:
            continue
        d = (boots[m] - boots[baseline]) / n_splits
        lo, hi = np.quantile(d, [0.025, 0.975])
        wins = sum(a > b for a, b in zip(per_split[m], per_split[baseline], strict=True))
        diffs.append({"method": m, "baseline": baseline,
                      "difference": float(np.mean(per_split[m]) - np.mean(per_split[baseline])),
                      "ci_low": float(lo), "ci_high": float(hi), "splits_won": int(wins), "splits": n_splits})
    return pd.DataFrame(rows), pd.DataFrame(diffs)


# -- the command --------------------------------------------------------------------------------
def read_ab_tests(data: str | Path | pd.DataFrame, *, text: str, test: str, outcome: str | None = None,
                  trials: str | None = None, winner: str | None = None, family: str = "auto") -> pd.DataFrame:
    """The A/B log's columns, checked: texts are strings, tests are present, outcomes finite
    (non-negative, at most the trials, with ``trials``; with ``family`` poisson the trials are
    exposures and may be exceeded), winners true/false, and the outcome fits ``family`` (unless
    ``auto``). Rows with a missing text, test or outcome are dropped with a warning that counts them."""
    if (outcome is None) == (winner is None):
        raise UserError(f"give exactly one of {label('outcome')} (with optional {label('trials')}) and {label('winner')}")
    if trials is not None and outcome is None:
        raise UserError(f"{label('trials')} applies to {label('outcome')}, not {label('winner')}")
    wanted = [c for c in (text, test, outcome, trials, winner) if c is not None]
    dup = [c for c in wanted if wanted.count(c) > 1]
    if dup:
        raise UserError(f"column {dup[0]!r} is given for two roles")
    source = "data" if isinstance(data, pd.DataFrame) else str(data)
    if isinstance(data, pd.DataFrame):
        require_columns(list(data.columns), wanted, source)
        df = data[wanted].copy()
    else:
        require_columns(table_columns(data), wanted, source)
        df = read_table(data, columns=wanted)
    check_text_column(df[text])
    for col, role in ((outcome, "outcome"), (trials, "trials")):
        if col is not None:
            df[col] = numeric_column(df[col], role)
    keep = df[text].notna() & df[test].notna() & (df[outcome].notna() if outcome is not None else True)
    if trials is not None:
        keep &= df[trials].notna()
    warn_drop(int((~keep).sum()), f"missing {text!r}, {test!r}" + (f" or {outcome!r}" if outcome else ""))
    df = df[keep].reset_index(drop=True)
    if not len(df):
        raise UserError(f"{source}: no rows left with a text, a test and an outcome")
    df[text] = df[text].astype(str)
    df[test] = df[test].astype(str)
    if family != "auto" and outcome is not None:
        try:
            resolve_family(family, df[outcome].to_numpy(float), None if trials is None else df[trials].to_numpy(float),
                           column=outcome, trials_column=trials or "trials")
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from None
    if trials is not None:
        y, n = df[outcome].to_numpy(), df[trials].to_numpy()
        checks = [(n <= 0, f"{trials!r} must be above 0"), (y < 0, f"{outcome!r} must be at least 0")]
        if family != "poisson":
            checks.append((y > n, f"{outcome!r} must be at most {trials!r} (successes out of trials; if {trials!r} is "
                                  f"the exposure of a count, give {label('family')} poisson)"))
        for bad, why in checks:
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise UserError(f"{source}: {why} (row {k}: {outcome}={y[k]:g}, {trials}={n[k]:g})")
    return df


def evaluate(model_dirs: str | Path | Sequence[str | Path], data: str | Path | pd.DataFrame,
             config: EvaluateConfig | None = None, /, **options: Any) -> dict[str, Any]:
    """Pairwise accuracy of one or more rewards on randomized A/B tests (see the module).

    Parameters
    ----------
    model_dirs : a reward directory (from ``fit-reward``) or a list of them; the first is the
        baseline of the paired differences.
    data : the A/B log: a CSV / Parquet / JSONL path or a DataFrame.
    config : EvaluateConfig, optional
        The options (:class:`~deconfoundlm.configs.EvaluateConfig`), or the same as keywords:
        ``text`` and ``test`` (the text column and the test column: rows of one test were
        randomized against each other); ``outcome`` and ``trials`` (successes with ``trials``) or
        ``winner`` (a true/false column marking each test's winner); ``family``, the outcome's
        family (default ``auto``: the pair test the columns call for; ``poisson`` with ``trials``:
        a count and its exposure, compared as rates); ``alpha``, the significance
        level of a pair's test (default 0.05; not with ``winner``); ``bootstrap`` and ``seed``,
        cluster-bootstrap resamples and their seed; ``out`` and ``force``: write the result as
        JSON (atomically; no overwrite without ``force``).

    Returns a strict-JSON dict: ``rewards`` (one entry per directory: accuracy, 95% CI, pairs,
    tests, ties and, with ``outcome``, the ``calibration``: the slope of the tests' within-test
    outcome differences on the reward's differences on the link scale with its 95% CI and a
    one-line verdict, see :func:`~deconfoundlm.rewards.grounding.calibration_verdict`),
    ``differences`` (each reward minus the first, with a 95% CI), the pair test used, and the
    counts of tests and pairs."""
    cfg = EvaluateConfig.of(config, options)
    text, test, outcome, trials, winner = cfg.text, cfg.test, cfg.outcome, cfg.trials, cfg.winner
    out, force = cfg.out, cfg.force
    dirs = [model_dirs] if isinstance(model_dirs, (str, Path)) else list(model_dirs)
    if not dirs:
        raise UserError("give at least one reward directory")
    if winner is not None and cfg.alpha is not None:
        raise UserError(f"{label('alpha')} applies to {label('outcome')} (a significance test), not {label('winner')}")
    alpha = DEFAULT_ALPHA if cfg.alpha is None else cfg.alpha
    names = [str(d) for d in dirs]
    if len(set(names)) < len(names):
        raise UserError("the same reward directory is given twice")
    if out is not None:
        check_output(out, force, JSON_FILE, [None if isinstance(data, pd.DataFrame) else data, *dirs])
    if winner is not None and cfg.family != "auto":
        raise UserError(f"{label('family')} applies to {label('outcome')}, not {label('winner')}")
    df = read_ab_tests(data, text=text, test=test, outcome=outcome, trials=trials, winner=winner, family=cfg.family)
    arms, pairs, test_name = significant_pairs(df, text=text, test=test, outcome=outcome, trials=trials,
                                               winner=winner, alpha=alpha, family=cfg.family)
    if not len(pairs):
        raise UserError("no pair of different texts within a test " + (
            "has a declared winner" if winner else f"differs significantly at {label('alpha')} {alpha:g}")
            + f" ({df[test].nunique()} tests, {len(arms)} arms); nothing to evaluate")
    rewards = [load_reward(d) for d in dirs]  # each directory is validated before any scoring
    texts = arms["text"].tolist()
    correct, entries = [], []
    codes = np.unique(df[test].to_numpy(), return_inverse=True)[1] if outcome is not None else None
    digests = test_digests(df[test], df[text])  # each test of the file, as a fitted reward records its own
    for name, reward in zip(names, rewards, strict=True):
        scores = reward.score(texts)
        ok = pair_correct(scores, pairs)
        correct.append(pd.DataFrame({"method": name, "split": 0, "test_id": pairs["test_id"], "correct": ok}))
        seen = _tests_fitted_on(reward, data, digests, test)
        entries.append({"model_dir": name, "method": reward.method, "encoder": reward.encoder_name,
                        "ties": int((ok == 0.5).sum()), "fitted_on_tests": len(seen),
                        "fitted_on_pairs": int(pairs["test_id"].isin(seen).sum())})
        if codes is not None:  # the slope of within-test outcome differences on the reward's differences
            row_scores = pd.Series(scores, index=pd.MultiIndex.from_frame(arms[["test_id", "text"]])).groupby(
                level=[0, 1]).first()
            per_row = row_scores.reindex(pd.MultiIndex.from_arrays([df[test], df[text]])).to_numpy()
            entries[-1]["calibration"] = calibrate(
                per_row, codes, df[outcome].to_numpy(float), None if trials is None else df[trials].to_numpy(float),
                None, cfg.family if cfg.family != "auto" else _calibration_family(
                    reward.estimator.family_, df[outcome].to_numpy(float),
                    None if trials is None else df[trials].to_numpy(float)))
    table, diffs = cluster_bootstrap(pd.concat(correct, ignore_index=True), cfg.bootstrap, cfg.seed)
    for e, row in zip(entries, table.itertuples(), strict=True):
        e.update(accuracy=row.accuracy, ci_low=row.ci_low, ci_high=row.ci_high)
    report = {
        "data": "<DataFrame>" if isinstance(data, pd.DataFrame) else str(data),
        "test": test_name, "alpha": None if winner else alpha, "family": cfg.family,
        "tests": int(df[test].nunique()), "tests_with_pairs": int(pairs["test_id"].nunique()),
        "arms": len(arms), "pairs": len(pairs), "bootstrap": cfg.bootstrap, "seed": cfg.seed,
        "rewards": entries,
        "differences": [{"model_dir": r["method"], "baseline": r["baseline"], "difference": r["difference"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"]} for r in diffs.to_dict("records")],
        "provenance": {
            "data": "<DataFrame>" if isinstance(data, pd.DataFrame) else str(data),
            "data_fingerprint": frame_fingerprint(df), "rows": len(df),
            "roles": {"text": text, "test": test, "outcome": outcome, "trials": trials, "winner": winner},
            "rewards": [{"model_dir": name, "identity": reward_identity(d), "method": r.method,
                         "data_fingerprint": r.info.get("data_fingerprint")}
                        for name, d, r in zip(names, dirs, rewards, strict=True)],
        },
    }
    if out is not None:
        write_json(report, out)
    return report


def _tests_fitted_on(reward: Any, data: str | Path | pd.DataFrame, digests: dict[str, str], test: str) -> set[str]:
    """The tests (labels of this file's test column, as text; ``digests``: each one's
    :func:`~deconfoundlm.logs.ab.test_digests`) that ``reward`` was fitted on: grounded on them (``fit-reward --ab``) or their own reward
    (``fit-reward TESTS --test``), when its test column is ``test``. Its accuracy on them is
    in-sample. The reward records a digest of each test's label and texts; a folder written before
    it did is matched on the whole file instead (the rows read as that fit read them, the same
    fingerprint: every test, or none)."""
    record = reward.info.get("grounding") or reward.info.get("tests_only")
    if not isinstance(record, dict) or record.get("test") != test:
        return set()
    if isinstance(record.get("test_digests"), list):
        fitted = set(record["test_digests"])
        return {t for t, d in digests.items() if d in fitted}
    recorded = record.get("ab_fingerprint") if "grounding" in reward.info else reward.info.get("data_fingerprint")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rows dropped were named when the file was read above
        try:
            tests = load_randomized_tests(data, reward.roles, test)
        except UserError:
            return set()  # not readable as that fit read its tests: not the same rows
    return set(digests) if tests.log.fingerprint() == recorded else set()


def _calibration_family(family: str, y: np.ndarray, n: np.ndarray | None) -> str:
    """The reward's family when the tests' outcome fits it (the slope is then on the reward's own
    scale), else the family the tests' outcome calls for."""
    try:
        return resolve_family(family, y, n)
    except UserError:
        return resolve_family("auto", y, n)


def format_evaluation(report: dict[str, Any]) -> str:
    """The evaluation in a few lines for a terminal."""
    alpha = "" if report["alpha"] is None else f", alpha {report['alpha']:g}"
    width = max([len("reward"), *(len(e["model_dir"]) for e in report["rewards"])])  # whole folder names
    lines = [f"{report['pairs']} pairs of different texts in {report['tests_with_pairs']} of {report['tests']} tests "
             f"({report['test']}{alpha}); 95% CIs: cluster bootstrap over tests",
             f"{'reward':<{width}} {'accuracy':>8}  {'95% CI':>15}  {'ties':>5}"]
    for e in report["rewards"]:
        lines.append(f"{e['model_dir']:<{width}} {e['accuracy']:8.3f}  [{e['ci_low']:.3f}, {e['ci_high']:.3f}]  "
                     f"{e['ties']:5d}")
    for d in report["differences"]:
        lines.append(f"{d['model_dir']} - {d['baseline']}: {d['difference']:+.3f} [{d['ci_low']:+.3f}, "
                     f"{d['ci_high']:+.3f}]")
    for e in report["rewards"]:
        if "calibration" in e:
            lines.append(f"calibration of {e['model_dir']}: {e['calibration']['verdict']}")
    for e in report["rewards"]:
        k = e.get("fitted_on_tests", 0)
        if k:
            if e["fitted_on_pairs"] == report["pairs"]:
                which = f"every test here that holds a pair ({k} of the {report['tests']} tests)"
            else:
                which = f"{k} of the {report['tests']} tests here ({e['fitted_on_pairs']} of the {report['pairs']} pairs)"
            lines.append(f"note: {e['model_dir']} was fitted on {which}, so its accuracy and calibration on them are "
                         "in-sample (how well it fits them, not a check); evaluate it on tests it was not fitted on")
    return "\n".join(lines)
