"""What each reward would pick among fluent candidates: the demo's SmolLM2 section.

For held-out Upworthy tests (stories), SmolLM2-135M-Instruct is prompted with the story's lede
(HTML stripped) to write K candidate headlines (seeded sampling). Every candidate is scored by the
naive and the deconfounded reward; each reward picks its best of K. The section shows per story
both picks, where they disagree, the surface features of the picks against all candidates
(digits, "you", questions, length), and the story's real headlines with their A/B result.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from deconfoundlm.logs import upworthy

PROMPT = ("Here is the opening of a news story:\n\n{lede}\n\nWrite one short, catchy headline for this story. "
          "Reply with the headline only, no explanation.")
# Replies that talk about the task instead of being a headline ("Here's a rewritten version:").
META = re.compile(r"(?i)\b(headlines?|rewritten|rewrite|here'?s|here is|i'll|i will|i would|as an ai|sure|"
                  r"certainly|version|story:)\b|:\s*$")
FEATURES = {"digits": r"\d", "you": r"(?i)\byou(?:r|'re)?\b", "question": r"\?"}


@dataclass
class CandidateConfig:
    stories: int = 12  # held-out tests (stories) to write for
    k: int = 8  # candidates per story
    max_new_tokens: int = 24
    temperature: float = 0.7
    lede_chars: int = 400  # the lede is cut at a word boundary after this many characters


def strip_html(text: str) -> str:
    """The lede as plain text: tags dropped, entities decoded, whitespace collapsed."""
    text = re.sub(r"<[^>]+>", " ", str(text))
    return re.sub(r"\s+", " ", html.unescape(text)).strip()


def cut_lede(lede: str, lede_chars: int = 400) -> str:
    """The lede cut at a word boundary after ``lede_chars`` characters (marked with ' ...')."""
    return lede if len(lede) <= lede_chars else lede[:lede_chars].rsplit(" ", 1)[0] + " ..."


def story_prompt(lede: str, lede_chars: int = 400) -> str:
    """The chat prompt asking for a headline for a story, given its (plain-text) lede."""
    return PROMPT.format(lede=cut_lede(lede, lede_chars))


def clean_candidate(text: str) -> str:
    """The first line of a generation, without a 'Headline:' prefix or wrapping quotes/asterisks."""
    line = next((ln for ln in str(text).splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(?:\d+[.)]|[-*])\s+", "", line)  # a list marker
    line = re.sub(r"^\s*(?:\*\*)?(?:headline|title)\s*:\s*", "", line, flags=re.I)
    return line.strip().strip('"“”*').strip()


def is_headline(text: str) -> bool:
    """A usable candidate: 3 to 25 words and not a reply about the task."""
    words = len(text.split())
    return 3 <= words <= 25 and not META.search(text)


def surface_features(texts: list[str]) -> pd.DataFrame:
    s = pd.Series(texts, dtype=str)
    out = {k: s.str.contains(p, regex=True).astype(float) for k, p in FEATURES.items()}
    out["words"] = s.str.split().str.len().astype(float)
    return pd.DataFrame(out)


def story_tests(rows: pd.DataFrame) -> np.ndarray:
    """The tests of ``rows`` that can serve as a story: reliably randomized, a lede of 40+
    characters (HTML stripped) and at least two distinct headlines; sorted."""
    ok = rows[upworthy.reliable(rows)]
    per = ok.assign(lede_len=ok["lede"].fillna("").map(strip_html).str.len()).groupby("test_id").agg(
        lede=("lede_len", "max"), headlines=("headline", "nunique"))
    return np.sort(per.index[(per["lede"] >= 40) & (per["headlines"] >= 2)].to_numpy())


def pick_stories(pk: pd.DataFrame, held_tests: np.ndarray, n: int, seed: int) -> pd.DataFrame:
    """``n`` held-out, reliably randomized tests with a lede and at least two headlines (seeded)."""
    ev = pk[pk["test_id"].isin(held_tests) & upworthy.reliable(pk)].copy()
    ev["lede_text"] = ev["lede"].fillna("").map(strip_html)
    tests = story_tests(ev)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(tests, min(n, len(tests)), replace=False)) if len(tests) else tests
    return ev[ev["test_id"].isin(chosen)]


def write_candidates(stories: pd.DataFrame, naive, deconfound, cfg: CandidateConfig, seed: int):
    """(candidates, real headlines): K SmolLM2 candidates per story with both rewards and picks,
    and the story's real headlines with their A/B result."""
    from transformers import set_seed

    from deconfoundlm.alignment.generate import sample_finished_many
    from deconfoundlm.alignment.policies import load_policy

    policy = load_policy("smollm2-135m")
    ledes = {test_id: cut_lede(max(g["lede_text"], key=len), cfg.lede_chars)
             for test_id, g in stories.groupby("test_id", sort=True)}
    set_seed(seed)
    # Oversampled twice (replies cut off by the token limit dropped and redrawn), batched across
    # stories; the first K distinct replies that read as headlines are kept.
    got = sample_finished_many(policy, [(PROMPT.format(lede=lede), 2 * cfg.k) for lede in ledes.values()],
                               max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                               desc="SmolLM2 candidates")
    rows, cut_off = [], 0
    for (test_id, lede), (raw, cut) in zip(ledes.items(), got, strict=True):
        cut_off += cut
        cands = list(dict.fromkeys(c for c in (clean_candidate(t) for t in raw) if is_headline(c)))[: cfg.k]
        if not cands:
            continue
        rn, rd = naive.score(cands), deconfound.score(cands)
        for j, c in enumerate(cands):
            rows.append({"test_id": test_id, "lede": lede, "candidate": c, "naive_reward": float(rn[j]),
                         "deconfound_reward": float(rd[j]), "naive_pick": j == int(np.argmax(rn)),
                         "deconfound_pick": j == int(np.argmax(rd))})
    cand = pd.DataFrame(rows, columns=["test_id", "lede", "candidate", "naive_reward", "deconfound_reward",
                                       "naive_pick", "deconfound_pick"])
    if len(cand):
        cand = pd.concat([cand, surface_features(cand["candidate"].tolist())], axis=1)
    cand.attrs["cut_off_dropped"] = cut_off
    real = stories[stories["test_id"].isin(cand["test_id"])].copy()
    real = real.groupby(["test_id", "headline"], as_index=False).agg(clicks=("clicks", "sum"),
                                                                   impressions=("impressions", "sum"))
    real["ctr"] = real["clicks"] / real["impressions"]
    real["ab_rank"] = real.groupby("test_id")["ctr"].rank(ascending=False, method="first").astype(int)
    real["naive_reward"] = naive.score(real["headline"].astype(str).tolist())
    real["deconfound_reward"] = deconfound.score(real["headline"].astype(str).tolist())
    return cand, real.sort_values(["test_id", "ab_rank"]).reset_index(drop=True)


def pick_summary(cand: pd.DataFrame) -> pd.DataFrame:
    """Surface features of each reward's picks against all candidates (shares; words: mean)."""
    cols = [*FEATURES, "words"]
    rows = [{"set": "all candidates", "n": len(cand), **cand[cols].mean().to_dict()}]
    for who in ("naive", "deconfound"):
        picks = cand[cand[f"{who}_pick"]]
        rows.append({"set": f"{who} picks", "n": len(picks), **picks[cols].mean().to_dict()})
    return pd.DataFrame(rows)
