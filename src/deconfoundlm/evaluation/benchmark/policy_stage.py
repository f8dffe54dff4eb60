"""Policy stage of the benchmark: does a generator tuned to each reward write better texts?

For the rewards of naive, odin, deconfound and oracle: DPO-tune ``tiny-headlines`` on
preference pairs from the same simulated log (ranked by that reward), sample texts, and
measure the true effect f* and the spurious-feature rate of the samples (both are pure
functions of the string, so they apply to generated text). Samples cut off by the token limit
are dropped, redrawn and counted (``cut_off``). The base (untuned) policy is
sampled the same way; normalized f*: base 0, oracle-tuned 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deconfoundlm.alignment.align import AlignConfig, dpo_rows, preference_pairs, train_policy
from deconfoundlm.alignment.generate import sample_finished
from deconfoundlm.alignment.policies import load_policy
from deconfoundlm.evaluation.benchmark import dgp

POLICY_REWARDS = ("naive", "odin", "deconfound", "oracle")


@dataclass
class PolicyStageConfig:
    steps: int = 60  # DPO steps per reward
    batch_size: int = 16
    beta: float = 0.1
    samples: int = 256  # texts sampled per policy
    max_new_tokens: int = 28


def _sample_metrics(policy, cfg: PolicyStageConfig, config) -> dict[str, float]:
    """Mean f* and spurious rate of the policy's samples that ended on their own; replies the
    token limit cut off are dropped, redrawn and counted (``cut_off``)."""
    texts, cut = sample_finished(policy, None, cfg.samples, cfg.max_new_tokens)
    feats = dgp.text_features(texts, config)
    return {"f_mean": float(dgp.true_effect(feats, config).mean()) if texts else float("nan"),
            "spurious_rate": float(dgp.spurious(feats, config).mean()) if texts else float("nan"),
            "samples": len(texts), "cut_off": cut, "examples": " | ".join(texts[:3])}


def run_policy_stage(log_texts: list[str], scores: dict[str, np.ndarray], config, seed: int,
                     cfg: PolicyStageConfig) -> list[dict]:
    """One row per policy (base + one per reward in ``scores``) with f_mean and spurious_rate."""
    from transformers import set_seed

    base = load_policy("tiny-headlines")
    set_seed(seed)
    rows = [{"policy": "base", **_sample_metrics(base, cfg, config)}]
    for name, s in scores.items():
        acfg = AlignConfig(method="dpo", steps=cfg.steps, beta=cfg.beta, seed=seed, batch_size=cfg.batch_size)
        pairs = preference_pairs(log_texts, s, None, 0.5 * float(np.std(s)), cfg.steps * cfg.batch_size, seed)
        policy = load_policy("tiny-headlines")
        set_seed(seed)
        train_policy(policy, dpo_rows(policy, pairs), acfg)
        set_seed(seed)
        rows.append({"policy": name, **_sample_metrics(policy, cfg, config), "pairs": len(pairs)})
    return rows


def normalize(rows: list[dict]) -> list[dict]:
    """Add ``f_normalized``: (f - base) / (oracle - base) within one run."""
    by = {r["policy"]: r["f_mean"] for r in rows}
    denom = by.get("oracle", np.nan) - by["base"]
    for r in rows:
        r["f_normalized"] = (r["f_mean"] - by["base"]) / denom if denom and np.isfinite(denom) else float("nan")
    return rows
