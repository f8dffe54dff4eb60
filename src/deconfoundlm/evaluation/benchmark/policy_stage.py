"""Policy stage of the benchmark: does a generator steered by each reward write better texts?

For the rewards of naive, odin, deconfound and oracle (and pessimistic variants), a generator is
steered by each reward and its texts are measured against the DGP's ground truth (f* and the
spurious feature are pure functions of the string, so they apply to generated text):

- ``dpo``: DPO-tune the policy on preference pairs from the simulated log, ranked by the reward
  (a chat policy: pairs of headlines of the same story, under that story's prompt), then sample
  from it; LoRA adapters (merged back) for every policy but the tiny-headlines toy;
- ``grpo``: GRPO-tune the policy online, each sampled reply scored by the reward (prompts: the
  log's story prompts for a chat policy);
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

import copy
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deconfoundlm.alignment.align import (
    AlignConfig,
    completion_text,
    dpo_rows,
    last_loss,
    preference_pairs,
    train_policy,
)
from deconfoundlm.alignment.generate import sample_finished_many
from deconfoundlm.alignment.policies import Policy, load_policy
from deconfoundlm.errors import UserError
from deconfoundlm.evaluation.benchmark import dgp
from deconfoundlm.evaluation.candidates import story_prompt
from deconfoundlm.options import label

POLICY_REWARDS = ("naive", "odin", "deconfound", "oracle")
MAX_K = 64


def parse_policy_method(method: str) -> tuple[str, int]:
    """``dpo`` -> ("dpo", 0); ``grpo`` -> ("grpo", 0); ``best-of-8`` -> ("best-of", 8)."""
    if method in ("dpo", "grpo"):
        return str(method), 0
    m = re.fullmatch(r"best-of-(\d+)", str(method))
    if m and 2 <= int(m.group(1)) <= MAX_K:
        return "best-of", int(m.group(1))
    raise UserError(f"{label('policy_method')} {method!r}: use dpo, grpo or best-of-K with K from 2 to {MAX_K} "
                    "(e.g. best-of-8)")


@dataclass
class PolicyStageConfig:
    steps: int = 60  # DPO / GRPO steps per reward
    batch_size: int | None = None  # pairs (DPO) / completions (GRPO) per step: 16 for a plain LM, 4 for a chat policy
    beta: float = 0.1
    samples: int | None = None  # texts (prompts) per policy: 256 for a plain LM, 32 for a chat policy
    max_new_tokens: int | None = None  # default: 28 for a plain LM, 48 for a chat policy
    policy: str = "tiny-headlines"  # a built-in policy name or a local causal LM folder
    method: str = "dpo"  # dpo, grpo or best-of-K
    lede_chars: int = 400
    lora: bool | None = None  # LoRA adapters for dpo / grpo (default: on, except for the tiny-headlines toy)
    temperature: float | None = None  # sampling temperature (default: 1.0 for a plain LM, 0.7 for a chat policy)
    num_generations: int = 4  # GRPO: completions per prompt


def _temperature(policy: Policy, cfg: PolicyStageConfig) -> float:
    return cfg.temperature if cfg.temperature is not None else (0.7 if policy.chat else 1.0)


def _limit(policy: Policy, cfg: PolicyStageConfig) -> int:
    return cfg.max_new_tokens or (48 if policy.chat else 28)


def distinct_2(texts: list[str]) -> float:
    """Distinct bigrams over all bigrams of the texts (lower-cased words); nan without bigrams."""
    grams = [tuple(w[i : i + 2]) for w in (t.lower().split() for t in texts) for i in range(len(w) - 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def token_loglik(policy: Policy, prompts: list[str | None], texts: list[str], batch: int = 32) -> np.ndarray:
    """Mean per-token log-likelihood of each text as the policy's reply to its prompt (batched,
    right-padded; nan for an empty text)."""
    import torch

    tok, model = policy.tokenizer, policy.model
    model.eval()
    out = np.full(len(texts), np.nan)
    rows = []
    for i, (p, t) in enumerate(zip(prompts, texts, strict=True)):
        body = (t + (tok.eos_token or "")) if policy.chat else t[len(p or ""):] if p and t.startswith(p) else t
        h = tok(policy.prompt_string(p), add_special_tokens=False)["input_ids"]
        b = tok(body, add_special_tokens=False)["input_ids"]
        if b and h:
            rows.append((i, h, b))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    with torch.no_grad():
        for at in range(0, len(rows), batch):
            chunk = rows[at : at + batch]
            width = max(len(h) + len(b) for _, h, b in chunk)
            ids = torch.tensor([h + b + [pad] * (width - len(h) - len(b)) for _, h, b in chunk])
            mask = torch.tensor([[1] * (len(h) + len(b)) + [0] * (width - len(h) - len(b)) for _, h, b in chunk])
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
            for r, (i, h, b) in enumerate(chunk):
                pos = torch.arange(len(h) - 1, len(h) + len(b) - 1)
                out[i] = float(logp[r, pos, ids[r, pos + 1]].mean())
    return out


def _texts(policy: Policy, requests: list[tuple[str | None, int]], cfg: PolicyStageConfig,
           desc: str | None = None) -> list[tuple[list[str], int, int]]:
    """Per (prompt, n) request: up to ``n`` finished texts, the replies cut off by the token
    limit, and (chat policies) the replies that were not a headline. A chat reply is cleaned as
    the demo's candidates are (its first line, no "Headline:" prefix or quotes) and kept when it
    reads as one (3 to 25 words, not about the task). All requests are sampled in shared batches."""
    return write_headlines(policy, requests, _limit(policy, cfg), _temperature(policy, cfg), desc)


def write_headlines(policy: Policy, requests: list[tuple[str | None, int]], max_new_tokens: int,
                    temperature: float, desc: str | None = None) -> list[tuple[list[str], int, int]]:
    """What :func:`_texts` returns, with the token limit and temperature given."""
    from deconfoundlm.evaluation.candidates import clean_candidate, is_headline

    got = sample_finished_many(policy, requests, max_new_tokens, temperature=temperature, desc=desc)
    if not policy.chat:
        return [(texts, cut, 0) for texts, cut in got]
    out = []
    for texts, cut in got:
        cleaned = [clean_candidate(t) for t in texts]
        kept = [t for t in cleaned if is_headline(t)]
        out.append((kept, cut, len(cleaned) - len(kept)))
    return out


def policy_metrics(texts: list[str], prompts: list[str | None], ledes: list[str | None], base: Policy, config,
                   encoder=None) -> dict[str, float]:
    """The per-policy measures of the module docstring (texts that ended on their own)."""
    if not texts:
        return {"f_mean": float("nan"), "spurious_rate": float("nan"), "entangled_rate": float("nan"),
                "fluency": float("nan"), "on_topic": float("nan"), "distinct_2": float("nan")}
    feats = dgp.text_features(texts, config)
    return {"f_mean": float(dgp.true_effect(feats, config).mean()),
            "spurious_rate": float(dgp.spurious(feats, config).mean()),
            "entangled_rate": float(feats[config["entangled_feature"]].mean()),
            "fluency": float(np.nanmean(token_loglik(base, prompts, texts))),
            "on_topic": on_topic(texts, ledes, encoder), "distinct_2": distinct_2(texts)}


def on_topic(texts: list[str], ledes: list[str | None], encoder) -> float:
    """Mean cosine similarity of each text and its lede under ``encoder`` (nan without ledes)."""
    pairs = [(t, lede) for t, lede in zip(texts, ledes, strict=True) if lede]
    if encoder is None or not pairs:
        return float("nan")
    a = np.asarray(encoder.encode([t for t, _ in pairs]), dtype=float)
    b = np.asarray(encoder.encode([lede for _, lede in pairs]), dtype=float)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(cos.mean())


def _prompts(base: Policy, ledes: list[str] | None, n: int, rng: np.random.Generator, cfg: PolicyStageConfig
             ) -> list[tuple[str | None, str | None]]:
    """(prompt, lede) per text to write: a chat policy writes for ledes (or one fixed
    instruction), a plain LM unconditionally."""
    if not base.chat or not ledes:
        return [(None, None)] * n
    picked = [ledes[i] for i in rng.choice(len(ledes), size=n, replace=len(ledes) < n)]
    return [(story_prompt(lede, cfg.lede_chars), lede) for lede in picked]


def run_policy_stage(log_texts: list[str], scorers: dict[str, Callable[[list[str]], np.ndarray]], config,
                     seed: int, cfg: PolicyStageConfig, ledes: list[str] | None = None,
                     encoder=None, log_ledes: list[str | None] | None = None) -> list[dict]:
    """One row per policy (base + one per reward) with the measures of the module docstring.

    ``ledes``: the stories to write for (chat policies); ``log_ledes``: the lede of each log
    text, so that a chat policy is tuned on (story prompt, chosen, rejected) within a story."""
    from transformers import set_seed

    kind, k = parse_policy_method(cfg.method)
    rng = np.random.default_rng([seed, 7])
    base = load_policy(cfg.policy)
    if kind == "best-of":
        return _best_of(base, scorers, config, seed, cfg, k, ledes, encoder, rng)
    prompts = _prompts(base, ledes, cfg.samples or (32 if base.chat else 256), rng, cfg)
    set_seed(seed)
    rows = [{"policy": "base", **_sample_and_measure(base, base, prompts, config, cfg, encoder, "base")}]
    user_prompts = ([story_prompt(x, cfg.lede_chars) if x else "" for x in log_ledes]
                    if base.chat and log_ledes is not None else None)
    for name, scorer in scorers.items():
        t0 = time.time()
        policy = Policy(name=base.name, model=copy.deepcopy(base.model), tokenizer=base.tokenizer, chat=base.chat)
        set_seed(seed)
        extra = tune_policy(policy, kind, log_texts, user_prompts, scorer, cfg, seed, desc=name)
        set_seed(seed)
        rows.append({"policy": name, **_sample_and_measure(policy, base, prompts, config, cfg, encoder, name),
                     **extra, "train_seconds": extra.pop("train_seconds", time.time() - t0)})
    return rows


def tune_policy(policy: Policy, kind: str, log_texts: list[str], user_prompts: list[str] | None,
                scorer: Callable[[list[str]], np.ndarray], cfg: PolicyStageConfig, seed: int,
                desc: str = "") -> dict:
    """DPO or GRPO-tune ``policy`` in place with TRL (LoRA adapters merged back where asked).

    DPO: preference pairs of log texts ranked by the reward, more than half an SD apart; with
    ``user_prompts`` (a chat policy) pairs are formed within a story and trained under its story
    prompt. GRPO: the prompts are the log's story prompts (or the fixed instruction); a sampled
    reply is scored by the reward after the demo's cleaning, and a reply that is not a headline
    gets the lowest reward of its batch."""
    lora = cfg.lora if cfg.lora is not None else policy.name != "tiny-headlines"
    batch = cfg.batch_size or (4 if policy.chat else 16)
    acfg = AlignConfig(method=kind, steps=cfg.steps, beta=cfg.beta, seed=seed, batch_size=batch,
                       lora=lora, learning_rate=2e-4 if lora else 5e-4, num_generations=cfg.num_generations,
                       max_completion_length=_limit(policy, cfg))
    t0 = time.time()
    if kind == "dpo":
        s = scorer(log_texts)
        pairs = preference_pairs(log_texts, s, user_prompts, 0.5 * float(np.std(s)), cfg.steps * batch,
                                 seed)
        if not len(pairs):
            raise UserError(f"no two texts of the log differ by more than half an SD of the {desc or ''} reward; "
                            "no preference pair to train on (use a larger log)")
        trainer = train_policy(policy, dpo_rows(policy, pairs, by_prompt=user_prompts is not None), acfg,
                               desc=f"dpo ({desc})")
        return {"pairs": len(pairs), "lora": lora, "train_seconds": time.time() - t0,
                "final_loss": last_loss(trainer)}
    n_prompts = max(1, cfg.steps * batch // cfg.num_generations)
    pool = user_prompts if user_prompts else [None]
    order = np.random.default_rng([seed, 11]).permutation(len(pool))
    rows = [{"prompt": policy.prompt(pool[order[i % len(pool)]] or None)} for i in range(n_prompts)]
    trainer = train_policy(policy, rows, acfg, reward_fn=StageReward(scorer, policy.chat), desc=f"grpo ({desc})")
    return {"prompts": n_prompts, "lora": lora, "train_seconds": time.time() - t0, "final_loss": last_loss(trainer)}


class StageReward:
    """A TRL reward function from a policy-stage scorer: a chat reply is cleaned as the demo's
    candidates are; one that is not a headline gets the lowest reward of its batch."""

    def __init__(self, scorer: Callable[[list[str]], np.ndarray], chat: bool):
        self.scorer, self.chat = scorer, chat
        self.__name__ = "policy_stage_reward"

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        from deconfoundlm.evaluation.candidates import clean_candidate, is_headline

        texts = [completion_text(c) for c in completions]
        if not self.chat:
            return [float(x) for x in self.scorer(texts)]
        texts = [clean_candidate(t) for t in texts]
        ok = np.array([is_headline(t) for t in texts])
        r = np.asarray(self.scorer(texts), dtype=float)
        floor = float(r[ok].min()) if ok.any() else 0.0
        return [float(x) if good else floor for x, good in zip(r, ok, strict=True)]


def _sample_and_measure(policy: Policy, base: Policy, prompts, config, cfg: PolicyStageConfig, encoder,
                        desc: str) -> dict:
    runs = _grouped(prompts)
    got = _texts(policy, [(p, count) for p, _, count in runs], cfg, desc=f"sampling ({desc})")
    texts, used, ledes, cut, rejected = [], [], [], 0, 0
    for (prompt, lede, _), (kept, c, r) in zip(runs, got, strict=True):
        texts += kept
        used += [prompt] * len(kept)
        ledes += [lede] * len(kept)
        cut, rejected = cut + c, rejected + r
    return {**policy_metrics(texts, used, ledes, base, config, encoder), "samples": len(texts), "cut_off": cut,
            "not_headline": rejected, "examples": " | ".join(texts[:3])}


def _grouped(prompts: list[tuple[str | None, str | None]]) -> list[tuple[str | None, str | None, int]]:
    """Runs of equal consecutive (prompt, lede) as (prompt, lede, count): a plain LM's one
    unconditional prompt is one request."""
    return [(p, lede, len(list(run))) for (p, lede), run in itertools.groupby(prompts)]


def _best_of(base: Policy, scorers, config, seed: int, cfg: PolicyStageConfig, k: int, ledes, encoder,
             rng: np.random.Generator) -> list[dict]:
    """K candidates per prompt from the base policy (finished replies only), picked by each reward."""
    from transformers import set_seed

    prompts = _prompts(base, ledes, cfg.samples or (32 if base.chat else 256), rng, cfg)
    set_seed(seed)
    got = _texts(base, [(p, k) for p, _ in prompts], cfg, desc=f"best-of-{k} candidates")
    groups = [(p, lede, cands) for (p, lede), (cands, _, _) in zip(prompts, got, strict=True) if cands]
    cut, rejected = sum(g[1] for g in got), sum(g[2] for g in got)
    texts_of = {"base": [g[2][0] for g in groups]}  # the base policy: its first finished reply
    for name, scorer in scorers.items():
        texts_of[name] = best_of([g[2] for g in groups], scorer)
    prompts_used = [g[0] for g in groups]
    ledes_used = [g[1] for g in groups]
    rows = []
    for name, texts in texts_of.items():
        rows.append({"policy": name, **policy_metrics(texts, prompts_used, ledes_used, base, config, encoder),
                     "samples": len(texts), "cut_off": cut, "not_headline": rejected, "candidates": sum(len(g[2]) for g in groups), "k": k,
                     "examples": " | ".join(texts[:3])})
    return rows


def best_of(candidates: list[list[str]], scorer: Callable[[list[str]], np.ndarray]) -> list[str | None]:
    """Each list's candidate with the highest score (None for an empty list), all scored in one call."""
    flat = [t for c in candidates for t in c]
    scores = scorer(flat) if flat else np.zeros(0)
    picks, at = [], 0
    for c in candidates:
        picks.append(c[int(np.argmax(scores[at : at + len(c)]))] if c else None)
        at += len(c)
    return picks


def normalize(rows: list[dict]) -> list[dict]:
    """Add ``f_normalized``: (f - base) / (oracle - base) within one run."""
    by = {r["policy"]: r["f_mean"] for r in rows}
    denom = by.get("oracle", np.nan) - by["base"]
    for r in rows:
        r["f_normalized"] = (r["f_mean"] - by["base"]) / denom if denom and np.isfinite(denom) else float("nan")
    return rows
