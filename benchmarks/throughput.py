"""Throughput of `fit-reward` with MiniLM against the raw encoder on the same texts.

    .venv/bin/python benchmarks/throughput.py

On the bundled Upworthy packages (22,666 rows, 12,387 distinct headlines), in one run:
1. raw encoder: sentence-transformers MiniLM encoding every row's headline, no cache;
2. fit-reward cold: `fit_reward(..., encoder="minilm")` with an empty embedding cache;
3. fit-reward warm: the same fit again (embeddings from the cache).
Prints rows/s of each, the ratio fit-cold / raw (overhead), and the warm-cache speed-up.
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
        enc = SentenceTransformerEncoder(resolve_backbone("minilm"))
        enc.encode(texts[:64])  # load the model outside the timing
        t = time.perf_counter()
        enc.encode(texts)
        raw = time.perf_counter() - t

        kw = dict(text="headline", outcome="clicks", trials="impressions", confounders=["test_week:time"],
                  encoder="minilm")
        t = time.perf_counter()
        fit_reward(df, **kw)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        fit_reward(df, **kw)
        warm = time.perf_counter() - t

    n = len(texts)
    print(f"rows: {n} ({len(set(texts))} distinct texts)")
    print(f"raw encoder:          {raw:7.1f} s  {n / raw:8.1f} rows/s")
    print(f"fit-reward (cold):    {cold:7.1f} s  {n / cold:8.1f} rows/s")
    print(f"fit-reward (warm):    {warm:7.1f} s  {n / warm:8.1f} rows/s")
    print(f"ratio fit-cold / raw encoding time: {cold / raw:.2f} (overhead {100 * (cold / raw - 1):+.0f}%)")
    print(f"warm-cache refit speed-up: {cold / warm:.1f}x")


if __name__ == "__main__":
    main()
