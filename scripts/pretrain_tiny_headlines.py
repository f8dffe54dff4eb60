"""Pretrain the bundled `tiny-headlines` generator on the Upworthy headlines (CC BY 4.0).

A GPT-2-style causal LM (~2.6M parameters) with its own byte-level BPE tokenizer (4,096
tokens). Each training text is ``<|headline|>`` + headline + ``<|endoftext|>``. Writes
safetensors weights, config and tokenizer into src/deconfoundlm/assets/tiny_headlines/.

    .venv/bin/python scripts/pretrain_tiny_headlines.py [--epochs 6] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    DataCollatorForLanguageModeling,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    set_seed,
)

from deconfoundlm.alignment.policies import TINY_BOS, TINY_EOS, TINY_PAD
from deconfoundlm.logs.upworthy import load_packages

OUT = Path(__file__).resolve().parents[1] / "src" / "deconfoundlm" / "assets" / "tiny_headlines"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    set_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    headlines = sorted(load_packages()["headline"].astype(str).str.strip().unique())
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(headlines, trainers.BpeTrainer(
        vocab_size=4096, min_frequency=2, special_tokens=[TINY_EOS, TINY_BOS, TINY_PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    # A pad token of its own: the LM collator masks padding out of the loss, and a pad equal to
    # EOS would stop the model from ever learning to end a headline.
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=TINY_BOS, eos_token=TINY_EOS,
                                  pad_token=TINY_PAD, model_max_length=64)
    texts = [TINY_BOS + h + TINY_EOS for h in headlines]
    ds = Dataset.from_dict({"text": texts}).map(
        lambda b: tok(b["text"], truncation=True, max_length=64), batched=True, remove_columns=["text"])

    config = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=192, n_layer=4, n_head=4,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(config)
    print(f"parameters: {model.num_parameters():,}; headlines: {len(texts)}")
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, num_train_epochs=args.epochs, per_device_train_batch_size=64,
            learning_rate=2e-3, warmup_steps=100, lr_scheduler_type="cosine", weight_decay=0.01,
            logging_steps=100, save_strategy="no", report_to=[], seed=args.seed, use_cpu=True,
        )
        Trainer(model=model, args=targs, train_dataset=ds,
                data_collator=DataCollatorForLanguageModeling(tok, mlm=False)).train()
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    if args.out.exists():
        shutil.rmtree(args.out)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    (args.out / "README.md").write_text(
        "tiny-headlines: a GPT-2-style causal LM (~2.6M parameters, 4,096-token byte-level BPE)\n"
        "pretrained by scripts/pretrain_tiny_headlines.py on the distinct headlines of the Upworthy\n"
        "Research Archive (CC BY 4.0; Matias et al. 2021, Scientific Data 8, 195). See NOTICE.\n")
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
