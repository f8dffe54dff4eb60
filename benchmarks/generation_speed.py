"""Generation speed: SmolLM2-135M-Instruct writing headlines for Upworthy ledes, one prompt at a
time against one batched call across prompts (``alignment/generate.py``).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generation_speed.py [--prompts 8] [--n 4]

Prints texts/s and the cut-off replies of each way (same prompts, same seed).
"""

from __future__ import annotations

import argparse
import time

from transformers import set_seed

from deconfoundlm.alignment.generate import sample_finished, sample_finished_many
from deconfoundlm.alignment.policies import load_policy
from deconfoundlm.evaluation.candidates import story_prompt, strip_html
from deconfoundlm.logs import upworthy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4, help="finished replies per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    a = ap.parse_args()
    pk = upworthy.load_packages()
    ledes = [strip_html(x) for x in pk["lede"].dropna().unique()[: a.prompts]]
    prompts = [story_prompt(lede) for lede in ledes]
    policy = load_policy("smollm2-135m")
    set_seed(0)
    t = time.time()
    one = [sample_finished(policy, p, a.n, a.max_new_tokens, temperature=0.7) for p in prompts]
    t_one = time.time() - t
    set_seed(0)
    t = time.time()
    many = sample_finished_many(policy, [(p, a.n) for p in prompts], a.max_new_tokens, temperature=0.7)
    t_many = time.time() - t
    for name, got, secs in (("one prompt at a time", one, t_one), ("batched across prompts", many, t_many)):
        texts = sum(len(x) for x, _ in got)
        print(f"{name:>24}: {texts} texts in {secs:.1f} s = {texts / secs:.2f} texts/s; "
              f"{sum(c for _, c in got)} cut off (redrawn)")


if __name__ == "__main__":
    main()
