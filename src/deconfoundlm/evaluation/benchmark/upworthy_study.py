"""Who writes better Upworthy headlines? A policy study on real A/B data.

The archive's A/B tests are split three ways (seeded):

- training tests: the observational log of the rewards, as in the demo (one package per test;
  ``naive``, and ``deconfound`` with the week as confounder), and the ``experimental`` reward
  (``deconfound`` on every reliably randomized package of these tests, the test id as confounder);
- judge tests: the judge is an experimental reward fitted on the randomized within-test variation
  of these tests only; a share of them is held out to measure the judge's own pairwise accuracy
  on significant A/B pairs;
- story tests: tests with a lede and two or more headlines; SmolLM2-135M-Instruct writes
  headlines for each story's lede.

Policies: ``base`` (SmolLM2 as it is: the mean over its K candidates, the score of one draw),
``best-of-K`` with each reward (each picks among the same K finished candidates of a story) and,
with ``dpo_steps``, LoRA-DPO with each reward (pairs of real headlines of the same training
story, ordered by the reward and more than half an SD apart, under that story's prompt; then
``samples`` headlines per story).

Per policy: the judge score (log-odds of a click, mean over a story's headlines) gain over base
with a story-bootstrap 95% CI; the win rate against the naive policy of the same kind (stories
where its judge score is higher; ties count half); fluency (mean per-token log-likelihood under
the base model), on-topic (cosine of headline and lede under the encoder), the surface-feature
rates (digits, "you", question mark, words) and distinct-2. The stories' real headlines are scored
by the judge as a reference (the A/B winner and the mean of a story's real headlines).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from deconfoundlm.configs import StudyConfig
from deconfoundlm.errors import UserError
from deconfoundlm.evaluation.benchmark.policy_stage import (
    PolicyStageConfig,
    best_of,
    distinct_2,
    on_topic,
    token_loglik,
    tune_policy,
    write_headlines,
)
from deconfoundlm.evaluation.candidates import (
    story_prompt,
    story_tests,
    strip_html,
    surface_features,
)
from deconfoundlm.evaluation.evaluate import pair_correct, significant_pairs
from deconfoundlm.evaluation.upworthy_rewards import experimental_reward, fit_rewards
from deconfoundlm.features.text import MemoizedEncoder, get_encoder
from deconfoundlm.logs import upworthy
from deconfoundlm.options import label
from deconfoundlm.progress import disable, say

REWARDS = ("naive", "deconfound", "experimental")
STUDY_FILES = ("policy_study.csv", "policy_study_stories.csv", "policy_study_examples.csv", "policy_study.json")
SURFACE = ("digits", "you", "question", "words")


def split_tests(pk: pd.DataFrame, cfg: StudyConfig) -> dict[str, np.ndarray]:
    """Seeded three-way split: story tests (reliable, a lede of 40+ characters, 2+ headlines),
    then judge tests (fit / held out) and training tests from the rest."""
    rng = np.random.default_rng([cfg.seed, 31])
    eligible = story_tests(pk)
    tests = np.sort(pk["test_id"].unique())
    if len(eligible) < 2:
        raise UserError(f"the archive holds fewer than 2 story tests with a lede (use more {label('max_tests')})")
    stories = np.sort(rng.choice(eligible, min(cfg.stories, len(eligible)), replace=False))
    rest = rng.permutation(np.setdiff1d(tests, stories))
    n_judge = int(round(cfg.judge_share * len(rest)))
    judge, train = rest[:n_judge], np.sort(rest[n_judge:])
    n_held = int(round(cfg.judge_heldout * len(judge)))
    return {"story": stories, "judge_fit": np.sort(judge[n_held:]), "judge_heldout": np.sort(judge[:n_held]),
            "train": train}


def fit_judge(pk: pd.DataFrame, enc, split: dict[str, np.ndarray], cfg: StudyConfig):
    """The judge (randomized within-test variation of the judge tests) and its pairwise accuracy
    on the held-out judge tests' significant A/B pairs."""
    fit = pk[pk["test_id"].isin(split["judge_fit"]) & upworthy.reliable(pk)]
    judge = experimental_reward(fit, enc, cfg.cv, cfg.seed)
    ev = pk[pk["test_id"].isin(split["judge_heldout"]) & upworthy.reliable(pk)].reset_index(drop=True)
    arms, pairs, _ = significant_pairs(ev, text="headline", test="test_id", outcome="clicks", trials="impressions",
                                       alpha=upworthy.PAIR_ALPHA)
    correct = pair_correct(judge.score(arms["text"].astype(str).tolist()), pairs)
    return judge, {"tests": int(len(split["judge_fit"])), "packages": int(len(fit)),
                   "heldout_tests": int(len(split["judge_heldout"])), "heldout_pairs": int(len(pairs)),
                   "heldout_accuracy": float(correct.mean()) if len(pairs) else float("nan")}


def _stories(pk: pd.DataFrame, tests: np.ndarray, lede_chars: int) -> pd.DataFrame:
    """One row per story test: its lede (plain text, the longest), prompt, real A/B winner."""
    g = pk[pk["test_id"].isin(tests)].assign(lede_text=lambda d: d["lede"].fillna("").map(strip_html))
    rows = []
    for test_id, t in g.groupby("test_id", sort=True):
        lede = max(t["lede_text"], key=len)
        real = t.groupby("headline", as_index=False)[["clicks", "impressions"]].sum()
        real["ctr"] = real["clicks"] / real["impressions"]
        real = real.sort_values("ctr", ascending=False)
        rows.append({"test_id": test_id, "lede": lede, "prompt": story_prompt(lede, lede_chars),
                     "winner": str(real["headline"].iloc[0]), "winner_ctr": float(real["ctr"].iloc[0]),
                     "real_headlines": real["headline"].astype(str).tolist()})
    return pd.DataFrame(rows)


def _training_pairs_data(pk: pd.DataFrame, tests: np.ndarray, lede_chars: int) -> tuple[list[str], list[str]]:
    """The training tests' distinct real headlines and their story prompts (DPO data)."""
    g = pk[pk["test_id"].isin(tests)].assign(lede_text=lambda d: d["lede"].fillna("").map(strip_html))
    g = g[g["lede_text"].str.len() >= 40]
    lede = g.groupby("test_id")["lede_text"].agg(lambda s: max(s, key=len))
    g = g.drop_duplicates(["test_id", "headline"])
    return g["headline"].astype(str).tolist(), [story_prompt(lede[t], lede_chars) for t in g["test_id"]]


def run_study(cfg: StudyConfig) -> dict:
    """Run the study; returns the tables and facts :func:`write_study` writes."""
    from transformers import set_seed

    from deconfoundlm.alignment.policies import Policy, load_policy

    t0 = time.time()
    pk = upworthy.load_packages()
    if cfg.max_tests is not None:
        tests = np.sort(pk["test_id"].unique())
        if cfg.max_tests < len(tests):
            keep = np.random.default_rng(cfg.seed).choice(tests, cfg.max_tests, replace=False)
            pk = pk[pk["test_id"].isin(keep)]
    pk = pk.reset_index(drop=True)
    split = split_tests(pk, cfg)
    enc = MemoizedEncoder(get_encoder(cfg.encoder))
    say(f"encoding {pk['headline'].nunique()} distinct headlines with {cfg.encoder} ...")
    enc.encode(np.unique(pk["headline"].to_numpy(str)).tolist())
    say(f"fitting the rewards on {len(split['train'])} training tests and the judge on "
          f"{len(split['judge_fit'])} judge tests ...")
    fits, _ = fit_rewards(pk, enc, split["train"], cfg.seed, cfg, names=REWARDS)
    judge, judge_info = fit_judge(pk, enc, split, cfg)

    stories = _stories(pk, split["story"], cfg.lede_chars)
    base = load_policy("smollm2-135m")
    set_seed(cfg.seed)
    # Twice K drawn per story: the first K distinct finished headlines are the candidates.
    got = write_headlines(base, [(p, 2 * cfg.k) for p in stories["prompt"]], cfg.max_new_tokens, cfg.temperature,
                          desc=f"best-of-{cfg.k} candidates")
    candidates = [list(dict.fromkeys(kept))[: cfg.k] for kept, _, _ in got]
    counts = {"base": (sum(c for _, c, _ in got), sum(r for _, _, r in got))}
    written: dict[str, list[list[str]]] = {"base": candidates}
    for name in REWARDS:
        written[f"best-of-{cfg.k} {name}"] = [[] if p is None else [p] for p in best_of(candidates, fits[name].score)]
        counts[f"best-of-{cfg.k} {name}"] = counts["base"]
    train_seconds = {}
    if cfg.dpo_steps > 0:
        texts, prompts = _training_pairs_data(pk, split["train"], cfg.lede_chars)
        pcfg = PolicyStageConfig(steps=cfg.dpo_steps, batch_size=cfg.dpo_batch, policy="smollm2-135m", method="dpo",
                                 max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, lora=True)
        for name in REWARDS:
            policy = Policy(name=base.name, model=copy.deepcopy(base.model), tokenizer=base.tokenizer, chat=True)
            set_seed(cfg.seed)
            info = tune_policy(policy, "dpo", texts, prompts, fits[name].score, pcfg, cfg.seed, desc=name)
            train_seconds[f"dpo {name}"] = info["train_seconds"]
            set_seed(cfg.seed)
            out = write_headlines(policy, [(p, cfg.samples) for p in stories["prompt"]], cfg.max_new_tokens,
                                  cfg.temperature, desc=f"sampling (dpo {name})")
            written[f"dpo {name}"] = [kept for kept, _, _ in out]
            counts[f"dpo {name}"] = (sum(c for _, c, _ in out), sum(r for _, _, r in out))
            del policy
    per_story = _per_story(stories, written, judge)
    table = summarize_study(per_story, stories, base, enc, counts, cfg, train_seconds)
    examples = _examples(per_story, stories, cfg.seed)
    facts = {"judge": judge_info, "tests": {k: int(len(v)) for k, v in split.items()},
             "stories_written": int(per_story.loc[per_story["policy"] == "base", "test_id"].nunique()),
             "train_seconds": train_seconds, "seconds": time.time() - t0, "config": {k: v for k, v in asdict(cfg).items() if k not in ("out", "force")}}
    return {"table": table, "per_story": per_story, "examples": examples, "facts": facts}


def _per_story(stories: pd.DataFrame, written: dict[str, list[list[str]]], judge) -> pd.DataFrame:
    """One row per (story, policy, headline) with the judge score; the real headlines as
    reference policies ("real A/B winner", "real headlines")."""
    rows = []
    for name, per in written.items():
        for story, texts in zip(stories.itertuples(), per, strict=True):
            rows += [{"test_id": story.test_id, "policy": name, "headline": t} for t in texts]
    for story in stories.itertuples():
        rows.append({"test_id": story.test_id, "policy": "real A/B winner", "headline": story.winner})
        rows += [{"test_id": story.test_id, "policy": "real headlines", "headline": h} for h in story.real_headlines]
    df = pd.DataFrame(rows, columns=["test_id", "policy", "headline"])
    df["judge"] = judge.score(df["headline"].tolist()) if len(df) else np.zeros(0)
    return df


def _bootstrap(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile interval of the mean over stories (stories resampled)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def summarize_study(per_story: pd.DataFrame, stories: pd.DataFrame, base, enc, counts: dict, cfg: StudyConfig,
                    train_seconds: dict) -> pd.DataFrame:
    """One row per policy (and the real-headline references): the measures of the module docstring."""
    rng = np.random.default_rng([cfg.seed, 5])
    story_mean = per_story.groupby(["policy", "test_id"], sort=False)["judge"].mean().unstack("policy")
    prompt_of = dict(zip(stories["test_id"], stories["prompt"], strict=True))
    lede_of = dict(zip(stories["test_id"], stories["lede"], strict=True))
    rows = []
    for name in tqdm(list(dict.fromkeys(per_story["policy"])), desc="measuring policies", unit="policy",
                     disable=disable()):
        sub = per_story[per_story["policy"] == name]
        texts = sub["headline"].tolist()
        gain = (story_mean[name] - story_mean["base"]).dropna().to_numpy()
        lo, hi = _bootstrap(gain, cfg.bootstrap, rng)
        kind = name.split(" ")[0]
        rival = f"{kind} naive" if kind in ("dpo", f"best-of-{cfg.k}") else None
        win = w_lo = w_hi = float("nan")
        if rival in story_mean and rival != name:
            both = story_mean[[name, rival]].dropna().to_numpy()
            wins = (both[:, 0] > both[:, 1]) + 0.5 * (both[:, 0] == both[:, 1])
            win = float(wins.mean()) if len(wins) else float("nan")
            w_lo, w_hi = _bootstrap(wins.astype(float), cfg.bootstrap, rng)
        real = name.startswith("real")
        fluency = token_loglik(base, [prompt_of[t] for t in sub["test_id"]], texts) if texts else np.zeros(0)
        surf = surface_features(texts).mean() if texts else pd.Series(dtype=float)
        cut, not_headline = counts.get(name, (None, None))
        rows.append({"policy": name, "stories": int(sub["test_id"].nunique()), "headlines": len(texts),
                     "judge": float(sub.groupby("test_id")["judge"].mean().mean()) if texts else float("nan"),
                     "gain_vs_base": float(gain.mean()) if len(gain) else float("nan"), "gain_ci_low": lo,
                     "gain_ci_high": hi, "win_rate_vs_naive": win, "win_ci_low": w_lo, "win_ci_high": w_hi,
                     "fluency": float(np.nanmean(fluency)) if len(fluency) else float("nan"),
                     "on_topic": on_topic(texts, [lede_of[t] for t in sub["test_id"]], enc),
                     **{f: float(surf.get(f, float("nan"))) for f in SURFACE}, "distinct_2": distinct_2(texts),
                     "cut_off": cut, "not_headline": not_headline, "reference": real,
                     "train_seconds": train_seconds.get(name)})
    return pd.DataFrame(rows)


def _examples(per_story: pd.DataFrame, stories: pd.DataFrame, seed: int, n: int = 5) -> pd.DataFrame:
    """``n`` stories (seeded) with every policy's first headline next to the real A/B winner."""
    have = per_story.loc[per_story["policy"] == "base", "test_id"].unique()
    pick = np.sort(np.random.default_rng([seed, 3]).choice(have, min(n, len(have)), replace=False)) if len(have) \
        else have
    rows = []
    for test_id in pick:
        s = stories[stories["test_id"] == test_id].iloc[0]
        g = per_story[per_story["test_id"] == test_id]
        row = {"test_id": test_id, "lede": s["lede"][:300]}
        for name, h in g[g["policy"] != "real headlines"].groupby("policy", sort=False):
            row[name] = f"{h['headline'].iloc[0]} [{h['judge'].iloc[0]:+.2f}]"
        row["real A/B winner"] += f" (CTR {100 * s['winner_ctr']:.2f}%)"
        rows.append(row)
    return pd.DataFrame(rows)


def _num(x, fmt: str = "{:.3f}") -> str:
    """A number for the summary; '-' where it was not measured (None in JSON, nan in memory)."""
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def study_markdown(table: pd.DataFrame, facts: dict, command: str | None = None) -> str:
    """The study as Markdown: judge, sizes, the policy table."""
    j = facts["judge"]
    lines = ["# Who writes better Upworthy headlines? (SmolLM2-135M-Instruct)", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"Tests: {facts['tests']['train']} training, {j['tests']} judge (+{j['heldout_tests']} held out), "
              f"{facts['tests']['story']} story tests ({facts['stories_written']} with headlines); "
              f"{facts['seconds'] / 60:.1f} min.",
              f"Judge: experimental reward on {j['packages']} packages of the judge tests; pairwise accuracy on "
              f"{j['heldout_pairs']} significant pairs of held-out judge tests: {_num(j['heldout_accuracy'])}.", "",
              "| policy | stories | headlines | judge gain vs base [95% CI] | win rate vs naive [95% CI] | fluency | "
              "on-topic | digits | you | question | words | distinct-2 |",
              "|---|---:|---:|---|---|---|---|---|---|---|---|---|"]

    for r in table.itertuples():
        gain = f"{_num(r.gain_vs_base, '{:+.3f}')} [{_num(r.gain_ci_low, '{:+.3f}')}, {_num(r.gain_ci_high, '{:+.3f}')}]"
        win = "-" if not np.isfinite(r.win_rate_vs_naive) else \
            f"{r.win_rate_vs_naive:.2f} [{_num(r.win_ci_low, '{:.2f}')}, {_num(r.win_ci_high, '{:.2f}')}]"
        lines.append(f"| {r.policy} | {r.stories} | {r.headlines} | {gain} | {win} | {_num(r.fluency)} | "
                     f"{_num(r.on_topic)} | {_num(r.digits, '{:.2f}')} | {_num(r.you, '{:.2f}')} | {_num(r.question, '{:.2f}')} | "
                     f"{_num(r.words, '{:.1f}')} | {_num(r.distinct_2)} |")
    lines += ["", "judge gain: the judge's score (log-odds of a click) of a policy's headlines minus the base "
              "model's, mean over stories; win rate: share of stories where the policy's headline scores higher "
              "with the judge than the naive-reward policy of the same kind (ties half); fluency: mean per-token "
              "log-likelihood under the base model; on-topic: cosine of headline and lede (encoder); real "
              "headlines: the story's own A/B-tested headlines (reference, not a policy)."]
    if facts.get("train_seconds"):
        lines.append("DPO time per reward: " + ", ".join(f"{k} {v / 60:.1f} min"
                                                           for k, v in facts["train_seconds"].items()) + ".")
    return "\n".join(lines) + "\n"


def write_study_files(result: dict, directory, command: str | None = None) -> None:
    """The study's files in ``directory`` (a folder being written atomically)."""
    from pathlib import Path

    from deconfoundlm.outputs import write_json, write_table, write_text

    d = Path(directory)
    write_table(result["table"], d / "policy_study.csv")
    write_table(result["per_story"], d / "policy_study_stories.csv")
    write_table(result["examples"], d / "policy_study_examples.csv")
    write_json({**result["facts"], "command": command}, d / "policy_study.json")
    write_text(study_markdown(result["table"], result["facts"], command), d / "policy_study.md")


def run_and_write(cfg: StudyConfig, command: str | None = None) -> pd.DataFrame:
    """``deconfoundlm benchmark upworthy``: run the study, write its files, a summary and a report
    into ``cfg.out`` (``command``: the command line recorded in them)."""
    from deconfoundlm.outputs import BENCHMARK_DIR, atomic_directory, check_output, write_marker

    out, force = cfg.out, cfg.force
    if out is None:
        raise UserError("give out: the folder of the study's results")
    check_output(out, force, BENCHMARK_DIR)
    result = run_study(cfg)
    with atomic_directory(out, force=force, kind=BENCHMARK_DIR) as tmp:
        write_marker(tmp, "deconfoundlm-benchmark", study="upworthy-policy")
        write_study_files(result, tmp, command)
        from deconfoundlm.evaluation.report import write_report

        write_report(tmp, tmp / "report.html")
    return result["table"]
