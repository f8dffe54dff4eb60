"""Transformer rewards: any backbone, frozen or fine-tuned with the confounder term, exported as
a standard Hugging Face reward model. A tiny random BERT saved locally keeps these fast."""

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny_bert, planted_log, word_effect

from deconfoundlm import fit_reward, load_reward
from deconfoundlm.cli import main
from deconfoundlm.rewards.finetune_config import FinetuneConfig

pytestmark = pytest.mark.finetune

FAST = dict(epochs=30, learning_rate=1e-3, patience=3)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("planted") / "log.csv"
    planted_log().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, planted, tiny_bert):
    """A fine-tuned deconfound reward saved through the CLI."""
    out = tmp_path_factory.mktemp("ft") / "reward"
    code = main(["fit-reward", str(planted), "--text", "text", "--outcome", "y", "--confounder", "c:numeric",
                 "--encoder", str(tiny_bert), "--finetune", "--epochs", "30", "--learning-rate", "1e-3",
                 "--seed", "3", "--out", str(out)])
    assert code == 0
    return out


def run(args, capsys):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_finetuning_recovers_planted_effect_where_naive_does_not(tiny_bert):
    df = planted_log()
    kw = dict(text="text", outcome="y", confounders=["c:numeric"], encoder=str(tiny_bert), diagnose=False)
    dec = fit_reward(df, method="deconfound", finetune=FinetuneConfig(**FAST), **kw)
    naive = fit_reward(df, method="naive", finetune=FinetuneConfig(**FAST), **kw)
    # deconfounded: the causal word's effect (0.8) is found, the entangled spurious word gets ~0
    assert 0.5 < word_effect(dec, "alpha") < 1.1
    assert abs(word_effect(dec, "beta")) < 0.15
    # naive: the spurious word carries the confounder's effect
    assert word_effect(naive, "beta") > 0.5
    # g(c) absorbed the confounder: its slope on c is near the planted 1.5
    grid = pd.DataFrame({"c": [-1.0, 1.0]})
    g = dec.estimator.confounder_effect(grid)
    assert 1.0 < (g[1] - g[0]) / 2 < 2.0


def test_exported_text_model_is_a_standard_reward_model(finetuned, planted):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward = load_reward(finetuned)
    texts = pd.read_csv(planted)["text"].head(50).tolist()
    model = AutoModelForSequenceClassification.from_pretrained(finetuned / "text_model")
    tok = AutoTokenizer.from_pretrained(finetuned / "text_model")
    assert model.config.num_labels == 1 and model.config.id2label == {0: "reward"}
    fit_length = json.loads((finetuned / "config.json").read_text())["text_model"]["max_length"]
    assert tok.model_max_length == fit_length  # plain transformers truncates where `score` does
    long = texts[:3] + [" ".join(["word"] * 400)]  # longer than the fit's max length
    with torch.no_grad():
        logits = model(**tok(texts + long[3:], padding=True, truncation=True, return_tensors="pt")).logits[:, 0]
    texts = texts + long[3:]
    center = json.loads((finetuned / "config.json").read_text())["center"]
    np.testing.assert_allclose(logits.numpy() - center, reward.score(texts), atol=1e-5)
    card = (finetuned / "text_model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers")  # the Hub's model-card metadata
    for fact in (f"| center | {center!r} |", f"| max length (tokens) used to fit and score | {fit_length} |",
                 reward.info["data_fingerprint"], "r(x) = logit - center", "| method | deconfound |"):
        assert fact in card


def test_save_load_identity_and_seed(finetuned, planted, tiny_bert, tmp_path, capsys):
    texts = pd.read_csv(planted)["text"].head(40).tolist()
    a = load_reward(finetuned).score(texts)
    np.testing.assert_array_equal(a, load_reward(finetuned).score(texts))
    out = tmp_path / "again"
    assert main(["fit-reward", str(planted), "--text", "text", "--outcome", "y", "--confounder", "c:numeric",
                 "--encoder", str(tiny_bert), "--finetune", "--epochs", "30", "--learning-rate", "1e-3",
                 "--seed", "3", "--out", str(out)]) == 0
    np.testing.assert_array_equal(a, load_reward(out).score(texts))  # same seed and data: same model
    cfg = json.loads((finetuned / "config.json").read_text())
    assert cfg["text_model"]["base"] == str(tiny_bert) and len(cfg["text_model"]["content_hash"]) == 64
    metrics = json.loads((finetuned / "metrics.json").read_text())
    assert metrics["finetune"]["epochs_run"] >= 1 and metrics["cv_deviance"] > 0


def test_score_and_best_of_accept_a_finetuned_reward(finetuned, planted, tmp_path, capsys):
    code, err = run(["score", finetuned, planted, "--text", "text", "--out", tmp_path / "s.csv"], capsys)
    assert code == 0, err
    scored = pd.read_csv(tmp_path / "s.csv")
    np.testing.assert_allclose(scored["reward"], load_reward(finetuned).score(scored["text"].tolist()), atol=1e-9)
    code, err = run(["generate", "tiny-headlines", "--n", "2", "--best-of", "3", "--reward", finetuned,
                     "--out", tmp_path / "g.csv"], capsys)
    assert code == 0, err
    assert pd.read_csv(tmp_path / "g.csv")["reward"].notna().all()


def test_align_accepts_a_finetuned_reward(finetuned, planted, tmp_path, capsys):
    code, err = run(["align", planted, "--reward", finetuned, "--method", "sft", "--policy", "tiny-headlines",
                     "--steps", "1", "--out", tmp_path / "p"], capsys)
    assert code == 0, err
    assert (tmp_path / "p" / "deconfoundlm.json").is_file()


def test_text_model_works_as_a_trl_grpo_reward_model(finetuned, tmp_path):
    """The README's recipe: hand text_model/ to TRL as the reward model of GRPO."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from deconfoundlm.alignment.policies import tiny_headlines_path

    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=8, report_to=[], use_cpu=True, save_strategy="no",
                      logging_steps=1)
    trainer = GRPOTrainer(model=str(tiny_headlines_path()), reward_funcs=str(finetuned / "text_model"),
                          args=args, train_dataset=Dataset.from_dict({"prompt": ["<|headline|>"] * 4}))
    trainer.train()
    rewards = [h for h in trainer.state.log_history if any(k.startswith("rewards/") for k in h)]
    assert rewards and all(np.isfinite(v) for h in rewards for k, v in h.items() if k.startswith("rewards/"))


def test_lora_finetuning_exports_a_merged_model(tiny_bert, tmp_path):
    reward = fit_reward(planted_log(300), text="text", outcome="y", confounders=["c:numeric"], encoder=str(tiny_bert),
                        finetune=FinetuneConfig(epochs=2, lora=True), out=tmp_path / "r", diagnose=False)
    files = {p.name for p in (tmp_path / "r" / "text_model").iterdir()}
    assert "adapter_config.json" not in files and "model.safetensors" in files
    np.testing.assert_allclose(load_reward(tmp_path / "r").score(["alpha the a you why how"]),
                               reward.score(["alpha the a you why how"]), atol=1e-6)


def test_frozen_automodel_backbone_and_its_identity(tmp_path, capsys):
    """A plain Hugging Face encoder as a frozen backbone (mean pooling); retrained at the same
    path, the saved reward refuses to score with it, naming both identities."""
    bb = make_tiny_bert(tmp_path / "bb", seed=0)
    df = planted_log(300)
    df.to_csv(tmp_path / "log.csv", index=False)
    code, err = run(["fit-reward", tmp_path / "log.csv", "--text", "text", "--outcome", "y", "--confounder",
                     "c:numeric", "--encoder", bb, "--cv", "3", "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["backbone"]["kind"] == "auto" and cfg["backbone"]["pooling"] == "mean"
    assert run(["score", tmp_path / "r", tmp_path / "log.csv", "--text", "text", "--out", tmp_path / "a.csv"],
               capsys)[0] == 0
    shutil.rmtree(bb)
    make_tiny_bert(bb, seed=1)  # a different model at the same path
    code, err = run(["score", tmp_path / "r", tmp_path / "log.csv", "--text", "text", "--out", tmp_path / "b.csv"],
                    capsys)
    assert code == 2 and "changed since the reward was fitted" in err, err
    assert cfg["backbone"]["content_hash"][:12] in err
    assert not (tmp_path / "b.csv").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--finetune", "--encoder", "hashing"], "--encoder 'hashing'"),
    (["--lora"], "--lora applies to --finetune only"),
    (["--epochs", "3"], "--epochs applies to --finetune only"),
    (["--finetune", "--method", "odin", "--encoder", "minilm"], "--finetune supports"),
    (["--encoder", "nobody/no-such-model"], "huggingface-cli download nobody/no-such-model"),
    (["--encoder", "/no/such/folder"], "unknown encoder"),
])
def test_backbone_flag_mistakes(planted, tmp_path, extra, needle, capsys):
    args = ["fit-reward", planted, "--text", "text", "--outcome", "y", "--confounder", "c:numeric",
            "--out", tmp_path / "m", *extra]
    if "--encoder" not in extra:
        args += ["--encoder", "hashing"]
    code, err = run(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "m").exists()


def test_text_model_with_two_labels_is_refused(finetuned, planted, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(finetuned, bad)
    cfg_path = bad / "text_model" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["id2label"] = {"0": "a", "1": "b"}
    cfg["label2id"] = {"a": 0, "b": 1}
    cfg_path.write_text(json.dumps(cfg))
    code, err = run(["score", bad, planted, "--text", "text", "--out", tmp_path / "s.csv"], capsys)
    assert code == 2 and "labels" in err and "not a valid deconfoundlm reward model" in err, err


def test_tampered_text_model_is_refused(finetuned, planted, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(finetuned, bad)
    (bad / "text_model" / "tokenizer_config.json").write_text("{}")
    code, err = run(["score", bad, planted, "--text", "text", "--out", tmp_path / "s.csv"], capsys)
    assert code == 2 and "changed since the reward was fitted" in err, err


def test_finetune_runs_on_two_processes_with_accelerate(planted, tiny_bert, tmp_path):
    """`accelerate launch ... fit-reward --finetune` (two CPU processes; only the main one writes)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "r2"
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [accelerate, "launch", "--num_processes", "2", "--cpu", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "deconfoundlm", "fit-reward", str(planted), "--text", "text",
           "--outcome", "y", "--confounder", "c:numeric", "--encoder", str(tiny_bert), "--finetune",
           "--epochs", "2", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "text_model" / "model.safetensors").is_file()
    assert np.isfinite(load_reward(out).score(["alpha the a you why how"])).all()


def test_a_reward_that_barely_varies_is_flagged(planted, tiny_bert, tmp_path, capsys):
    """One epoch at a tiny learning rate learns ~nothing: a success message alone would mislead."""
    code, err = run(["fit-reward", planted, "--text", "text", "--outcome", "y", "--confounder", "c:numeric",
                     "--encoder", tiny_bert, "--finetune", "--epochs", "1", "--learning-rate", "1e-9",
                     "--out", tmp_path / "flat"], capsys)
    assert code == 0
    assert "barely varies across texts" in err and "--learning-rate" in err
    sd = json.loads((tmp_path / "flat" / "metrics.json").read_text())["finetune"]["reward_sd"]
    assert 0 <= sd < 0.01
    # A reward that did learn is not flagged.
    from deconfoundlm.rewards.finetune import warn_if_flat

    targets = np.column_stack([np.random.default_rng(0).normal(size=100), np.ones(100), np.ones(100), np.zeros(100)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_flat(0.3, targets, "gaussian", FinetuneConfig())


def test_a_finetuned_reward_scales_with_the_outcomes_unit(tiny_bert, tmp_path):
    """Milliseconds for seconds: the backbone trains on the outcome in its own SD and the exported
    head carries the unit back (in milliseconds the planted word's effect came out 0.03 of 0.83)."""
    df = planted_log()
    kw = dict(text="text", outcome="y", confounders=["c:numeric"], encoder=str(tiny_bert), diagnose=False,
              finetune=FinetuneConfig(**FAST))
    seconds = fit_reward(df, **kw)
    millis = fit_reward(df.assign(y=df["y"] * 1000), **kw)
    assert word_effect(millis, "alpha") / 1000 == pytest.approx(word_effect(seconds, "alpha"), rel=1e-4)
    assert 0.5 < word_effect(seconds, "alpha") < 1.1
    millis.save(tmp_path / "ms")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = df["text"].head(20).tolist()
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ms" / "text_model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "ms" / "text_model")
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, return_tensors="pt")).logits[:, 0].numpy()
    center = json.loads((tmp_path / "ms" / "config.json").read_text())["center"]
    np.testing.assert_allclose(logits - center, millis.score(texts), rtol=1e-5, atol=1e-3)  # in milliseconds
