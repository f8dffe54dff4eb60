"""Policy stage of the benchmark: does a generator steered by each reward write better texts?

For the rewards of naive, odin, deconfound and oracle (and pessimistic variants), a generator is
steered by each reward and its texts are measured against the DGP's ground truth (f* and the
spurious feature are pure functions of the string, so they apply to generated text):

- ``dpo``: DPO-tune the policy on preference pairs from the simulated log, ranked by the reward,
  then sample from it;
- ``best-of-K``: sample K candidates per prompt from the base policy once, and let each reward
  pick its best of every K (no training: the same candidates for every reward).

A chat policy (SmolLM2-135M-Instruct, or a local chat model) is prompted with a story lede of
the candidate pool (Upworthy packages carry one) and one fixed instruction, and its replies are
cleaned as the demo's candidates are (replies that are not a headline are dropped and counted); a
plain LM (the ``tiny-headlines`` toy) writes unconditionally. Replies cut off by the token limit
are dropped, redrawn and counted. Per policy: mean f*, normalized f* (base 0, oracle 1), spurious rate,
the rate of the scenario's entangled feature (in ``misleading``: hype, which lowers the outcome), fluency
(mean per-token log-likelihood under the base model), on-topic (cosine similarity of the
text and its lede under the benchmark's encoder; chat policies), distinct-2 and the cut-off count.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deconfoundlm.alignment.align import AlignConfig, dpo_rows, preference_pairs, train_policy
from deconfoundlm.alignment.generate import sample_finished
from deconfoundlm.alignment.policies import Policy, load_policy
from deconfoundlm.errors import UserError
from deconfoundlm.evaluation.benchmark import dgp

POLICY_REWARDS = ("naive", "odin", "deconfound", "oracle")
STORY_PROMPT = ("Here is the opening of a news story:\n\n{lede}\n\nWrite one short, catchy headline for this "
                "story. Reply with the headline only, no explanation.")
MAX_K = 64


def parse_policy_method(method: str) -> tuple[str, int]:
    """``dpo`` -> ("dpo", 0); ``best-of-8`` -> ("best-of", 8)."""
    if method == "dpo":
        return "dpo", 0
    m = re.fullmatch(r"best-of-(\d+)", str(method))
    if m and 2 <= int(m.group(1)) <= MAX_K:
        return "best-of", int(m.group(1))
    raise UserError(f"--policy-method {method!r}: use dpo or best-of-K with K from 2 to {MAX_K} (e.g. best-of-8)")


@dataclass
class PolicyStageConfig:
    steps: int = 60  # DPO steps per reward
    batch_size: int = 16
    beta: float = 0.1
    samples: int = 256  # texts per policy
    max_new_tokens: int | None = None  # default: 28 for a plain LM, 48 for a chat policy
    policy: str = "tiny-headlines"  # a built-in policy name or a local causal LM folder
    method: str = "dpo"  # dpo or best-of-K
    lede_chars: int = 400


def distinct_2(texts: list[str]) -> float:
    """Distinct bigrams over all bigrams of the texts (lower-cased words); nan without bigrams."""
    grams = [tuple(w[i : i + 2]) for w in (t.lower().split() for t in texts) for i in range(len(w) - 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def token_loglik(policy: Policy, prompts: list[str | None], texts: list[str], batch: int = 32) -> np.ndarray:
    """Mean per-token log-likelihood of each text as the policy's reply to its prompt."""
    import torch

    tok, model = policy.tokenizer, policy.model
    model.eval()
    out = np.full(len(texts), np.nan)
    with torch.no_grad():
        for i, (p, t) in enumerate(zip(prompts, texts, strict=True)):
            head = policy.prompt_string(p)
            body = (t + (tok.eos_token or "")) if policy.chat else t[len(p or ""):] if p and t.startswith(p) else t
            h = tok(head, add_special_tokens=False)["input_ids"]
            b = tok(body, add_special_tokens=False)["input_ids"]
            if not b:
                continue
            ids = torch.tensor([h + b])
            logits = model(ids).logits[0, len(h) - 1 : -1].float()
            lp = torch.log_softmax(logits, -1).gather(1, ids[0, len(h):, None])[:, 0]
            out[i] = float(lp.mean())
    return out


def _texts(policy: Policy, prompt: str | None, n: int, cfg: PolicyStageConfig) -> tuple[list[str], int, int]:
    """Up to ``n`` finished texts for one prompt, the replies cut off by the token limit, and (chat
    policies) the replies that were not a headline: a chat reply is cleaned as the demo's
    candidates are (its first line, no "Headline:" prefix or quotes) and kept when it reads as
    one (3 to 25 words, not about the task)."""
    from deconfoundlm.evaluation.candidates import clean_candidate, is_headline

    limit = cfg.max_new_tokens or (48 if policy.chat else 28)
    got, cut = sample_finished(policy, prompt, n, limit)
    if not policy.chat:
        return got, cut, 0
    cleaned = [clean_candidate(t) for t in got]
    kept = [t for t in cleaned if is_headline(t)]
    return kept, cut, len(cleaned) - len(kept)


def policy_metrics(texts: list[str], prompts: list[str | None], ledes: list[str | None], base: Policy, config,
                   encoder=None) -> dict[str, float]:
    """The per-policy measures of the module docstring (texts that ended on their own)."""
    if not texts:
        return {"f_mean": float("nan"), "spurious_rate": float("nan"), "entangled_rate": float("nan"),
                "fluency": float("nan"), "on_topic": float("nan"), "distinct_2": float("nan")}
    feats = dgp.text_features(texts, config)
    on_topic = float("nan")
    pairs = [(t, lede) for t, lede in zip(texts, ledes, strict=True) if lede]
    if encoder is not None and pairs:
        a = np.asarray(encoder.encode([t for t, _ in pairs]), dtype=float)
        b = np.asarray(encoder.encode([lede for _, lede in pairs]), dtype=float)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        on_topic = float(cos.mean())
    return {"f_mean": float(dgp.true_effect(feats, config).mean()),
            "spurious_rate": float(dgp.spurious(feats, config).mean()),
            "entangled_rate": float(feats[config["entangled_feature"]].mean()),
            "fluency": float(np.nanmean(token_loglik(base, prompts, texts))),
            "on_topic": on_topic, "distinct_2": distinct_2(texts)}


def _prompts(base: Policy, ledes: list[str] | None, n: int, rng: np.random.Generator, cfg: PolicyStageConfig
             ) -> list[tuple[str | None, str | None]]:
    """(prompt, lede) per prompt: a chat policy writes for ledes (or one fixed instruction), a
    plain LM unconditionally."""
    if not base.chat:
        return [(None, None)] * n
    if not ledes:
        return [(None, None)] * n
    picked = [ledes[i] for i in rng.choice(len(ledes), size=n, replace=len(ledes) < n)]
    cut = [lede if len(lede) <= cfg.lede_chars else lede[: cfg.lede_chars].rsplit(" ", 1)[0] + " ..."
           for lede in picked]
    return [(STORY_PROMPT.format(lede=lede), lede) for lede in cut]


def run_policy_stage(log_texts: list[str], scorers: dict[str, Callable[[list[str]], np.ndarray]], config,
                     seed: int, cfg: PolicyStageConfig, ledes: list[str] | None = None,
                     encoder=None) -> list[dict]:
    """One row per policy (base + one per reward) with the measures of the module docstring."""
    from transformers import set_seed

    kind, k = parse_policy_method(cfg.method)
    rng = np.random.default_rng([seed, 7])
    base = load_policy(cfg.policy)
    if kind == "best-of":
        return _best_of(base, scorers, config, seed, cfg, k, ledes, encoder, rng)
    prompts = _prompts(base, ledes, cfg.samples, rng, cfg)
    set_seed(seed)
    rows = [{"policy": "base", **_sample_and_measure(base, base, prompts, config, cfg, encoder)}]
    for name, scorer in scorers.items():
        s = scorer(log_texts)
        acfg = AlignConfig(method="dpo", steps=cfg.steps, beta=cfg.beta, seed=seed, batch_size=cfg.batch_size)
        pairs = preference_pairs(log_texts, s, None, 0.5 * float(np.std(s)), cfg.steps * cfg.batch_size, seed)
        policy = load_policy(cfg.policy)
        set_seed(seed)
        train_policy(policy, dpo_rows(policy, pairs), acfg)
        set_seed(seed)
        rows.append({"policy": name, **_sample_and_measure(policy, base, prompts, config, cfg, encoder),
                     "pairs": len(pairs)})
    return rows


def _sample_and_measure(policy: Policy, base: Policy, prompts, config, cfg: PolicyStageConfig, encoder) -> dict:
    texts, used, ledes, cut, rejected = [], [], [], 0, 0
    for prompt, lede, count in _grouped(prompts):
        got, c, r = _texts(policy, prompt, count, cfg)
        texts += got
        used += [prompt] * len(got)
        ledes += [lede] * len(got)
        cut, rejected = cut + c, rejected + r
    return {**policy_metrics(texts, used, ledes, base, config, encoder), "samples": len(texts), "cut_off": cut,
            "not_headline": rejected, "examples": " | ".join(texts[:3])}


def _grouped(prompts: list[tuple[str | None, str | None]]) -> list[tuple[str | None, str | None, int]]:
    """Runs of equal consecutive (prompt, lede) as (prompt, lede, count): a plain LM's one
    unconditional prompt is sampled in one call."""
    return [(p, lede, len(list(run))) for (p, lede), run in itertools.groupby(prompts)]


def _best_of(base: Policy, scorers, config, seed: int, cfg: PolicyStageConfig, k: int, ledes, encoder,
             rng: np.random.Generator) -> list[dict]:
    """K candidates per prompt from the base policy (finished replies only), picked by each reward."""
    from transformers import set_seed

    prompts = _prompts(base, ledes, cfg.samples, rng, cfg)
    groups: list[tuple[str | None, str | None, list[str]]] = []
    cut = rejected = 0
    set_seed(seed)
    for prompt, lede, count in _grouped(prompts):
        for _ in range(count):
            cands, c, r = _texts(base, prompt, k, cfg)
            cut, rejected = cut + c, rejected + r
            if cands:
                groups.append((prompt, lede, cands))
    texts_of = {"base": [g[2][0] for g in groups]}  # the base policy: its first finished reply
    flat = [t for g in groups for t in g[2]]
    for name, scorer in scorers.items():
        scores = scorer(flat) if flat else np.zeros(0)
        picks, at = [], 0
        for g in groups:
            picks.append(g[2][int(np.argmax(scores[at : at + len(g[2])]))])
            at += len(g[2])
        texts_of[name] = picks
    prompts_used = [g[0] for g in groups]
    ledes_used = [g[1] for g in groups]
    rows = []
    for name, texts in texts_of.items():
        rows.append({"policy": name, **policy_metrics(texts, prompts_used, ledes_used, base, config, encoder),
                     "samples": len(texts), "cut_off": cut, "not_headline": rejected, "candidates": len(flat), "k": k,
                     "examples": " | ".join(texts[:3])})
    return rows


def normalize(rows: list[dict]) -> list[dict]:
    """Add ``f_normalized``: (f - base) / (oracle - base) within one run."""
    by = {r["policy"]: r["f_mean"] for r in rows}
    denom = by.get("oracle", np.nan) - by["base"]
    for r in rows:
        r["f_normalized"] = (r["f_mean"] - by["base"]) / denom if denom and np.isfinite(denom) else float("nan")
    return rows
