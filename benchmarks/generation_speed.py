"""Time the demo's SmolLM2 candidates: loading SmolLM2-135M-Instruct and writing 2 x 8 replies
for each of 24 held-out Upworthy stories (the demo's settings: split 0's held-out tests, seed 0,
24 new tokens at most, temperature 0.7, top-p 0.95, cut-off replies redrawn).

    python benchmarks/generation_speed.py            # prints load and generation seconds and a
                                                     # digest of the texts (same digest: same texts)

Run it at two commits (PYTHONPATH=src of each) to compare them on the same machine.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np


def main() -> None:
    from transformers import set_seed

    from deconfoundlm.alignment.generate import sample_finished_many
    from deconfoundlm.alignment.policies import load_policy
    from deconfoundlm.evaluation.candidates import PROMPT, CandidateConfig, cut_lede, pick_stories
    from deconfoundlm.logs import upworthy

    pk = upworthy.load_packages().reset_index(drop=True)
    tests = np.sort(pk["test_id"].unique())
    held = np.random.default_rng(0).choice(tests, int(round(0.3 * len(tests))), replace=False)
    cfg = CandidateConfig(stories=24)  # the demo's setting when this benchmark was written (12 since 2026-12-06)
    stories = pick_stories(pk, held, cfg.stories, 0)
    ledes = [cut_lede(max(g["lede_text"], key=len), cfg.lede_chars) for _, g in stories.groupby("test_id", sort=True)]
    t = time.perf_counter()
    policy = load_policy("smollm2-135m")
    load = time.perf_counter() - t
    set_seed(0)
    t = time.perf_counter()
    got = sample_finished_many(policy, [(PROMPT.format(lede=lede), 2 * cfg.k) for lede in ledes],
                               max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    gen = time.perf_counter() - t
    texts = sum(len(g[0]) for g in got)
    digest = hashlib.sha256(repr(got).encode()).hexdigest()[:16]
    print(f"stories {len(ledes)}  load {load:.2f} s  generate {gen:.1f} s  texts {texts}  "
          f"cut off {sum(g[1] for g in got)}  digest {digest}")


if __name__ == "__main__":
    main()
