"""Benchmark (not a test): `deconfoundlm serve` under 1, 4 and 16 concurrent clients against
in-process `Reward.score` of the same texts.

A MiniLM deconfound reward is fitted on 2,000 Upworthy packages; every request carries 8 distinct
headlines that no earlier request carried (a GRPO group; the embedding caches of the server and of
the in-process baseline start empty, so every text is encoded once). Prints requests/s, texts/s,
and p50 / p99 latency.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_throughput.py [--requests 120] [--per-request 8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, texts: list[str]) -> list[float]:
    req = urllib.request.Request(url, data=json.dumps({"texts": texts}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())["rewards"]


def run_clients(url: str, batches: list[list[str]], clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(k, len(batches), clients):
            t0 = time.perf_counter()
            post(url, batches[i])
            with lock:
                latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=120, help="requests per concurrency level")
    ap.add_argument("--per-request", type=int, default=8, help="texts per request")
    args = ap.parse_args()

    from deconfoundlm import fit_reward
    from deconfoundlm.logs.upworthy import load_packages

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    pk = load_packages()
    fit_reward(pk.sample(2000, random_state=0), text="headline", outcome="clicks", trials="impressions",
               confounders=["test_week:time"], out=work / "reward", diagnose=False)
    fitted = set(pk.sample(2000, random_state=0)["headline"])
    pool = [h for h in dict.fromkeys(pk["headline"].astype(str)) if h not in fitted]
    levels = (1, 4, 16)
    need = (len(levels) + 1) * args.requests * args.per_request
    assert len(pool) >= need, f"only {len(pool)} unseen headlines for {need}"
    chunks = [pool[i : i + args.per_request] for i in range(0, need, args.per_request)]

    # In-process baseline: the same request-sized calls, one after another, cold cache.
    env_cache = str(work / "cache-inprocess")
    os.environ["DECONFOUNDLM_CACHE"] = env_cache
    from deconfoundlm import load_reward

    reward = load_reward(work / "reward")
    reward.score(["warm-up"])
    base = chunks[: args.requests]
    t0 = time.perf_counter()
    lat = []
    for b in base:
        t1 = time.perf_counter()
        reward.score(b)
        lat.append(time.perf_counter() - t1)
    wall = time.perf_counter() - t0
    rows = [("in-process score (sequential)", 1, len(base) / wall, len(base) * args.per_request / wall,
             np.percentile(lat, 50), np.percentile(lat, 99))]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    srv = subprocess.Popen([sys.executable, "-m", "deconfoundlm", "serve", str(work / "reward"), "--port", str(port)],
                           env={**os.environ, "DECONFOUNDLM_CACHE": str(work / "cache-server")},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or srv.poll() is not None:
                why = srv.stderr.read() if srv.poll() is not None else ""
                raise SystemExit(f"server did not start: {why}") from None
            time.sleep(0.3)
    # Same numbers as in process (the texts of the first request).
    diff = np.max(np.abs(np.array(post(url + "/score", base[0])) - reward.score(base[0])))
    for k, clients in enumerate(levels):
        batch = chunks[(k + 1) * args.requests : (k + 2) * args.requests]
        wall, lat = run_clients(url + "/score", batch, clients)
        rows.append((f"serve, {clients} client(s)", clients, len(batch) / wall, len(batch) * args.per_request / wall,
                     np.percentile(lat, 50), np.percentile(lat, 99)))
    srv.terminate()
    srv.wait(timeout=60)

    print(f"{args.requests} requests of {args.per_request} unseen headlines per row; MiniLM deconfound reward; "
          f"{os.cpu_count()} CPUs; max |serve - in-process| = {diff:.2e}\n")
    print("| setting | clients | requests/s | texts/s | p50 latency (ms) | p99 latency (ms) |")
    print("|---|---|---|---|---|---|")
    for name, c, rps, tps, p50, p99 in rows:
        print(f"| {name} | {c} | {rps:.1f} | {tps:.0f} | {1000 * p50:.0f} | {1000 * p99:.0f} |")


if __name__ == "__main__":
    main()
