"""The main job: does deconfounding matter on real data with randomized ground truth?

On the bundled Upworthy archive, for each seeded split of A/B tests into training and
held-out tests:

1. observational log: one randomly chosen headline package per training test, outcome
   clicks out of impressions, confounder ``test_week`` (time);
2. fit ``naive``, ``confounder-input`` and ``deconfound`` on that log, plus an experimental
   reference: the reward of all packages of the (reliably randomized) training tests alone,
   one intercept per test (``fit-reward PACKAGES --test test_id``), so only within-test,
   randomized variation identifies the text effect;
3. evaluate each reward on held-out tests' within-test pairs of different headlines whose CTR
   difference is significant (|z| > 1.96), excluding the unreliable weeks: pairwise accuracy;
4. what the log is worth in A/B tests (:mod:`deconfoundlm.evaluation.ab_curve`): on the same
   held-out pairs, the tests-only reward and the log's reward grounded on N of the training tests
   (their reliably randomized packages), for each N of ``curve_sizes`` and all.

The CI is a cluster bootstrap over held-out tests (resampled within each split, pooled over
splits).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from deconfoundlm.configs import DemoOptions, StudyConfig
from deconfoundlm.evaluation.ab_curve import (
    SIZES,
    SplitData,
    format_curve,
    log_worth,
    split_curve,
    summarize_curve,
)
from deconfoundlm.evaluation.candidates import CandidateConfig, pick_stories, write_candidates
from deconfoundlm.evaluation.diagnose import diagnose_fitted
from deconfoundlm.evaluation.evaluate import cluster_bootstrap, pair_correct, significant_pairs
from deconfoundlm.evaluation.sensitivity import analyse, cross_fitted_reward
from deconfoundlm.evaluation.upworthy_rewards import fit_rewards, package_features
from deconfoundlm.features.text import MemoizedEncoder, get_encoder
from deconfoundlm.logs import upworthy
from deconfoundlm.logs.ab import contrast_tests
from deconfoundlm.logs.roles import ColumnRoles, ConfounderSpec
from deconfoundlm.logs.validate import validate_log
from deconfoundlm.outputs import (
    DEMO_DIR,
    atomic_directory,
    check_output,
    write_json,
    write_marker,
    write_table,
)
from deconfoundlm.progress import disable, say
from deconfoundlm.rewards.finetune_config import FinetuneConfig

WEEK = (ConfounderSpec("test_week", "time"),)


@dataclass
class DemoConfig:
    """Settings of the Upworthy observational-vs-experimental check."""

    encoder: str = "minilm"
    splits: int = 5  # seeded splits of tests into training / held-out
    heldout: float = 0.3  # share of tests held out for evaluation
    seed: int = 0
    cv: int = 5  # folds for choosing each observational method's penalty
    bootstrap: int = 1000
    max_tests: int | None = None  # subsample tests (quick runs and tests)
    align_steps: int = 0  # DPO steps of the tiny-headlines toy per reward (0: skip it)
    samples: int = 64  # headlines sampled per policy
    finetune: FinetuneConfig | None = None  # also fine-tune the backbone (naive, deconfound, experimental)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)  # SmolLM2 section (stories=0: skip)
    policy_study: StudyConfig | None = None  # also run the policy study (benchmark upworthy)
    curve_sizes: tuple[int, ...] = SIZES  # numbers of A/B tests of the learning curve (() or one split: skip it)


FEATURE_PATTERNS = {"digits": r"\d", "you": r"(?i)\byou(?:r|'re)?\b", "question": r"\?", "exclamation": "!"}


def timeseries(pk: pd.DataFrame) -> pd.DataFrame:
    """Per week: package CTR and the share of headlines with each surface feature."""
    g = pk.assign(**{f"share_{k}": pk["headline"].str.contains(p, regex=True).astype(float)
                     for k, p in FEATURE_PATTERNS.items()}).groupby("test_week")
    out = g[[f"share_{k}" for k in FEATURE_PATTERNS]].mean()
    out.insert(0, "ctr", g["clicks"].sum() / g["impressions"].sum())
    out.insert(1, "packages", g.size())
    return out.reset_index()


def align_and_sample(cfg: DemoConfig, obs: pd.DataFrame, fits: dict, seed: int) -> pd.DataFrame:
    """DPO-tune tiny-headlines on the observational log ranked by the naive and by the
    deconfounded reward; sample from the base and both tuned policies; score every sample."""
    from transformers import set_seed

    from deconfoundlm.alignment.align import AlignConfig, dpo_rows, preference_pairs, train_policy
    from deconfoundlm.alignment.generate import sample
    from deconfoundlm.alignment.policies import load_policy

    texts = obs["headline"].astype(str).tolist()
    rows = []
    for name in ("base", "naive", "deconfound"):
        policy = load_policy("tiny-headlines")
        if name != "base":
            s = fits[name].score(texts)
            pairs = preference_pairs(texts, s, None, 0.5 * float(np.std(s)), cfg.align_steps * 16, seed)
            set_seed(seed)
            train_policy(policy, dpo_rows(policy, pairs), AlignConfig(method="dpo", steps=cfg.align_steps, seed=seed))
        set_seed(seed)
        out = sample(policy, None, cfg.samples, max_new_tokens=28)
        rows += [{"policy": "base" if name == "base" else f"dpo-{name}", "text": t,
                  "naive_reward": a, "deconfound_reward": b}
                 for t, a, b in zip(out, fits["naive"].score(out), fits["deconfound"].score(out), strict=True)]
    return pd.DataFrame(rows)


def learning_curve_split(pk: pd.DataFrame, enc, fits: dict, obs: pd.DataFrame, train_tests: np.ndarray,
                         arms: pd.DataFrame, pairs: pd.DataFrame, seed: int, cfg: DemoConfig) -> list[dict]:
    """One split of the learning curve: the training tests' reliably randomized packages are the
    user's A/B tests, the split's deconfounded reward is the log's; the split's experimental
    reference is the tests-only reward on all of them (the same rows and seed). N counts the
    tests that compare two or more headlines, as ``benchmark ab-curve`` and ``fit-reward --ab``
    do (a test of one headline, e.g. of images only, is not a test of the text)."""
    ab = pk[pk["test_id"].isin(train_tests) & upworthy.reliable(pk)].reset_index(drop=True)
    ab = ab[contrast_tests(ab["test_id"], ab["headline"])].reset_index(drop=True)
    f = package_features(ab, enc)
    eval_texts = arms["text"].astype(str).tolist()
    data = SplitData(log_reward=fits["deconfound"].estimator, log_x=enc.encode(obs["headline"].astype(str).tolist()),
                     x=f.x, tests=ab["test_id"].to_numpy(), y=f.y, n=f.n, w=None,
                     eval_x=enc.encode(eval_texts).astype(np.float64), pairs=pairs, arm=f.arm,
                     tests_only_all=fits["experimental"].estimator if "experimental" in fits else None)
    return split_curve(data, [*cfg.curve_sizes, None], "binomial", cv=cfg.cv, seed=seed)


def run_demo(out: str | Path, cfg: DemoConfig | None = None, force: bool = False) -> pd.DataFrame:
    """Run the check and write under ``out``: ``results.csv`` and ``results.json`` (the table),
    ``per_split.csv``, ``timeseries.csv``, ``reward_by_week.csv``, ``samples.csv``,
    ``diagnostics.json``, ``sensitivity.json``, ``report.html`` and, with candidates,
    ``candidates.csv`` and ``real_headlines.csv``; with the policy study, ``policy_study*``."""
    check_output(out, force, DEMO_DIR)  # before the work, not after it (the write checks again)
    cfg = cfg or DemoConfig()
    t0 = time.time()
    pk = upworthy.load_packages()
    tests = np.sort(pk["test_id"].unique())
    if cfg.max_tests is not None and cfg.max_tests < len(tests):
        tests = np.sort(np.random.default_rng(cfg.seed).choice(tests, cfg.max_tests, replace=False))
        pk = pk[pk["test_id"].isin(tests)]
    pk = pk.reset_index(drop=True)
    # Encode each distinct headline once (the encoder caches on disk across runs, and keeps the
    # vectors in memory for the many fits of this job).
    uniq = np.unique(pk["headline"].to_numpy(str)).tolist()
    say(f"encoding {len(uniq)} distinct headlines with {cfg.encoder} ...")
    enc = MemoizedEncoder(get_encoder(cfg.encoder))
    enc.encode(uniq)

    records, pair_rows, curve_rows = [], [], []
    for split in tqdm(range(cfg.splits), desc="splits", unit="split", disable=disable()):
        seed = cfg.seed + split
        rng = np.random.default_rng(seed)
        held = rng.choice(tests, int(round(cfg.heldout * len(tests))), replace=False)
        fits, obs = fit_rewards(pk, enc, np.setdiff1d(tests, held), seed, cfg)
        if split == 0:
            first = (fits, obs, held)
        ev = pk[pk["test_id"].isin(held) & upworthy.reliable(pk)].reset_index(drop=True)
        arms, pairs, _ = significant_pairs(ev, text="headline", test="test_id", outcome="clicks",
                                           trials="impressions", alpha=upworthy.PAIR_ALPHA)
        for name, reward in fits.items():
            correct = pair_correct(reward.score(arms["text"].astype(str).tolist()), pairs)
            pair_rows.append(pd.DataFrame({"split": split, "method": name, "test_id": pairs["test_id"], "correct": correct}))
            records.append({"split": split, "method": name, "accuracy": correct.mean(), "pairs": len(correct),
                            "tests": pairs["test_id"].nunique(), "alpha": reward.estimator.alpha_})
        if cfg.curve_sizes and cfg.splits >= 2:  # its CIs are over splits
            curve_rows += [{"split": split, **r} for r in learning_curve_split(pk, enc, fits, obs, np.setdiff1d(tests, held), arms,
                                                                   pairs, seed, cfg)]
    per_split = pd.DataFrame(records)
    table, diffs = cluster_bootstrap(pd.concat(pair_rows, ignore_index=True), cfg.bootstrap, cfg.seed,
                                     baseline="naive")
    curve = summarize_curve(pd.DataFrame(curve_rows)) if curve_rows else None
    worth = log_worth(curve) if curve is not None else None

    # The story of split 0: diagnostics, reward against week, and what a tuned generator writes.
    fits, obs, held0 = first
    say("diagnostics of the observational log (split 0) ...")
    log = validate_log(obs, ColumnRoles(text="headline", outcome="clicks",
                       trials="impressions", confounders=WEEK), source="upworthy")
    diag = diagnose_fitted(log, enc.encode(log.texts).astype(np.float64), fits["naive"].estimator,
                           fits["deconfound"].estimator, cfg.cv, cfg.seed)
    say("sensitivity to an unnamed confounder (DoubleML, split 0) ...")
    sens = analyse(log, cross_fitted_reward(log, enc, "binomial", cfg.cv, cfg.seed), "binomial", cfg.cv, cfg.seed)
    headlines = pk["headline"].astype(str).tolist()
    by_week = pd.DataFrame({"test_week": pk["test_week"], "naive": fits["naive"].score(headlines),
                            "deconfound": fits["deconfound"].score(headlines)}).groupby("test_week").mean().reset_index()
    if cfg.align_steps > 0:
        say("aligning tiny-headlines with the naive and deconfounded rewards (DPO) ...")
        samples = align_and_sample(cfg, obs, fits, cfg.seed)
    else:
        samples = pd.DataFrame(columns=["policy", "text", "naive_reward", "deconfound_reward"])
    cand = real = None
    if cfg.candidates.stories > 0:
        say(f"SmolLM2-135M writes {cfg.candidates.k} candidate headlines for {cfg.candidates.stories} held-out "
              "stories; each reward picks one ...")
        stories = pick_stories(pk, held0, cfg.candidates.stories, cfg.seed)
        cand, real = write_candidates(stories, fits["naive"], fits["deconfound"], cfg.candidates, cfg.seed)
    study = None
    if cfg.policy_study is not None:
        from deconfoundlm.evaluation.benchmark.upworthy_study import run_study, write_study_files

        say("policy study: who writes better headlines (SmolLM2, judged on separate A/B tests) ...")
        study = run_study(cfg.policy_study)
    with atomic_directory(out, force=force, kind=DEMO_DIR) as tmp:
        write_marker(tmp, "deconfoundlm-demo")
        write_table(table, tmp / "results.csv")
        write_table(per_split, tmp / "per_split.csv")
        write_table(diffs, tmp / "differences.csv")
        write_json({"held_out_tests_per_split": table["tests_per_split"].iloc[0],
                    "training_tests_per_split": len(tests) - int(round(cfg.heldout * len(tests))),
                    "splits": cfg.splits, "tests": len(tests), "packages": len(pk)}, tmp / "counts.json")
        write_table(timeseries(pk), tmp / "timeseries.csv")
        write_table(by_week, tmp / "reward_by_week.csv")
        write_table(samples, tmp / "samples.csv")
        if cand is not None:
            write_table(cand, tmp / "candidates.csv")
            write_table(real, tmp / "real_headlines.csv")
        if curve is not None:
            write_table(pd.DataFrame(curve_rows), tmp / "learning_curve_per_split.csv")
            write_table(curve, tmp / "learning_curve.csv")
            write_json({"log_worth": worth, "sizes": list(cfg.curve_sizes), "splits": cfg.splits},
                       tmp / "learning_curve.json")
        write_json(diag, tmp / "diagnostics.json")
        write_json(sens, tmp / "sensitivity.json")
        if study is not None:
            write_study_files(study, tmp)
        from deconfoundlm.evaluation.report import write_report

        write_report(tmp, tmp / "report.html")
        write_json({"config": cfg.__dict__, "seconds": time.time() - t0,
                    "results": table.to_dict(orient="records"), "differences": diffs.to_dict(orient="records"),
                    "per_split": per_split.to_dict(orient="records")}, tmp / "results.json")
    table.attrs["differences"] = diffs
    table.attrs["curve"] = (curve, worth)
    return table


def demo_config(options: DemoOptions) -> DemoConfig:
    """The demo's full settings from the options a user sets (``quick``: 400 tests, 2 splits,
    fewer folds, a few DPO steps, a small learning curve), checked before any work."""
    cfg = DemoConfig(encoder=options.encoder, splits=options.splits, seed=options.seed)
    if options.align_steps is not None:
        cfg.align_steps = options.align_steps
    if options.finetune:
        from deconfoundlm.rewards.finetune_config import check_finetune

        cfg.finetune = FinetuneConfig()
        check_finetune(cfg.finetune, "deconfound", options.encoder, None)
    if options.quick:
        cfg.max_tests, cfg.splits, cfg.cv, cfg.bootstrap = 400, min(options.splits, 2), 3, 200
        cfg.align_steps, cfg.samples = (4 if options.align_steps is None else options.align_steps), 8
        cfg.candidates.stories, cfg.candidates.k, cfg.candidates.max_new_tokens = 3, 3, 16
        cfg.curve_sizes = (50, 100)
    if options.curve_sizes is not None:
        cfg.curve_sizes = options.curve_sizes
    if options.stories is not None:
        cfg.candidates.stories = options.stories
    if options.policy_study:
        cfg.policy_study = StudyConfig(encoder=options.encoder, seed=options.seed)
        if options.quick:
            cfg.policy_study = dataclasses.replace(cfg.policy_study, max_tests=400, stories=3, k=2, cv=3,
                                                   bootstrap=200)
    return cfg


def run_demo_command(options: DemoOptions) -> pd.DataFrame:
    """``deconfoundlm demo``: the output checked first, then the settings, then the run."""
    check_output(options.out, options.force, DEMO_DIR)
    return run_demo(options.out, demo_config(options), force=options.force)


def format_table(table: pd.DataFrame) -> str:
    """The accuracy table, the paired differences and (when run) the learning curve."""
    lines = [f"{'method':<18} {'accuracy':>8}  {'95% CI':>15}  {'splits min-max':>15}  {'pairs/split':>11}"]
    for r in table.itertuples():
        lines.append(f"{r.method:<18} {r.accuracy:8.3f}  [{r.ci_low:.3f}, {r.ci_high:.3f}]  "
                     f"{r.split_min:.3f} - {r.split_max:.3f}  {r.pairs_per_split:11.0f}")
    diffs = table.attrs.get("differences")
    if diffs is not None and len(diffs):
        lines.append("")
        for r in diffs.itertuples():
            lines.append(f"{r.method} - {r.baseline}: {r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] "
                         f"(paired cluster bootstrap), higher in {r.splits_won} of {r.splits} splits")
    curve, worth = table.attrs.get("curve", (None, None))
    if curve is not None:
        lines += ["", "What is the log worth? Pairwise accuracy on the held-out pairs against the number of A/B "
                  "tests used (mean over splits, 95% CI over splits):", format_curve(curve, worth)]
    return "\n".join(lines)
