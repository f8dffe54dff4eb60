"""Where one split of the demo spends its time: each reward's fit and the learning curve.

    python benchmarks/demo_split.py [--split 0]

The demo's settings (MiniLM, 5-fold CV, 30% of tests held out, seed = split); the embedding
cache should be warm (run the demo once), so that encoding is not timed. Prints seconds per
stage; run it at two commits (PYTHONPATH=src of each) to compare them on the same machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=int, default=0)
    args = parser.parse_args()

    from deconfoundlm.evaluation import demo
    from deconfoundlm.evaluation.evaluate import significant_pairs
    from deconfoundlm.evaluation.upworthy_rewards import FITS, fit_rewards
    from deconfoundlm.features.text import get_encoder
    from deconfoundlm.logs import upworthy

    cfg = demo.DemoConfig()
    pk = upworthy.load_packages().reset_index(drop=True)
    tests = np.sort(pk["test_id"].unique())
    enc = demo.MemoizedEncoder(get_encoder(cfg.encoder))
    enc.encode(np.unique(pk["headline"].to_numpy(str)).tolist())
    seed = cfg.seed + args.split
    held = np.random.default_rng(seed).choice(tests, int(round(cfg.heldout * len(tests))), replace=False)
    train = np.setdiff1d(tests, held)
    fits = {}
    for name, *_ in FITS:
        t = time.perf_counter()
        got, obs = fit_rewards(pk, enc, train, seed, cfg, names=(name,))
        fits.update(got)
        print(f"{name:>18}: {time.perf_counter() - t:6.2f} s", flush=True)
    ev = pk[pk["test_id"].isin(held) & upworthy.reliable(pk)].reset_index(drop=True)
    arms, pairs, _ = significant_pairs(ev, text="headline", test="test_id", outcome="clicks",
                                       trials="impressions", alpha=upworthy.PAIR_ALPHA)
    t = time.perf_counter()
    demo.learning_curve_split(pk, enc, fits, obs, train, arms, pairs, seed, cfg)
    print(f"{'learning curve':>18}: {time.perf_counter() - t:6.2f} s", flush=True)


if __name__ == "__main__":
    main()
