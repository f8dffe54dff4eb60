"""Transformer rewards: fine-tuning time and backbone feature-extraction speed.

    .venv/bin/python benchmarks/transformer_rewards.py [--encoder minilm] [--smollm2-texts 500]
        [--skip-finetune] [--out FILE.json]

1. fine-tuning: one `fit_reward(..., finetune=FinetuneConfig())` (deconfound, joint, week as the
   confounder) on the Upworthy observational log of the demo's split 0 (one package per
   training test): wall time, epochs run, held-out deviance;
2. feature extraction: texts/s of the frozen SmolLM2-135M backbone (mean pooling, from the GGUF
   file) on distinct Upworthy headlines, no cache, model load excluded.

The Upworthy table with frozen MiniLM, frozen SmolLM2 and fine-tuned MiniLM side by side comes
from the demo on the same splits, e.g. (no alignment step):
    deconfoundlm demo --encoder minilm --splits 2 --out d-minilm
    deconfoundlm demo --encoder smollm2-135m --splits 2 --out d-smollm2
    deconfoundlm demo --encoder minilm --finetune --splits 2 --out d-finetuned
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np


def observational_log(seed: int = 0):
    """The demo's split-0 observational log: one package per training test."""
    from deconfoundlm.logs import upworthy

    pk = upworthy.load_packages().reset_index(drop=True)
    tests = np.sort(pk["test_id"].unique())
    rng = np.random.default_rng(seed)
    held = rng.choice(tests, int(round(0.3 * len(tests))), replace=False)
    train = pk[pk["test_id"].isin(np.setdiff1d(tests, held))]
    return train.groupby("test_id", sort=True).sample(n=1, random_state=rng.integers(2**31)), pk


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--smollm2-texts", type=int, default=500)
    p.add_argument("--skip-finetune", action="store_true")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from deconfoundlm import fit_reward
    from deconfoundlm.features.text import get_encoder
    from deconfoundlm.rewards.finetune import FinetuneConfig

    obs, pk = observational_log()
    result = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
              "threads": torch.get_num_threads(), "log_rows": len(obs)}
    if not a.skip_finetune:
        t = time.time()
        reward = fit_reward(obs, text="headline", outcome="clicks", trials="impressions",
                            confounders=["test_week:time"], family="binomial", encoder=a.encoder,
                            finetune=FinetuneConfig(epochs=a.epochs), diagnose=False)
        ft = reward.metrics["finetune"]
        result["finetune"] = {"encoder": a.encoder, "seconds": round(time.time() - t, 1),
                              "epochs_run": ft["epochs_run"], "train_rows": ft["train_rows"],
                              "heldout_rows": ft["heldout_rows"], "heldout_deviance": ft["heldout_deviance"]}
        print(json.dumps(result["finetune"]), flush=True)
    if a.smollm2_texts:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["DECONFOUNDLM_CACHE"] = cache
            texts = sorted(set(pk["headline"].astype(str)))[: a.smollm2_texts]
            enc = get_encoder("smollm2-135m", cache=False)
            enc.encode(texts[:8])  # load outside the timing
            t = time.time()
            emb = enc.encode(texts)
            dt = time.time() - t
        result["smollm2_features"] = {"texts": len(texts), "seconds": round(dt, 2),
                                      "texts_per_s": round(len(texts) / dt, 1), "dim": int(emb.shape[1])}
        print(json.dumps(result["smollm2_features"]), flush=True)
    print(json.dumps(result, indent=2))
    if a.out:
        from deconfoundlm.outputs import write_json

        write_json(result, a.out)


if __name__ == "__main__":
    main()
