"""Alignment: data building (pairs, quantiles) and TRL runs on tiny models."""

import json

import numpy as np
import pandas as pd
import pytest

from deconfoundlm.alignment.align import preference_pairs
from deconfoundlm.alignment.policies import BUILTIN_POLICIES, load_policy
from deconfoundlm.cli import main
from deconfoundlm.errors import UserError

pytestmark = pytest.mark.align


def test_preference_pairs_respect_margin_and_prompts():
    texts = [f"t{i}" for i in range(40)]
    scores = np.linspace(0, 1, 40)
    pairs = preference_pairs(texts, scores, None, margin=0.2, max_pairs=100, seed=0)
    assert len(pairs) > 10
    s = dict(zip(texts, scores, strict=True))
    assert all(s[c] - s[r] > 0.2 for c, r in zip(pairs["chosen"], pairs["rejected"], strict=True))
    prompts = ["a" if i % 2 else "b" for i in range(40)]
    pp = preference_pairs(texts, scores, prompts, margin=0.0, max_pairs=1000, seed=0)
    key = dict(zip(texts, prompts, strict=True))
    assert all(key[c] == key[r] == k for c, r, k in zip(pp["chosen"], pp["rejected"], pp["prompt_key"], strict=True))
    assert len(pp) == 2 * (20 * 19 // 2)  # every within-prompt pair once


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    from deconfoundlm import fit_reward
    from deconfoundlm.logs.upworthy import load_packages

    df = load_packages().sample(600, random_state=1)
    out = tmp_path_factory.mktemp("r") / "reward"
    fit_reward(df, text="headline", outcome="clicks", trials="impressions", confounders=["test_week:time"],
               encoder="hashing", out=out, cv=3)
    path = out.parent / "log.csv"
    df.to_csv(path, index=False)
    return out, path


def test_tiny_headlines_loads_and_writes_english():
    policy = load_policy("tiny-headlines")
    n_params = sum(p.numel() for p in policy.model.parameters())
    assert 1_000_000 <= n_params <= 5_000_000
    from transformers import set_seed

    from deconfoundlm.alignment.generate import sample

    set_seed(0)
    texts = sample(policy, None, 32, max_new_tokens=24)
    words = " ".join(texts).split()
    # Mostly readable English: most tokens are common words or capitalized words.
    alpha = np.mean([w.strip(".,!?:'\"").isalpha() for w in words])
    assert len(words) > 100 and alpha > 0.7, texts[:5]


def _assert_trained_from_base(out):
    """The aligned folder is a plain causal LM with the base policy's architecture whose weights
    are finite and were changed by training."""
    import torch
    from transformers import AutoModelForCausalLM

    from deconfoundlm.alignment.policies import load_policy

    aligned = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = load_policy("tiny-headlines").model.state_dict()
    assert set(aligned) == set(base)
    assert all(aligned[k].shape == base[k].shape and torch.isfinite(aligned[k]).all() for k in base)
    assert any(not torch.equal(aligned[k], base[k]) for k in base)


def test_align_dpo_then_generate_end_to_end(tmp_path, reward_dir, capsys):
    reward, log = reward_dir
    out = tmp_path / "aligned"
    assert main(["align", str(log), "--reward", str(reward), "--method", "dpo", "--policy", "tiny-headlines",
                 "--steps", "6", "--out", str(out)]) == 0
    info = json.loads((out / "deconfoundlm.json").read_text())
    assert info["base_policy"] == "tiny-headlines" and info["settings"]["method"] == "dpo"
    _assert_trained_from_base(out)
    # The trainer's per-step logs go to a file, not the terminal (one progress bar there).
    history = json.loads((out / "train_log.json").read_text())["log_history"]
    assert any("loss" in h for h in history)
    assert "'loss'" not in capsys.readouterr().out
    gen = tmp_path / "gen.csv"
    assert main(["generate", str(out), "--n", "6", "--best-of", "3", "--reward", str(reward),
                 "--max-new-tokens", "20", "--out", str(gen)]) == 0
    df = pd.read_csv(gen)
    assert len(df) == 6 and {"prompt", "text", "reward"} <= set(df.columns)
    assert df["text"].str.len().gt(0).all()


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_align_sft_and_grpo_run(tmp_path, reward_dir, method):
    reward, log = reward_dir
    out = tmp_path / method
    assert main(["align", str(log), "--reward", str(reward), "--method", method, "--policy", "tiny-headlines",
                 "--steps", "2", "--pairs-from", "labels", "--out", str(out)]) == 0
    _assert_trained_from_base(out)
    assert json.loads((out / "deconfoundlm.json").read_text())["settings"]["method"] == method


def test_align_bad_inputs(tmp_path, reward_dir, capsys):
    reward, log = reward_dir

    def run(*args):
        code = main([str(a) for a in args])
        err = capsys.readouterr().err.strip().splitlines()
        return code, [e for e in err if "warning" not in e]

    code, err = run("align", log, "--reward", reward, "--method", "dpo", "--policy", "gpt-17", "--out", tmp_path / "a")
    assert code == 2 and len(err) == 1 and "tiny-headlines" in err[0] and "smollm2-135m" in err[0]
    (tmp_path / "not-a-reward").mkdir()
    code, err = run("align", log, "--reward", tmp_path / "not-a-reward", "--method", "dpo", "--policy", "tiny-headlines",
                    "--out", tmp_path / "a")
    assert code == 2 and len(err) == 1 and "reward model" in err[0]
    code, err = run("align", log, "--reward", reward, "--method", "dpo", "--policy", "tiny-headlines",
                    "--prompt", "story", "--out", tmp_path / "a")
    assert code == 2 and len(err) == 1 and "'story'" in err[0]
    few = tmp_path / "few.csv"
    pd.read_csv(log).head(3).to_csv(few, index=False)
    code, err = run("align", few, "--reward", reward, "--method", "dpo", "--policy", "tiny-headlines", "--out", tmp_path / "a")
    assert code == 2 and len(err) == 1 and "too few" in err[0]
    assert not (tmp_path / "a").exists()
    code, err = run("generate", "tiny-headlines", "--n", "2", "--best-of", "3", "--out", tmp_path / "g.csv")
    assert code == 2 and "--reward" in err[0] and not (tmp_path / "g.csv").exists()


def test_an_unknown_policy_name_lists_every_builtin():
    with pytest.raises(UserError) as exc:
        load_policy("gpt-17")
    assert all(name in str(exc.value) for name in BUILTIN_POLICIES)


def test_two_process_cpu_align_with_accelerate(tmp_path, reward_dir):
    import os
    import subprocess
    import sys

    reward, log = reward_dir
    out = tmp_path / "aligned2"
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [accelerate, "launch", "--num_processes", "2", "--cpu", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "deconfoundlm", "align", str(log), "--reward", str(reward),
           "--method", "dpo", "--policy", "tiny-headlines", "--steps", "2", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((out / "deconfoundlm.json").read_text())
    assert info["settings"]["steps"] == 2
    _assert_trained_from_base(out)


def test_lora_dpo_merges_into_a_plain_model(tmp_path, reward_dir):
    reward, log = reward_dir
    out = tmp_path / "lora"
    assert main(["align", str(log), "--reward", str(reward), "--method", "dpo", "--policy", "tiny-headlines",
                 "--steps", "2", "--lora", "--out", str(out)]) == 0
    from safetensors.torch import load_file

    keys = load_file(out / "model.safetensors").keys()
    assert not any("lora" in k for k in keys)  # adapters merged: a standard model directory


def test_replies_cut_off_by_the_token_limit_are_dropped_redrawn_and_counted():
    from transformers import set_seed

    from deconfoundlm.alignment.generate import draw, sample_finished

    policy = load_policy("tiny-headlines")
    set_seed(0)
    texts, ended = draw(policy, [None] * 16, 3)
    assert not all(ended)  # 3 tokens cut most headlines off
    set_seed(0)
    kept, cut = sample_finished(policy, None, 8, max_new_tokens=3, max_rounds=4)
    assert cut > 0 and len(kept) + cut <= 4 * 8 and len(kept) <= 8
    set_seed(0)
    kept, cut = sample_finished(policy, None, 8, max_new_tokens=48)
    assert len(kept) == 8 and cut < 8  # with room to finish, nearly every reply ends on its own
    assert all(t.strip() for t in kept)


def test_generation_is_batched_across_prompts_and_keeps_their_order():
    from transformers import set_seed

    from deconfoundlm.alignment.generate import draw, sample_finished_many

    policy = load_policy("tiny-headlines")
    prompts = ["Why", None, "This Is What Happens When", "Why", None]
    set_seed(0)
    texts, ended = draw(policy, prompts, 20, batch_size=3)  # batches mix prompt lengths (left padding)
    assert len(texts) == len(prompts) == len(ended)
    for p, t in zip(prompts, texts, strict=True):
        assert t.startswith(p or "") and len(t) > len(p or "")
    set_seed(0)
    got = sample_finished_many(policy, [("Why", 3), (None, 5), ("How", 2)], max_new_tokens=28)
    assert [len(t) for t, _ in got] == [3, 5, 2]
    assert all(t.startswith("Why") for t in got[0][0]) and all(t.startswith("How") for t in got[2][0])
    # Seeded: the same batch gives the same texts.
    set_seed(0)
    assert sample_finished_many(policy, [("Why", 3), (None, 5), ("How", 2)], max_new_tokens=28) == got


def test_fluency_is_batched_without_changing_the_log_likelihood():
    import torch

    from deconfoundlm.evaluation.benchmark.policy_stage import token_loglik

    policy = load_policy("tiny-headlines")
    texts = ["Why This Dog Is Happy", "You Won't Believe It", "A", "This Is The Most Amazing Thing We Have Seen"]
    prompts = [None, "You", None, None]
    got = token_loglik(policy, prompts, texts, batch=3)  # padded batches of different lengths
    tok, model = policy.tokenizer, policy.model
    for p, t, value in zip(prompts, texts, got, strict=True):  # one text at a time, no padding
        h = tok(policy.prompt_string(p), add_special_tokens=False)["input_ids"]
        b = tok(t[len(p or ""):], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([h + b])
        with torch.no_grad():
            logits = model(ids).logits[0, len(h) - 1 : -1].float()
        expected = torch.log_softmax(logits, -1).gather(1, ids[0, len(h):, None]).mean()
        assert abs(value - float(expected)) < 1e-5


def test_repeated_prompts_share_one_prefill_with_the_same_next_token_scores():
    """K samples of a prompt run its prefix once (a cache left-padded into the batch): the scores
    of every generated token are those of prefilling every row, for prompts of different lengths
    in one batch; sampling through it is seeded."""
    import torch
    from transformers import set_seed

    from deconfoundlm.alignment.generate import draw, prefix_cache

    policy = load_policy("tiny-headlines")
    tok, model = policy.tokenizer, policy.model
    heads = [tok(policy.prompt_string(p), add_special_tokens=False)["input_ids"]
             for p in ["Why"] * 3 + ["This Is What Happens When"] * 3]
    width = max(len(h) for h in heads)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(h)) + h for h in heads])
    mask = torch.tensor([[0] * (width - len(h)) + [1] * len(h) for h in heads])
    calls = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)),
                                           with_kwargs=True)
    kw = {"max_new_tokens": 8, "do_sample": False, "output_scores": True, "return_dict_in_generate": True,
          "pad_token_id": tok.pad_token_id}
    with torch.no_grad():
        shared = prefix_cache(model, heads, width)
        assert calls == [(1, len(heads[0]) - 1), (1, len(heads[3]) - 1)]  # once per distinct prompt
        calls.clear()
        got = model.generate(input_ids=ids, attention_mask=mask, **shared, **kw)
        assert calls[0] == (6, 1)  # only the last prompt token is left to run
        full = model.generate(input_ids=ids, attention_mask=mask, **kw)
    assert torch.equal(got.sequences, full.sequences)
    for a, b in zip(got.scores, full.scores, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    assert prefix_cache(model, heads[2:4], width) == {}  # no prompt repeats: nothing to share
    hook.remove()
    set_seed(0)
    texts, _ = draw(policy, ["Why"] * 4 + [None] * 2, 12, batch_size=6)
    set_seed(0)
    assert draw(policy, ["Why"] * 4 + [None] * 2, 12, batch_size=6)[0] == texts
    assert all(t.startswith("Why") for t in texts[:4])


def test_a_prompts_prefill_is_kept_for_later_batches_and_redraws():
    """Prefills keeps each prompt's run for the job: a later batch or redraw round runs the
    prompt again never, and gets the same keys and values to the bit (a prompt always runs alone);
    past max_bytes nothing more is kept. Sampling through it gives the texts of fresh prefills."""
    import torch
    from transformers import set_seed

    from deconfoundlm.alignment.generate import Prefills, draw, prefix_cache

    policy = load_policy("tiny-headlines")
    tok, model = policy.tokenizer, policy.model
    heads = [tok(policy.prompt_string(p), add_special_tokens=False)["input_ids"] for p in ["Why This Dog"] * 2 + ["How To Cook A"] * 2]
    width = max(len(h) for h in heads)
    calls = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)),
                                           with_kwargs=True)
    store = Prefills()
    with torch.no_grad():
        first = prefix_cache(model, heads, width, store)
        assert len(calls) == 2 and len(store.runs) == 2 and store.bytes > 0
        again = prefix_cache(model, heads[1:3] + heads[1:3], width, store)  # a later batch of the same prompts
        assert len(calls) == 2  # nothing ran again
        fresh = prefix_cache(model, heads[1:3] + heads[1:3], width)
    hook.remove()
    (name,) = first
    for layer in range(len(fresh[name].layers)):
        assert torch.equal(again[name].layers[layer].keys, fresh[name].layers[layer].keys)
        assert torch.equal(again[name].layers[layer].values, fresh[name].layers[layer].values)
    small = Prefills(max_bytes=store.bytes // 2)
    with torch.no_grad():
        prefix_cache(model, heads, width, small)
    assert len(small.runs) == 1 and small.bytes <= small.max_bytes  # the second run did not fit
    prompts = ["Why"] * 3 + ["This Is What Happens When"] * 3
    set_seed(0)
    kept = Prefills()
    texts = draw(policy, prompts, 10, batch_size=4, prefills=kept)[0]
    set_seed(0)
    assert draw(policy, prompts, 10, batch_size=4)[0] == texts
    set_seed(0)
    assert draw(policy, prompts, 10, batch_size=4, prefills=kept)[0] == texts  # every prefill from the store


def test_the_nucleus_filter_is_transformers_temperature_and_top_p():
    """The same kept tokens and values as TemperatureLogitsWarper then TopPLogitsWarper, for peaked
    rows (the nucleus within the ranked candidates) and flat ones (past them: the warper's path)."""
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from deconfoundlm.alignment.generate import TemperatureNucleus

    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 5000, generator=gen) * torch.tensor([[8.0], [4.0], [2.0], [1.0], [0.1], [0.0]])
    ids = torch.zeros(6, 3, dtype=torch.long)
    for temperature, top_p in [(0.7, 0.95), (1.0, 0.9), (1.3, 0.5), (0.7, 1.0)]:
        ours = TemperatureNucleus(temperature, top_p, candidates=64)(ids, scores.clone())
        theirs = TemperatureLogitsWarper(temperature)(ids, scores.clone())
        if top_p < 1.0:
            theirs = TopPLogitsWarper(top_p)(ids, theirs)
        assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
        assert torch.equal(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)])
        kept = (~torch.isinf(ours)).sum(1)
        if top_p == 0.95:
            assert kept[0] < 64 < kept[-1]  # both paths were taken
    with pytest.raises(ValueError, match="temperature > 0"):
        TemperatureNucleus(0.0, 0.9)
