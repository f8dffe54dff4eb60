"""Align a generator to a (deconfounded) reward with TRL: SFT, DPO or GRPO.

This module only builds the data (top-quantile texts, preference pairs, prompts) and the
reward callable; the losses are TRL's (SFTTrainer, DPOTrainer, GRPOTrainer).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deconfoundlm.alignment.policies import ALIGNED_FILE, Policy, load_policy
from deconfoundlm.configs import AlignConfig
from deconfoundlm.errors import UserError
from deconfoundlm.logs.roles import ColumnRoles
from deconfoundlm.logs.tables import read_table, table_columns
from deconfoundlm.logs.validate import load_log, require_columns
from deconfoundlm.options import label
from deconfoundlm.outputs import POLICY_DIR, atomic_directory, check_output, write_json
from deconfoundlm.pipeline import Reward, load_reward
from deconfoundlm.progress import disable


def ranking_scores(reward: Reward, texts: list[str], log=None, pairs_from: str = "reward",
                   pessimism: float = 0.0) -> np.ndarray:
    """The score that orders log rows: the reward of each text, or its deconfounded label
    (docs/method.md, step 4; for naive, the raw outcome on the link scale)."""
    if pairs_from == "reward":
        return reward.pessimistic_score(texts, pessimism)
    if pairs_from != "labels":
        raise UserError(f"{label('pairs_from')} {pairs_from!r}: use reward or labels")
    if reward.method not in ("naive", "deconfound"):
        raise UserError(f"{label('pairs_from')} labels needs a reward with an additive confounder term "
                        f"(naive or deconfound), not {reward.method!r}; use {label('pairs_from')} reward")
    return reward.deconfounded_labels(log)


def preference_pairs(texts: list[str], scores: np.ndarray, prompts: list[str] | None, margin: float,
                     max_pairs: int, seed: int) -> pd.DataFrame:
    """(prompt_key, chosen, rejected) with score(chosen) - score(rejected) > margin.

    With prompts, pairs are matched within the same prompt; otherwise rows are paired at random
    (seeded), several passes, until ``max_pairs`` or no new pairs.
    """
    rng = np.random.default_rng(seed)
    texts = np.asarray(texts, dtype=object)
    keys = np.asarray(prompts if prompts is not None else [""] * len(texts), dtype=object)
    out: list[tuple[str, str, str]] = []
    seen: set[tuple[int, int]] = set()
    for key in pd.unique(keys):
        idx = np.flatnonzero(keys == key)
        if prompts is not None:
            cand = [(i, j) for a, i in enumerate(idx) for j in idx[a + 1 :]]
            rng.shuffle(cand)
        else:
            cand = []
            for _ in range(8):
                p = rng.permutation(idx)
                cand += list(zip(p[0::2], p[1::2], strict=False))
        for i, j in cand:
            if len(out) >= max_pairs:
                break
            if texts[i] == texts[j] or abs(scores[i] - scores[j]) <= margin:
                continue
            pair = (min(i, j), max(i, j))
            if pair in seen:
                continue
            seen.add(pair)
            hi, lo = (i, j) if scores[i] > scores[j] else (j, i)
            out.append((key, texts[hi], texts[lo]))
    return pd.DataFrame(out, columns=["prompt_key", "chosen", "rejected"])


def _training_args(cls, cfg: AlignConfig, output_dir: str, **extra):
    import torch

    return cls(output_dir=output_dir, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
               learning_rate=cfg.learning_rate, logging_steps=max(1, cfg.steps // 10), save_strategy="no",
               report_to=[], seed=cfg.seed, use_cpu=not torch.cuda.is_available(), bf16=False,
               lr_scheduler_type="constant_with_warmup", warmup_steps=min(10, cfg.steps // 10),
               # Recomputing activations saves accelerator memory; on a CPU it only costs time.
               gradient_checkpointing=torch.cuda.is_available(), **extra)


def _peft_config(cfg: AlignConfig):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def align(data: str | Path, config: AlignConfig | None = None, /, **options: Any) -> Path:
    """Fine-tune ``policy`` on the log ``data`` ranked by the reward in the folder ``reward``, with
    the options of :class:`~deconfoundlm.configs.AlignConfig` (or the same as keywords: ``reward``,
    ``method``, ``policy``, ``text``, ``prompt`` or ``prompt_text``, ``pairs_from``, ``steps``,
    ``beta``, ``lora``, ``pessimism``, ``seed``, ``out``, ``force``, ``verbose``).

    The output folder holds the model, its tokenizer, ``deconfoundlm.json`` (how it was made) and
    ``train_log.json`` (the trainer's per-step log; printed as well with ``verbose``)."""
    from transformers import set_seed

    cfg = AlignConfig.of(config, options)
    reward_dir, out, text, prompt, prompt_text = cfg.reward, cfg.out, cfg.text, cfg.prompt, cfg.prompt_text
    force, verbose = cfg.force, cfg.verbose
    if reward_dir is None or out is None:
        raise UserError(f"give {label('reward')} (a reward folder) and {label('out')} (the policy folder)")
    if prompt is not None and prompt_text is not None:
        raise UserError(f"give {label('prompt')} COL or {label('prompt_text')} STR, not both")
    inputs = [data, reward_dir, cfg.policy if Path(cfg.policy).exists() else None]
    check_output(out, force, POLICY_DIR, inputs)
    reward = load_reward(reward_dir)
    if cfg.pessimism and not reward.has_se:
        raise UserError(f"{label('pessimism')} needs a reward with standard errors; {reward_dir} has none (linear naive "
                        "and deconfound rewards have them)")
    if cfg.pessimism and cfg.pairs_from == "labels":
        raise UserError(f"{label('pessimism')} applies to {label('pairs_from')} reward (labels have no reward standard error)")
    text = text or reward.roles.text
    available = table_columns(data)
    require_columns(available, [text] + ([prompt] if prompt else []), str(data))
    log = None
    if cfg.pairs_from == "labels":
        roles = ColumnRoles.from_dict({**reward.roles.to_dict(), "text": text, "prompt": prompt})
        log = load_log(data, roles)
        frame = log.frame
    else:
        frame = read_table(data)
        frame = frame[frame[text].notna()].reset_index(drop=True)
    texts = frame[text].astype(str).tolist()
    prompts = frame[prompt].astype(str).tolist() if prompt else None
    if len(texts) < 4:
        raise UserError(f"{data}: {len(texts)} usable row(s); too few to align a policy")
    scores = ranking_scores(reward, texts, log, cfg.pairs_from, cfg.pessimism)

    set_seed(cfg.seed)
    policy = load_policy(cfg.policy)

    def user_prompt(i: int) -> str | None:
        return prompts[i] if (prompts is not None and policy.chat) else prompt_text

    if cfg.method == "sft":
        cut = np.quantile(scores, 1 - cfg.top_quantile)
        rows = [_example(policy, user_prompt(i), texts[i]) for i in np.flatnonzero(scores >= cut)]
    elif cfg.method == "dpo":
        margin = cfg.margin_sd * float(np.std(scores))
        pairs = preference_pairs(texts, scores, prompts, margin, cfg.steps * cfg.batch_size, cfg.seed)
        if len(pairs) < cfg.batch_size:
            raise UserError(f"{data}: only {len(pairs)} preference pair(s) differ by more than the "
                            f"margin ({cfg.margin_sd} SD of the score); too few rows to form pairs")
        rows = dpo_rows(policy, pairs, prompt_text if not (prompts and policy.chat) else None,
                        by_prompt=bool(prompts and policy.chat))
    else:
        n_prompts = cfg.steps * cfg.batch_size // cfg.num_generations
        rows = [{"prompt": policy.prompt(user_prompt(i % len(texts)))} for i in range(n_prompts)]
    trainer = train_policy(policy, rows, cfg, reward_fn=RewardFunction(reward, policy, prompt_text, cfg.pessimism),
                           desc=f"{cfg.method} ({reward.method} reward)", verbose=verbose)
    if not trainer.accelerator.is_main_process:
        return Path(out)
    with atomic_directory(out, force=force, kind=POLICY_DIR, inputs=inputs) as tmp:
        trainer.model.save_pretrained(tmp)
        policy.tokenizer.save_pretrained(tmp)
        info = {"format": "deconfoundlm-aligned-policy", "base_policy": cfg.policy, "chat": policy.chat,
                "data": str(data), "reward": str(reward_dir), "reward_method": reward.method,
                "text_column": text, "prompt_column": prompt, "prompt_text": prompt_text,
                "examples": len(rows), "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()
                             if k not in ("force", "verbose")}, "final_train_loss": last_loss(trainer)}
        write_json(info, tmp / ALIGNED_FILE)
        write_json({"log_history": trainer.state.log_history}, tmp / "train_log.json")
    return Path(out)


def dpo_rows(policy: Policy, pairs: pd.DataFrame, prompt_text: str | None = None,
             by_prompt: bool = False) -> list[dict]:
    """TRL preference rows (prompt, chosen, rejected) in the policy's format."""
    rows = []
    for r in pairs.itertuples():
        p = r.prompt_key if by_prompt else prompt_text
        chosen, rejected = _example(policy, p, r.chosen), _example(policy, p, r.rejected)
        rows.append({"prompt": chosen["prompt"], "chosen": chosen["completion"], "rejected": rejected["completion"]})
    return rows


def train_policy(policy: Policy, rows: list[dict], cfg: AlignConfig, reward_fn=None, desc: str | None = None,
                 verbose: bool = False):
    """Run TRL's trainer for ``cfg.method`` on ``rows``; the policy's model is trained in place
    (LoRA adapters are merged back). Returns the trainer (``trainer.model`` is the result; its
    per-step logs are in ``trainer.state.log_history``).

    The terminal shows one progress bar for the run (``desc``); the trainer's per-step log
    dicts are printed only with ``verbose``."""
    from datasets import Dataset

    if not verbose:
        from datasets import disable_progress_bars

        disable_progress_bars()  # datasets' per-map bars ("Tokenizing train dataset")
    ds = Dataset.from_list(rows)
    peft = _peft_config(cfg)
    length = 512 if policy.chat else 128  # tokens of prompt + reply: a chat prompt may carry a story lede
    with tempfile.TemporaryDirectory() as work:
        if cfg.method == "sft":
            from trl import SFTConfig, SFTTrainer

            trainer = SFTTrainer(model=policy.model, processing_class=policy.tokenizer, train_dataset=ds,
                                 args=_training_args(SFTConfig, cfg, work, max_length=length), peft_config=peft)
        elif cfg.method == "dpo":
            from trl import DPOConfig, DPOTrainer

            trainer = DPOTrainer(model=policy.model, processing_class=policy.tokenizer, train_dataset=ds,
                                 args=_training_args(DPOConfig, cfg, work, beta=cfg.beta, max_length=length),
                                 peft_config=peft)
        else:
            from trl import GRPOConfig, GRPOTrainer

            trainer = GRPOTrainer(
                model=policy.model, processing_class=policy.tokenizer, train_dataset=ds, reward_funcs=reward_fn,
                args=_training_args(GRPOConfig, cfg, work, beta=cfg.beta, num_generations=cfg.num_generations,
                                    max_completion_length=cfg.max_completion_length, temperature=1.0),
                peft_config=peft)
        if not verbose:
            from transformers import PrinterCallback, ProgressCallback

            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
            trainer.add_callback(_step_bar(desc or f"{cfg.method} steps"))
        trainer.train()
    if cfg.lora:
        trainer.model = trainer.model.merge_and_unload()
    policy.model = trainer.model
    return trainer


def _step_bar(desc: str):
    """A trainer callback: one tqdm bar over the optimizer steps, nothing else on the terminal."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class StepBar(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc=desc, unit="step", disable=disable())

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return StepBar()


def last_loss(trainer) -> float | None:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return float(losses[-1]) if losses else None


def _example(policy: Policy, user_prompt: str | None, text: str) -> dict:
    """A prompt/completion example in the policy's format (conversational for chat models)."""
    if policy.chat:
        return {"prompt": policy.prompt(user_prompt), "completion": [{"role": "assistant", "content": text}]}
    prefix = user_prompt or ""
    completion = text[len(prefix):] if prefix and text.startswith(prefix) else text
    return {"prompt": policy.prompt(prefix if completion is not text else None), "completion": completion}


class RewardFunction:
    """A TRL reward function: plain callable over completions -> list of rewards."""

    def __init__(self, reward: Reward, policy: Policy, prefix: str | None = None, pessimism: float = 0.0):
        self.reward = reward
        self.policy = policy
        self.prefix = prefix if not policy.chat else None
        self.pessimism = pessimism
        self.__name__ = f"deconfoundlm_{reward.method}"

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        texts = [completion_text(c, self.prefix) for c in completions]
        return [float(x) for x in self.reward.pessimistic_score(texts, self.pessimism)]


def completion_text(completion, prefix: str | None = None) -> str:
    """The generated text of a completion (string or conversational message list)."""
    if isinstance(completion, list):
        completion = completion[-1]["content"] if completion else ""
    return ((prefix or "") + str(completion)).strip()
