"""Throughput of `fit-reward` with MiniLM against the raw encoder on the log's distinct texts.

    .venv/bin/python benchmarks/throughput.py

On the bundled Upworthy packages (22,666 rows, 12,387 distinct headlines), in one run:
1. raw encoder: sentence-transformers MiniLM encoding each distinct headline once, no cache
   (the model loaded before the clock starts): the physical limit of a fit;
2. fit-reward cold: `fit_reward(..., encoder="minilm")` with an empty embedding cache, defaults
   (5-fold CV over 6 penalties, standard errors, diagnostics), model load included;
3. fit-reward warm: the same fit again (embeddings from the cache): the cost of everything but
   encoding.
Prints the seconds of each and the ratio fit-cold / raw encoding (the target: at most 1.2).
"""

from __future__ import annotations

import os
import tempfile
import time


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DECONFOUNDLM_CACHE"] = cache
        from deconfoundlm import fit_reward
        from deconfoundlm.features.backbones import resolve_backbone
        from deconfoundlm.features.text import SentenceTransformerEncoder
        from deconfoundlm.logs.upworthy import load_packages

        df = load_packages()
        texts = df["headline"].astype(str).tolist()
        distinct = list(dict.fromkeys(texts))
        enc = SentenceTransformerEncoder(resolve_backbone("minilm"))
        enc.encode(distinct[:64])  # load the model outside the timing
        t = time.perf_counter()
        enc.encode(distinct)
        raw = time.perf_counter() - t

        kw = dict(text="headline", outcome="clicks", trials="impressions", confounders=["test_week:time"],
                  encoder="minilm")
        t = time.perf_counter()
        fit_reward(df, **kw)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        fit_reward(df, **kw)
        warm = time.perf_counter() - t

    print(f"rows: {len(texts)} ({len(distinct)} distinct texts)")
    print(f"raw encoder, distinct texts: {raw:7.1f} s  {len(distinct) / raw:7.1f} texts/s")
    print(f"fit-reward (cold cache):     {cold:7.1f} s")
    print(f"fit-reward (warm cache):     {warm:7.1f} s  (everything but encoding)")
    print(f"ratio fit-cold / raw encoding of the distinct texts: {cold / raw:.2f}")


if __name__ == "__main__":
    main()
