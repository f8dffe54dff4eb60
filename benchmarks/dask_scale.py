"""Wall time and peak memory of `fit-reward --dask` on a large partitioned log, against the
in-process path on a smaller one.

    .venv/bin/python benchmarks/make_large_log.py /tmp/large10m --rows 10000000 --parts 100 --family binomial
    .venv/bin/python benchmarks/make_large_log.py /tmp/large1m --rows 1000000 --parts 10 --family binomial
    .venv/bin/python benchmarks/dask_scale.py /tmp/large10m --workers 2 --memory-limit 3.9GB \\
        --in-process /tmp/large1m

A scheduler and N single-threaded workers are started as separate processes (`dask scheduler`,
`dask worker`), exactly as on a cluster; the client is `deconfoundlm fit-reward ... --dask
tcp://127.0.0.1:PORT`. Peak resident memory: the client's from /usr/bin/time, each worker's
(nanny and worker process together) sampled every 0.2 s with psutil. The in-process run is the
same command without --dask on the smaller log (its Parquet files read as one table); when it is
the same log, the two saved models' weights are compared.

    .venv/bin/python benchmarks/dask_scale.py /tmp/large10m --workers 2 --memory-limit 3.9GB --local

runs the command as a user would on one machine, `fit-reward ... --dask local:2:3.9GB` (the
client starts the LocalCluster with Dask's default spill thresholds): peak RSS of the client
process and of each worker process it spawns.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
ROLES = ["--text", "text", "--outcome", "clicks", "--trials", "impressions", "--confounder", "week:time",
         "--confounder", "slot:categorical"]
# Workers keep their managed memory well under the limit: spill to disk from 40% (the tasks'
# temporaries and Python's own memory need the rest).
WORKER_MEMORY = {"DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "0.4", "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "0.5",
                 "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "0.7",
                 # glibc's per-thread malloc arenas hold freed memory as unmanaged RSS: two are enough
                 "MALLOC_ARENA_MAX": "2"}


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _tree_rss(proc: psutil.Process) -> int:
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _timed(cmd: list[str]) -> dict:
    """Run a command under /usr/bin/time -v: wall seconds, peak RSS (GB), its output."""
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=os.environ)
    wall = time.perf_counter() - t
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    if out.returncode:
        print(out.stdout, out.stderr, file=sys.stderr)
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return {"wall_s": round(wall, 1), "peak_rss_gb": round(int(peak.group(1)) / 1e6, 2) if peak else None,
            "stdout": out.stdout.strip().splitlines()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="folder of Parquet files (the large log)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="3.5GB", help="per worker (Dask spills to disk beyond it)")
    ap.add_argument("--in-process", metavar="DATA", help="also fit this log in process, for comparison")
    ap.add_argument("--encoder", default="hashing")
    ap.add_argument("--out", default="benchmarks/results/dask_scale.json")
    ap.add_argument("--local", action="store_true",
                    help="let the command start its own cluster (--dask local:N:MEMORY, Dask's default "
                         "spill thresholds) instead of a separate scheduler and worker processes")
    a = ap.parse_args()
    if a.local:
        _local(a)
        return

    work = Path(tempfile.mkdtemp(prefix="dask-scale-"))
    results: dict = {"data": a.data, "workers": a.workers, "memory_limit": a.memory_limit, "encoder": a.encoder}
    roles = [*ROLES, "--encoder", a.encoder]
    port = _free_port()
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    time.sleep(3)
    for i in range(a.workers):
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--memory-limit",
             a.memory_limit, "--local-directory", str(work / f"w{i}"), "--no-dashboard", "--name", f"w{i}"],
            stdout=subprocess.DEVNULL, stderr=open(work / f"w{i}.log", "w"), env={**os.environ, **WORKER_MEMORY}))
    time.sleep(5)
    peaks = [0] * (a.workers + 1)  # the scheduler's, then each worker's
    stop = threading.Event()

    def sample() -> None:
        ps = [psutil.Process(p.pid) for p in procs]
        while not stop.is_set():
            for i, p in enumerate(ps):
                peaks[i] = max(peaks[i], _tree_rss(p))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        results["dask"] = _timed([str(BIN / "deconfoundlm"), "fit-reward", a.data, *roles, "--dask",
                                  f"tcp://127.0.0.1:{port}", "--out", str(work / "model-dask")])
    finally:
        stop.set()
        sampler.join()
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    results["dask"]["scheduler_peak_rss_gb"] = round(peaks[0] / 1e9, 2)
    results["dask"]["worker_peak_rss_gb"] = [round(p / 1e9, 2) for p in peaks[1:]]
    results["dask"]["worker_restarts"] = sum(open(work / f"w{i}.log").read().count("Restarting worker")
                                             for i in range(a.workers))
    results["dask"]["client_peak_rss_gb"] = results["dask"].pop("peak_rss_gb")
    if a.in_process:
        results["in_process"] = _timed([str(BIN / "deconfoundlm"), "fit-reward", a.in_process, *roles,
                                        "--out", str(work / "model-here")])
        results["in_process"]["data"] = a.in_process
        if Path(a.in_process).resolve() == Path(a.data).resolve():  # same rows: the same model?
            import numpy as np
            from safetensors.numpy import load_file

            w = [load_file(str(work / m / "model.safetensors")) for m in ("model-dask", "model-here")]
            results["max_abs_weight_difference"] = float(max(np.max(np.abs(w[0][k] - w[1][k])) for k in w[0]))
    shutil.rmtree(work, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def _local(a: argparse.Namespace) -> None:
    """`fit-reward ... --dask local:N:MEMORY`: the client process (which also runs the scheduler
    and the nannies) and each worker process it spawns, peak RSS sampled every 0.2 s."""
    work = Path(tempfile.mkdtemp(prefix="dask-scale-"))
    cmd = [str(BIN / "deconfoundlm"), "fit-reward", a.data, *ROLES, "--encoder", a.encoder, "--dask",
           f"local:{a.workers}:{a.memory_limit}", "--out", str(work / "model")]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MALLOC_ARENA_MAX": "2"})
    client, peaks = psutil.Process(proc.pid), {}
    client_peak = 0
    while proc.poll() is None:
        try:
            client_peak = max(client_peak, client.memory_info().rss)
            for child in client.children(recursive=True):
                rss = child.memory_info().rss
                peaks[child.pid] = (max(peaks.get(child.pid, (0, ""))[0], rss), " ".join(child.cmdline()[-2:]))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode:
        print(out, err, file=sys.stderr)
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    workers = sorted((round(rss / 1e9, 2) for rss, line in peaks.values() if rss > 200e6), reverse=True)
    results = {"data": a.data, "command": " ".join(cmd[1:]).replace(str(work), "OUT"), "wall_s": round(wall, 1),
               "client_peak_rss_gb": round(client_peak / 1e9, 2), "worker_peak_rss_gb": workers,
               "stdout": out.strip().splitlines()}
    shutil.rmtree(work, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
