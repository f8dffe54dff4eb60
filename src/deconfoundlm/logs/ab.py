"""A user's randomized A/B tests, read with the log's own column roles plus a test column.

Rows of one test were randomized against each other; only tests with at least two different
texts carry within-test evidence about the text, so the others are left out (with a warning).
The file is read and validated like a log (:func:`~deconfoundlm.logs.validate.load_log`: the
same column checks and dropped-row warnings, named with the file), with the test column in the
``group`` role. The log's weights column is optional in a second file of tests (``--ab``):
randomized rows without one weigh 1 each, with a warning.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deconfoundlm.errors import DataWarning, UserError
from deconfoundlm.logs.roles import ColumnRoles
from deconfoundlm.logs.tables import table_columns
from deconfoundlm.logs.validate import ObservationalLog, load_log, validate_log
from deconfoundlm.options import label


@dataclass
class RandomizedTests:
    """Validated A/B rows: the log of their columns (``roles.group`` is the test column) and
    each row's test code 0..T-1 (tests sorted by label)."""

    log: ObservationalLog
    codes: np.ndarray
    source: str

    @property
    def test_column(self) -> str:
        return self.log.roles.group

    @property
    def n_tests(self) -> int:
        return int(self.codes.max()) + 1 if len(self.codes) else 0

    def tests_holding(self, texts: list[str]) -> int:
        """How many of the tests hold a text among ``texts`` (e.g. the log's: a reward fitted on
        that log has seen those rows' outcomes)."""
        seen = set(map(str, texts))
        held = np.fromiter((str(t) in seen for t in self.log.texts), dtype=bool, count=len(self.log.texts))
        return int(np.unique(self.codes[held]).size)

    def test_digests(self) -> list[str]:
        """:func:`test_digests` of these tests (what a reward fitted on them records)."""
        return sorted(set(test_digests(self.log.frame[self.test_column], pd.Series(self.log.texts)).values()))

    def __len__(self) -> int:
        return len(self.log)


DIGEST_CHARS = 12  # hex characters of a test label's digest (48 bits)


def test_digests(labels: pd.Series, texts: pd.Series) -> dict[str, str]:
    """Each test's short SHA-256 digest, by label (as text): of its label and its distinct texts,
    so that a label reused in another file for other texts is another test. A reward records those
    of the tests it was fitted on, so that ``evaluate`` can say which tests of a file it has seen
    without the tests themselves being stored. ``labels`` and ``texts`` are aligned row by row."""
    frame = pd.DataFrame({"t": np.asarray(labels).astype(str), "x": np.asarray(texts).astype(str)})
    out = {}
    for t, x in frame.groupby("t", sort=True)["x"]:
        body = "\x1f".join([str(t), *sorted(set(x))])
        out[str(t)] = hashlib.sha256(body.encode("utf-8")).hexdigest()[:DIGEST_CHARS]
    return out


def contrast_tests(tests: pd.Series, texts: pd.Series) -> pd.Series:
    """Whether each row's test holds at least two different texts."""
    return texts.groupby(tests.to_numpy()).transform("nunique").to_numpy() >= 2


def load_randomized_tests(data: str | Path | pd.DataFrame, roles: ColumnRoles, test: str,
                          flag: str = "--ab") -> RandomizedTests:
    """Read the A/B tests with the log's text, outcome, trials and weights columns plus ``test``;
    keep the tests with two or more different texts (UserError naming the file, after ``flag``
    when it is not empty, when fewer than two such tests remain)."""
    if not isinstance(test, str) or not test:
        raise UserError(f"{label('test')}: expected a column name, got {test!r}")
    used = {roles.text: "--text", roles.outcome: "--outcome", roles.trials: "--trials",
            roles.weights: "--weights"}
    if test in used:
        raise UserError(f"column {test!r} is given two roles ({used[test]} and {label('test')})")
    source = "<DataFrame>" if isinstance(data, pd.DataFrame) else str(data)
    where = f"{flag} {source}" if flag else source
    weights = roles.weights
    if flag and weights is not None:  # the log's weights; randomized tests need not carry any
        try:
            columns = list(data.columns) if isinstance(data, pd.DataFrame) else table_columns(data)
        except UserError as exc:
            raise UserError(f"{where}: {_without(str(exc), source)}") from None
        if weights not in columns:
            warnings.warn(f"{where}: no weights column {weights!r}: every A/B row weighs 1", DataWarning, stacklevel=2)
            weights = None
    ab_roles = ColumnRoles(text=roles.text, outcome=roles.outcome, trials=roles.trials, weights=weights, group=test)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        try:
            log = validate_log(data, ab_roles, source) if isinstance(data, pd.DataFrame) else load_log(data, ab_roles)
        except UserError as exc:
            raise (UserError(f"{where}: {_without(str(exc), source)}") if flag else exc) from None
    for w in caught:  # the log reader's warnings, named with this file
        if flag and issubclass(w.category, DataWarning):
            warnings.warn(f"{where}: {_without(str(w.message), source)}", DataWarning, stacklevel=2)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    frame = log.frame
    tests = frame[test]
    known = tests.notna().to_numpy()
    if not known.all():
        warnings.warn(f"{where}: dropped {int((~known).sum())} row(s) with a missing test {test!r}",
                      DataWarning, stacklevel=2)
    keep = known & contrast_tests(tests.astype(str).where(known, None), pd.Series(log.texts))
    n_single = int(tests[known & ~keep].astype(str).nunique())
    n_contrast = int(tests[keep].astype(str).nunique())
    if n_contrast < 2:
        raise UserError(f"{where}: {n_contrast} test(s) with two or more different texts in {test!r} "
                        f"({int(tests[known].astype(str).nunique())} tests in all); at least 2 are needed: "
                        "randomized tests that compare different texts (one arm per test compares nothing)")
    if n_single:
        warnings.warn(f"{where}: left out {n_single} test(s) with a single text (nothing to compare)",
                      DataWarning, stacklevel=2)
    rows = np.flatnonzero(keep)
    kept = ObservationalLog(
        texts=[log.texts[i] for i in rows], outcome=log.outcome[rows], confounders=log.confounders.iloc[rows],
        roles=ab_roles, trials=None if log.trials is None else log.trials[rows],
        weights=None if log.weights is None else log.weights[rows], frame=frame.iloc[rows].reset_index(drop=True))
    _, codes = np.unique(kept.frame[test].astype(str).to_numpy(), return_inverse=True)
    return RandomizedTests(kept, codes.astype(np.int64), source)


def _without(message: str, source: str) -> str:
    """``message`` without a leading ``source:`` (the caller names the file once)."""
    return message[len(source) + 1:].lstrip() if message.startswith(f"{source}:") else message


def _holds_numbers(series: pd.Series) -> bool:
    kept = series[series.notna()]
    return bool(len(kept)) and (pd.api.types.is_numeric_dtype(kept) or bool(kept.map(
        lambda v: isinstance(v, (int, float, np.number)) and not isinstance(v, bool)).all()))


def check_like_log(tests: RandomizedTests, log: ObservationalLog, flag: str = "--ab") -> None:
    """The tests' texts and outcomes are of the log's kind: texts of both are words (or both
    numbers), and counts in the log are counts in the tests."""
    text = log.roles.text
    if _holds_numbers(log.frame[text]) != _holds_numbers(tests.log.frame[text]):
        kinds = ("numbers", "texts") if _holds_numbers(tests.log.frame[text]) else ("texts", "numbers")
        raise UserError(f"{flag} {tests.source}: text column {text!r} holds {kinds[0]}, the log's holds {kinds[1]}; "
                        "give the tests' texts in the same column as the log's")
    y_log, y_ab = log.outcome, tests.log.outcome
    if np.array_equal(y_log, np.round(y_log)) and not np.array_equal(y_ab, np.round(y_ab)):
        bad = y_ab[y_ab != np.round(y_ab)][0]
        raise UserError(f"{flag} {tests.source}: outcome column {log.roles.outcome!r} has non-integer values "
                        f"(e.g. {bad:g}) where the log's are counts; give the tests' outcome on the log's scale")
