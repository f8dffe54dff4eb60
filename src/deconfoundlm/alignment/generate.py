"""Sample texts from a policy, optionally best-of-K under a reward model.

Generation is batched across prompts: the prompts of one batch are left-padded to a common
length, so many short prompts cost one forward pass per token instead of one each. A chat
policy's reply ends at its first line break (a headline is one line; what a small chat model
adds after it is commentary, dropped by the candidate cleaning anyway), which also ends the
batch sooner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from deconfoundlm.alignment.align import completion_text
from deconfoundlm.alignment.policies import Policy, load_policy
from deconfoundlm.configs import MAX_SAMPLES, GenerateConfig
from deconfoundlm.errors import UserError
from deconfoundlm.logs.tables import read_table, table_columns, table_format
from deconfoundlm.logs.validate import check_text_column, require_columns
from deconfoundlm.options import label
from deconfoundlm.outputs import TABLE_FILE, check_output, write_table
from deconfoundlm.pipeline import load_reward
from deconfoundlm.progress import disable

BATCH_SIZE = 64  # sequences per generate call


def sample(policy: Policy, prompt_text: str | None, n: int, max_new_tokens: int = 32,
           batch_size: int = BATCH_SIZE, temperature: float = 1.0, top_p: float = 0.95) -> list[str]:
    """``n`` sampled texts for one user prompt (call ``transformers.set_seed`` first), whether or
    not they finished within ``max_new_tokens`` (see :func:`sample_finished`)."""
    return draw(policy, [prompt_text] * n, max_new_tokens, batch_size, temperature, top_p)[0]


def draw(policy: Policy, prompt_texts: list[str | None], max_new_tokens: int, batch_size: int = BATCH_SIZE,
         temperature: float = 1.0, top_p: float = 0.95, desc: str | None = None,
         prefills: Prefills | None = None) -> tuple[list[str], list[bool]]:
    """One sample per entry of ``prompt_texts`` (repeat a prompt to sample it several times) and,
    for each, whether it ended on its own (end-of-sequence token, or a chat reply's line break)
    rather than being cut off by ``max_new_tokens``. Batches mix prompts, left-padded; samples
    come back in the order of ``prompt_texts``. ``prefills``: the prompts' prefills of earlier
    draws of the same job (kept for the later batches and draws; a fresh store by default)."""
    import torch

    prefills = Prefills() if prefills is None else prefills

    tok, model = policy.tokenizer, policy.model
    model.eval()
    eos = model.generation_config.eos_token_id if tok.eos_token_id is None else tok.eos_token_id
    eos_ids = torch.tensor(sorted({*(eos if isinstance(eos, list) else [eos])} - {None}))
    heads = {p: tok(policy.prompt_string(p), add_special_tokens=False)["input_ids"] for p in set(prompt_texts)}
    # Similar lengths share a batch (less padding); the order within a length is the given one.
    order = sorted(range(len(prompt_texts)), key=lambda i: len(heads[prompt_texts[i]]))
    stop = {"stop_strings": ["\n"], "tokenizer": tok} if policy.chat else {}
    out: list[str] = [""] * len(prompt_texts)
    finished = [False] * len(prompt_texts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0].item()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    from transformers import LogitsProcessorList

    warp = LogitsProcessorList([TemperatureNucleus(temperature, top_p)])  # in the place of transformers' own
    with torch.no_grad():
        for idx in tqdm(batches, desc=desc or "generating", unit="batch", disable=disable(desc is None or len(batches) < 2)):
            rows = [heads[prompt_texts[i]] for i in idx]
            width = max(len(r) for r in rows)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            shared = prefix_cache(model, rows, width, prefills)
            seqs = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0,
                                  top_p=1.0, top_k=0, logits_processor=warp, max_new_tokens=max_new_tokens,
                                  pad_token_id=pad, eos_token_id=tok.eos_token_id, **shared, **stop)
            new = seqs[:, width:]
            ended = torch.isin(new, eos_ids).any(1) if len(eos_ids) else torch.zeros(len(new), dtype=torch.bool)
            for i, row, e in zip(idx, tok.batch_decode(new, skip_special_tokens=True), ended.tolist(), strict=True):
                p = prompt_texts[i]
                out[i] = completion_text(row, p if not policy.chat else None)
                finished[i] = bool(e) or new.shape[1] < max_new_tokens or (policy.chat and "\n" in row)
    return out, finished


class TemperatureNucleus:
    """Temperature, then top-p (nucleus) filtering, as transformers' ``TemperatureLogitsWarper``
    and ``TopPLogitsWarper`` do them (a token is dropped when the tokens ranked below it, itself
    included, hold at most ``1 - top_p`` of the mass), without sorting the whole vocabulary at
    every step: the ``candidates`` most likely tokens are ranked, and a row whose candidates hold
    less than ``top_p`` is filtered by the warper itself. With SmolLM2's 49,152 tokens the full
    sort was a fifth of the generation time here. (Given to ``generate`` as its one logits
    processor, with its own temperature and top_p off: custom processors run before its own.)"""

    def __init__(self, temperature: float, top_p: float, candidates: int = 256):
        if not temperature > 0 or not 0 < top_p <= 1:
            raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1, not {temperature} and {top_p}")
        self.temperature, self.top_p, self.candidates = float(temperature), float(top_p), candidates

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch
        from transformers import TopPLogitsWarper

        if self.temperature != 1.0:
            scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        top, idx = scores.topk(min(self.candidates, scores.shape[-1]), dim=-1)  # sorted, largest first
        probs = (top - torch.logsumexp(scores, dim=-1, keepdim=True)).exp()
        keep = probs.cumsum(-1) - probs < self.top_p  # the mass ranked above each candidate
        keep[:, 0] = True
        out = torch.full_like(scores, -float("inf")).scatter_(1, idx, top.masked_fill(~keep, -float("inf")))
        short = probs.sum(-1) < self.top_p  # the nucleus reaches past the candidates
        if short.any():
            out[short] = TopPLogitsWarper(self.top_p)(input_ids[short], scores[short])
        return out


class Prefills:
    """Prompts' prefills (per layer keys and values of a prompt's tokens but its last, each run
    alone) kept across the batches and redraw rounds of one sampling job, up to ``max_bytes``:
    a cut-off reply redrawn in a later round reuses its prompt's run instead of repeating it. A
    prompt always runs alone (a batch of one), so a kept run is the run it would repeat, to the bit."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.runs: dict[tuple[int, ...], list[tuple[Any, Any]]] = {}
        self.name = "past_key_values"  # generate's keyword for a cache (``cache`` in transformers 5.x)
        self.max_bytes, self.bytes = max_bytes, 0

    def run(self, model: Any, tokens: tuple[int, ...]) -> list[tuple[Any, Any]] | None:
        """The prefill of ``tokens`` (a prompt but its last token): kept, or run now and kept while
        there is room; None for a cache other than plain per-layer keys and values."""
        import torch

        if tokens in self.runs:
            return self.runs[tokens]
        out = model(input_ids=torch.tensor([list(tokens)], device=model.device), use_cache=True)
        self.name = "cache" if "cache" in out else "past_key_values"
        kv = _key_values(out[self.name])
        size = 0 if kv is None else sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if kv is not None and self.bytes + size <= self.max_bytes:
            self.runs[tokens] = kv
            self.bytes += size
        return kv


def prefix_cache(model: Any, rows: list[list[int]], width: int, prefills: Prefills | None = None) -> dict[str, Any]:
    """The ``generate`` keyword of a precomputed cache for a batch whose rows repeat a few prompts (K samples per prompt):
    each distinct prompt's tokens but its last are run once (``prefills``: runs kept from earlier
    batches of the job), and the rows' caches are those runs, left-padded to the batch's width
    (the padding is masked). Without it the whole batch is prefilled, every repeat again: for 16
    samples of a 140-token prompt, about 16 times the work. Empty when no prompt repeats or a
    prompt is a single token (nothing to share)."""
    import torch
    from transformers import DynamicCache

    distinct = dict.fromkeys(tuple(r) for r in rows)  # in row order
    if len(distinct) == len(rows) or min(len(r) for r in rows) < 2:
        return {}
    prefills = Prefills() if prefills is None else prefills
    runs = {}
    for r in distinct:
        runs[r] = prefills.run(model, r[:-1])
        if runs[r] is None:  # a cache other than plain per-layer keys and values: no sharing
            return {}
    name = prefills.name
    cache = DynamicCache()
    for layer in range(len(next(iter(runs.values())))):
        keys, values = [], []
        for r in rows:
            k, v = runs[tuple(r)][layer]
            left = width - len(r)  # the row's left padding, as in ``ids``
            keys.append(torch.nn.functional.pad(k, (0, 0, left, 0)))
            values.append(torch.nn.functional.pad(v, (0, 0, left, 0)))
        cache.update(torch.cat(keys), torch.cat(values), layer)
    return {name: cache}


def _key_values(cache: Any) -> list[tuple[Any, Any]] | None:
    """(keys, values) per layer of a plain dynamic cache (``layers`` of full-attention layers in
    recent transformers, ``key_cache`` / ``value_cache`` lists before); None for any other cache
    (sliding windows, recurrent states), which is not safe to pad and stack."""
    from transformers import DynamicCache

    if not isinstance(cache, DynamicCache):
        return None
    layers = getattr(cache, "layers", None)
    if layers is not None:
        if any(type(layer).__name__ != "DynamicLayer" for layer in layers):
            return None
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def sample_finished(policy: Policy, prompt_text: str | None, n: int, max_new_tokens: int = 32,
                    max_rounds: int = 4, batch_size: int = BATCH_SIZE, temperature: float = 1.0,
                    top_p: float = 0.95) -> tuple[list[str], int]:
    """Up to ``n`` texts for one prompt that ended on their own, and how many cut-off ones were
    dropped (see :func:`sample_finished_many`)."""
    return sample_finished_many(policy, [(prompt_text, n)], max_new_tokens, max_rounds, batch_size,
                                temperature, top_p)[0]


def sample_finished_many(policy: Policy, requests: list[tuple[str | None, int]], max_new_tokens: int = 32,
                         max_rounds: int = 4, batch_size: int = BATCH_SIZE, temperature: float = 1.0,
                         top_p: float = 0.95, desc: str | None = None) -> list[tuple[list[str], int]]:
    """Per (prompt, n) request: up to ``n`` texts that ended on their own, and how many cut-off
    replies were dropped. All requests are sampled together (batched across prompts).

    A reply the token limit cut off ("Every Shocker Should Have a Bikini Sh") is not a text the
    policy wrote: it is dropped and another is drawn, for at most ``max_rounds`` x ``n`` draws
    per request; fewer than ``n`` texts come back when the policy rarely finishes within the limit."""
    texts: list[list[str]] = [[] for _ in requests]
    cut = [0] * len(requests)
    drawn = [0] * len(requests)
    prefills = Prefills()  # a redraw reuses its prompt's prefill
    for round_ in range(max_rounds):
        want = [min(n - len(t), max_rounds * n - d) for (_, n), t, d in zip(requests, texts, drawn, strict=True)]
        flat = [j for j, w in enumerate(want) for _ in range(max(w, 0))]
        if not flat:
            break
        label = None if desc is None else (desc if round_ == 0 else f"{desc} (redraw {round_})")
        got, ended = draw(policy, [requests[j][0] for j in flat], max_new_tokens, batch_size, temperature, top_p,
                          desc=label, prefills=prefills)
        for j, t, e in zip(flat, got, ended, strict=True):
            drawn[j] += 1
            if e:
                texts[j].append(t)
            else:
                cut[j] += 1
    return [(t[:n], c) for t, c, (_, n) in zip(texts, cut, requests, strict=True)]


def generate(policy_name: str, config: GenerateConfig | None = None, /, **options: Any) -> pd.DataFrame:
    """Write one row per generated text: prompt, text (and reward when a reward is given). The
    options are :class:`~deconfoundlm.configs.GenerateConfig`'s (or the same as keywords: ``n``,
    ``prompt_text`` or ``prompts`` with ``prompt``, ``best_of``, ``reward``, ``pessimism``,
    ``max_new_tokens``, ``seed``, ``out``, ``force``)."""
    from transformers import set_seed

    cfg = GenerateConfig.of(config, options)
    n, out, prompt_text, prompts_file, prompt_column = cfg.n, cfg.out, cfg.prompt_text, cfg.prompts, cfg.prompt
    best_of, reward_dir, max_new_tokens, pessimism = cfg.best_of, cfg.reward, cfg.max_new_tokens, cfg.pessimism
    if out is None:
        raise UserError(f"give {label('out')}: the file of the generated texts")
    table_format(out)
    inputs = [prompts_file, reward_dir, policy_name if Path(policy_name).exists() else None]
    check_output(out, cfg.force, TABLE_FILE, inputs)
    if best_of > 1 and reward_dir is None:
        raise UserError(f"{label('best_of')} needs {label('reward')} MODEL_DIR to choose the best candidate")
    if prompts_file is not None:
        if prompt_text is not None:
            raise UserError(f"give {label('prompt_text')} or {label('prompts')} FILE {label('prompt')} COL, not both")
        available = table_columns(prompts_file)
        if prompt_column is None:
            if len(available) != 1:
                raise UserError(f"{label('prompts')} {prompts_file}: {len(available)} columns ("
                                + ", ".join(map(str, available[:6])) + (", ..." if len(available) > 6 else "")
                                + f"); say which holds the prompts with {label('prompt')} COL")
            prompt_column = available[0]  # a one-column file: its column is the prompts
        require_columns(available, [prompt_column], str(prompts_file))
        column = read_table(prompts_file, columns=[prompt_column])[prompt_column]
        check_text_column(column)
        prompts = [p for p in column.dropna().astype(str).tolist() if p.strip()]
        if not prompts:
            raise UserError(f"{prompts_file}: prompt column {prompt_column!r} has no non-empty prompts")
        if len(prompts) * n * best_of > 10 * MAX_SAMPLES:
            raise UserError(f"{prompts_file}: {len(prompts):,} prompts x {label('n')} {n} x {label('best_of')} {best_of} is more "
                            f"than {10 * MAX_SAMPLES:,} samples; split the prompts file")
    else:
        if prompt_column is not None:
            raise UserError(f"{label('prompt')} COL needs {label('prompts')} FILE (the table holding that column)")
        prompts = [prompt_text]
    if pessimism and reward_dir is None:
        raise UserError(f"{label('pessimism')} needs {label('reward')} MODEL_DIR (and {label('best_of')} K)")
    reward = load_reward(reward_dir) if reward_dir is not None else None
    if pessimism and not reward.has_se:
        raise UserError(f"{label('pessimism')} needs a reward with standard errors; {reward_dir} has none")
    policy = load_policy(policy_name)
    set_seed(cfg.seed)
    rows = []
    per = n * best_of
    drawn, _ = draw(policy, [p for p in prompts for _ in range(per)], max_new_tokens, desc="generating")
    for i, p in enumerate(prompts):
        cands = drawn[i * per : (i + 1) * per]
        if reward is None:
            rows += [{"prompt": p or "", "text": t} for t in cands]
            continue
        scores, se = reward.score(cands, return_se=True) if reward.has_se else (reward.score(cands), None)
        rank = scores - pessimism * se if pessimism else scores
        for k in range(n):
            j = k * best_of + int(np.argmax(rank[k * best_of : (k + 1) * best_of]))
            row = {"prompt": p or "", "text": cands[j], "reward": float(scores[j])}
            if se is not None:
                row["reward_se"] = float(se[j])
            rows.append(row)
    df = pd.DataFrame(rows)
    df["policy"] = policy_name
    write_table(df, out, force=cfg.force, inputs=inputs)
    return df
