"""Benchmark (not a test): `--encoder minilm-onnx` (int8 ONNX Runtime) against `minilm` (PyTorch)
on every distinct headline of the bundled Upworthy archive: texts/s of each (no embedding cache),
the one-time export, the cosine between the two embeddings of each headline, and the demo's
pairwise accuracy with each encoder (`deconfoundlm demo --stories 0`, 5 splits).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/onnx_encoder.py [--skip-demo]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    os.environ["DECONFOUNDLM_CACHE"] = str(work / "cache")  # a cold export, no cached embeddings

    from deconfoundlm.features.text import get_encoder
    from deconfoundlm.logs.upworthy import load_packages

    texts = pd.unique(load_packages()["headline"].astype(str)).tolist()
    onnx, torch_enc = get_encoder("minilm-onnx", cache=False), get_encoder("minilm", cache=False)
    t0 = time.perf_counter()
    onnx.encode(texts[:2])  # exports and loads
    export_s = time.perf_counter() - t0
    torch_enc.encode(texts[:2])  # loads
    rows, emb = [], {}
    for name, enc in (("minilm (PyTorch, sentence-transformers)", torch_enc), ("minilm-onnx (ONNX Runtime, int8)", onnx)):
        t0 = time.perf_counter()
        emb[name] = enc.encode(texts)
        s = time.perf_counter() - t0
        rows.append((name, len(texts) / s, s))
    a, b = emb.values()
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"{len(texts)} distinct Upworthy headlines, {os.cpu_count()} CPUs; one-time ONNX export + int8 "
          f"quantization + load: {export_s:.1f} s\n")
    print("| encoder | texts/s | seconds |")
    print("|---|---|---|")
    for name, tps, s in rows:
        print(f"| {name} | {tps:.0f} | {s:.1f} |")
    print(f"\nspeed-up {rows[1][1] / rows[0][1]:.2f}x; cosine(PyTorch, ONNX) per headline: mean {cos.mean():.4f}, "
          f"min {cos.min():.4f}, 1st percentile {np.percentile(cos, 1):.4f}")
    if args.skip_demo:
        return
    print("\n| demo (5 splits) | naive | confounder-input | deconfound | experimental | wall |")
    print("|---|---|---|---|---|---|")
    for enc in ("minilm", "minilm-onnx"):
        out = work / f"demo-{enc}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "deconfoundlm", "demo", "--encoder", enc, "--stories", "0", "--out",
                        str(out)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        acc = pd.read_csv(out / "results.csv").set_index("method")["accuracy"]
        print(f"| {enc} | {acc['naive']:.3f} | {acc['confounder-input']:.3f} | {acc['deconfound']:.3f} | "
              f"{acc['experimental']:.3f} | {time.perf_counter() - t0:.0f} s |")


if __name__ == "__main__":
    main()
