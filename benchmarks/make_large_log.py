"""Write a synthetic log of N rows (default 1,000,000) for the scale check.

    .venv/bin/python benchmarks/make_large_log.py /tmp/large.parquet [--rows 1000000]
    /usr/bin/time -v .venv/bin/deconfoundlm fit-reward /tmp/large.parquet --text text \\
        --outcome y --confounder week:time --confounder slot:categorical --encoder hashing --out /tmp/large-model

Texts are random headline-like strings (Upworthy words); the outcome is gaussian with a
known text effect and a week effect, so the fit has something to find.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from deconfoundlm.logs.upworthy import load_packages

    rng = np.random.default_rng(a.seed)
    vocab = np.array(sorted({w for h in load_packages()["headline"] for w in str(h).split()}))
    lengths = rng.integers(6, 16, size=a.rows)
    words = rng.choice(vocab, size=lengths.sum())
    cuts = np.cumsum(lengths)[:-1]
    texts = [" ".join(ws) for ws in np.split(words, cuts)]
    week = rng.integers(0, 104, size=a.rows)
    has_you = np.array(["you" in t.lower().split() for t in texts], float)
    y = 0.5 * has_you + 0.02 * week + rng.normal(size=a.rows)
    df = pd.DataFrame({"text": texts, "y": y,
                       "week": [f"{2013 + w // 52}{w % 52 + 1:02d}" for w in week],
                       "slot": rng.choice(["top", "side", "email"], size=a.rows)})
    df["week"] = df["week"].astype(int)
    df.to_parquet(a.out, index=False)
    print(f"wrote {len(df)} rows to {a.out}")


if __name__ == "__main__":
    main()
