"""Write a synthetic log of N rows (default 1,000,000) for the scale checks.

    .venv/bin/python benchmarks/make_large_log.py /tmp/large.parquet [--rows 1000000]
    .venv/bin/python benchmarks/make_large_log.py /tmp/large10m --rows 10000000 --parts 100 --family binomial

With ``--parts N`` OUT is a folder of N Parquet files (rows in order), written one part at a time
so that memory stays bounded. Texts are random headline-like strings (Upworthy words); the outcome
has a known text effect ("you") and week and slot effects, so the fit has something to find:
gaussian ``y``, or binomial ``clicks`` out of ``impressions``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def _part(vocab: np.ndarray, rows: int, seed: int, part: int, family: str) -> pd.DataFrame:
    rng = np.random.default_rng([seed, part])
    lengths = rng.integers(6, 16, size=rows)
    words = rng.choice(vocab, size=lengths.sum())
    cuts = np.cumsum(lengths)[:-1]
    texts = [" ".join(ws) for ws in np.split(words, cuts)]
    week = rng.integers(0, 104, size=rows)
    slot = rng.choice(["top", "side", "email"], size=rows)
    has_you = np.array(["you" in t.lower().split() for t in texts], float)
    df = pd.DataFrame({"text": texts, "week": (2013 + week // 52) * 100 + week % 52 + 1, "slot": slot})
    if family == "binomial":
        eta = -3.0 + 0.5 * has_you + 0.01 * week + np.where(slot == "top", 0.4, 0.0)
        imp = rng.integers(20, 200, size=rows)
        df["impressions"] = imp
        df["clicks"] = rng.binomial(imp, 1 / (1 + np.exp(-eta)))
    else:
        df["y"] = 0.5 * has_you + 0.02 * week + rng.normal(size=rows)
    return df


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--parts", type=int, default=1, help="write a folder of this many Parquet files")
    ap.add_argument("--family", choices=["gaussian", "binomial"], default="gaussian")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from deconfoundlm.logs.upworthy import load_packages

    vocab = np.array(sorted({w for h in load_packages()["headline"] for w in str(h).split()}))
    sizes = [len(s) for s in np.array_split(np.arange(a.rows), a.parts)]
    if a.parts == 1:
        _part(vocab, a.rows, a.seed, 0, a.family).to_parquet(a.out, index=False)
    else:
        Path(a.out).mkdir(parents=True, exist_ok=False)
        for i, n in enumerate(sizes):
            _part(vocab, n, a.seed, i, a.family).to_parquet(Path(a.out) / f"part-{i:05d}.parquet", index=False)
    print(f"wrote {a.rows} rows to {a.out}")


if __name__ == "__main__":
    main()
