"""Should `minilm-onnx` be the default encoder? The demo's 5 splits with each encoder, paired.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encoder_decision.py [--out benchmarks/results/encoder_decision.md]

Runs the demo's observational-vs-experimental check (`run_demo`, 5 seeded splits, no learning
curve, no SmolLM2 section) once with `minilm` and once with `minilm-onnx`, then, per method, the
paired difference of held-out pairwise accuracy (onnx - minilm) over the splits with its 95%
t-interval, next to each method's accuracy with minilm and the demo's own 95% CI (cluster
bootstrap over held-out tests). The rule (issue #29): switch the default if no method's accuracy
with minilm-onnx lies outside its CI with minilm. Also prints each run's wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats


def t_interval(x: np.ndarray) -> tuple[float, float]:
    m, s = float(np.mean(x)), float(np.std(x, ddof=1))
    h = float(stats.t.ppf(0.975, len(x) - 1)) * s / np.sqrt(len(x))
    return m - h, m + h


def main() -> None:
    from deconfoundlm.evaluation.demo import DemoConfig, run_demo

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/encoder_decision.md")
    a = ap.parse_args()
    per, walls, res = {}, {}, {}
    with tempfile.TemporaryDirectory() as d:
        for enc in ("minilm", "minilm-onnx"):
            cfg = DemoConfig(encoder=enc, curve_sizes=())
            cfg.candidates.stories = 0
            t = time.perf_counter()
            run_demo(Path(d) / enc, cfg)
            walls[enc] = time.perf_counter() - t
            per[enc] = pd.read_csv(Path(d) / enc / "per_split.csv")
            res[enc] = pd.read_csv(Path(d) / enc / "results.csv").set_index("method")
    a_, b_ = per["minilm"], per["minilm-onnx"]
    key = [c for c in ("split", "method") if c in a_.columns]
    m = a_.merge(b_, on=key, suffixes=("_minilm", "_onnx"))
    acc = "accuracy"
    lines = ["# minilm-onnx against minilm on the demo's splits (paired)", "",
             f"`{' '.join(['benchmarks/encoder_decision.py'])}`; demo wall: minilm {walls['minilm']:.0f} s, "
             f"minilm-onnx {walls['minilm-onnx']:.0f} s (no learning curve, no SmolLM2 section).", "",
             "| method | minilm (the demo's 95% CI) | minilm-onnx | paired difference onnx - minilm (95% CI) | "
             "moves outside minilm's CI? |", "|---|---|---|---|---|"]
    moved = []
    for method, g in m.groupby("method", sort=False):
        x, y = g[f"{acc}_minilm"].to_numpy(), g[f"{acc}_onnx"].to_numpy()
        lo, hi = res["minilm"].loc[method, "ci_low"], res["minilm"].loc[method, "ci_high"]
        dlo, dhi = t_interval(y - x)
        out = not lo <= float(np.mean(y)) <= hi
        moved += [method] if out else []
        lines.append(f"| {method} | {np.mean(x):.3f} [{lo:.3f}, {hi:.3f}] | {np.mean(y):.3f} | "
                     f"{np.mean(y - x):+.4f} [{dlo:+.4f}, {dhi:+.4f}] | {'yes' if out else 'no'} |")
    lines += ["", "Decision: " + ("keep minilm as the default (" + ", ".join(moved) + " moved outside its CI)"
                                  if moved else "no method moves outside its CI: minilm-onnx may become the default")]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
