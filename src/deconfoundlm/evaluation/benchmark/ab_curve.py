"""``deconfoundlm benchmark ab-curve``: what is a user's log worth in their own A/B tests?

The learning curve of :mod:`deconfoundlm.evaluation.ab_curve` on any log and its tests: per
seeded split, a share of the tests is held out (their significant pairs judge) and N of the rest
are used, for each N of ``sizes`` and all.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from deconfoundlm.configs import CurveConfig
from deconfoundlm.evaluation.ab_curve import (
    SplitData,
    curve_figure,
    format_curve,
    log_worth,
    split_curve,
    summarize_curve,
)
from deconfoundlm.options import label


def run_curve_benchmark(log_data, ab_data, config: CurveConfig | None = None, /,
                        **options: Any) -> tuple[pd.DataFrame, dict]:
    """The learning curve of a user's log and tests (see the module), with the options of
    :class:`~deconfoundlm.configs.CurveConfig` (or the same as keywords: the columns, ``test``,
    ``sizes``, ``splits``, ``heldout``, ``alpha``, ``encoder``, ``family``, ``cv``, ``seed``,
    ``out``, ``force``). Per split, the held-out tests' significant pairs judge; the log's rows
    whose text appears in a held-out test are left out of that split's log fit, so no held-out
    text is learned from the log."""
    from deconfoundlm.errors import UserError
    from deconfoundlm.evaluation.evaluate import significant_pairs
    from deconfoundlm.features.text import MemoizedEncoder, get_encoder
    from deconfoundlm.logdata import LogData
    from deconfoundlm.outputs import (
        BENCHMARK_DIR,
        atomic_directory,
        check_output,
        write_json,
        write_marker,
        write_table,
        write_text,
    )
    from deconfoundlm.pipeline import check_tests_evidence, fit_reward, read_tests
    from deconfoundlm.progress import say

    cfg = CurveConfig.of(config, options)
    text, outcome, trials, weights, test = cfg.text, cfg.outcome, cfg.trials, cfg.weights, cfg.test
    out, force, command = cfg.out, cfg.force, cfg.command
    log_source = LogData.of(log_data, cfg)
    roles = log_source.roles
    inputs = [None if isinstance(x, pd.DataFrame) else x for x in (log_data, ab_data)]
    check_output(out, force, BENCHMARK_DIR, inputs)
    log_source.check(dataclasses.replace(cfg, out=None), need_confounders="the log's reward is deconfounded: give "
                     "at least one --confounder COL:TYPE")
    log, family = log_source.read(cfg.family, cfg.cv)
    tests = read_tests(ab_data, test, roles, family, log)
    check_tests_evidence(tests, family)
    frame = tests.log.frame
    ab_weights = tests.log.roles.weights  # None where the tests carry no weights column
    labels = np.unique(frame[test].astype(str))
    n_held = int(round(cfg.heldout * len(labels)))
    if n_held < 2 or len(labels) - n_held < 2:
        raise UserError(f"{label('ab')}: {len(labels)} tests with two or more texts are too few to hold out {cfg.heldout:g} "
                        "of them and learn from the rest (at least 2 each)")
    enc = MemoizedEncoder(get_encoder(cfg.encoder))
    say(f"encoding {len(set(log.texts) | set(tests.log.texts))} distinct texts with {cfg.encoder} ...")
    enc.encode(sorted(set(log.texts) | set(tests.log.texts)))
    log_frame = log.frame.reset_index(drop=True)
    test_str = frame[test].astype(str).to_numpy()
    rows: list[dict] = []
    held_pairs: list[int] = []  # the held-out significant pairs of each split
    pair_test = ""
    for split in range(cfg.splits):
        seed = cfg.seed + split
        held = np.random.default_rng([seed, 29]).choice(labels, n_held, replace=False)
        in_held = np.isin(test_str, held)
        ev = frame[in_held].reset_index(drop=True)
        arms, pairs, pair_test = significant_pairs(ev, text=text, test=test, outcome=outcome, trials=trials,
                                                   alpha=cfg.alpha, family=family)
        held_pairs.append(len(pairs))
        if not len(pairs):
            raise UserError(f"split {split}: no pair of different texts in the {n_held} held-out tests differs "
                            f"significantly at {label('alpha')} {cfg.alpha:g}; use more tests or a larger {label('heldout')}")
        eval_texts = arms["text"].astype(str).tolist()
        keep = ~log_frame[text].astype(str).isin(set(eval_texts))
        say(f"split {split + 1}/{cfg.splits}: the log's reward on {int(keep.sum())} rows, then the curve ...")
        log_reward = fit_reward(log_frame[keep].reset_index(drop=True), text=text, outcome=outcome, trials=trials,
                                weights=weights, confounders=roles.confounders, family=family, encoder=enc,
                                seed=seed, cv=cfg.cv, diagnose=False)
        train = frame[~in_held].reset_index(drop=True)
        train_texts = train[text].astype(str).tolist()
        eval_x = enc.encode(eval_texts).astype(np.float64)

        data = SplitData(
            log_reward=log_reward.estimator, log_x=enc.encode(log_frame[keep][text].astype(str).tolist()),
            x=enc.encode(train_texts).astype(np.float64), tests=train[test].astype(str).to_numpy(),
            y=train[outcome].to_numpy(float), n=None if trials is None else train[trials].to_numpy(float),
            w=None if ab_weights is None else train[ab_weights].to_numpy(float), eval_x=eval_x, pairs=pairs,
            arm=np.unique(np.asarray(train_texts), return_inverse=True)[1])
        rows += [{"split": split, **r} for r in split_curve(data, [*cfg.sizes, None], family,
                                                            cv=cfg.cv, seed=seed)]
    per_split = pd.DataFrame(rows)
    table = summarize_curve(per_split)
    worth = log_worth(table)
    summary = ("# What is the log worth in A/B tests?\n\n" + (f"Command: `{command}`\n\n" if command else "")
               + f"Log: {len(log)} rows; tests: {len(labels)} with two or more texts, {n_held} held out per split, "
               f"{cfg.splits} splits; family {family}; encoder {cfg.encoder}; held-out pairs per split "
               f"{', '.join(map(str, held_pairs))} ({pair_test}, alpha {cfg.alpha:g}).\n\n```\n{format_curve(table, worth)}\n```\n")
    with atomic_directory(out, force=force, kind=BENCHMARK_DIR, inputs=inputs) as tmp:
        write_marker(tmp, "deconfoundlm-benchmark", study="ab-curve")
        write_table(per_split, tmp / "learning_curve_per_split.csv")
        write_table(table, tmp / "learning_curve.csv")
        write_table(table, tmp / "results.csv")
        write_json({"log_worth": worth, "config": cfg.__dict__, "command": command,
                    "log_fingerprint": log.fingerprint(), "ab_fingerprint": tests.log.fingerprint(),
                    "roles": roles.to_dict(), "test": test, "pair_test": pair_test,
                    "held_out_pairs": held_pairs}, tmp / "learning_curve.json")
        write_text(summary, tmp / "summary.md")
        fig = curve_figure(table, worth)
        fig.savefig(tmp / "learning_curve.png", dpi=90, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        from deconfoundlm.evaluation.report import write_report

        write_report(tmp, tmp / "report.html")
    return table, worth
