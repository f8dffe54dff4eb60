"""Where the time of `fit-reward` and `score` goes, stage by stage, at several log sizes.

    .venv/bin/python benchmarks/profile_fit.py [--rows 4873,50000] [--encoders hashing,minilm-onnx]
        [--out benchmarks/results/profile_fit.md]

Logs: the bundled Upworthy packages, one package per test (4,873 rows) for the first size; larger
sizes draw packages with replacement (seeded). Binomial clicks of impressions, the week as
confounder, 5-fold CV, defaults otherwise. Per (encoder, rows):

- whole process: wall seconds of `deconfoundlm fit-reward ...` in a fresh process, with an empty
  embedding cache (cold), and of `deconfoundlm score` of the same log with the reward;
- start-up: seconds of `deconfoundlm --help` (interpreter and the CLI's own imports);
- the stages: the same fit in one process after a warm-up fit on 200 rows (so that library
  imports are not counted in the stages), cold cache, timed at the stage functions: read +
  validate (`LogData.read`), encode (`encode_in_chunks`), the penalty path (`fit_path`), standard
  errors (`sandwich_sums` / `text_covariance`), diagnostics (`_fit_diagnostics`) and writing
  (`Reward.save`); "imports and start-up" is the whole process less that fit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# stage -> the names to time, as (module, attribute) at their call sites (nested calls count once)
STAGES = {
    "read + validate": [("deconfoundlm.logdata.LogData", "read")],
    "encode": [("deconfoundlm.pipeline", "encode_in_chunks")],
    "penalty path (CV + final fit)": [("deconfoundlm.rewards.base", "fit_path"),
                                      ("deconfoundlm.glm.model", "fit_path"),
                                      ("deconfoundlm.glm.selection", "fit_path")],
    "standard errors": [("deconfoundlm.rewards.base", "sandwich_sums"), ("deconfoundlm.rewards.base", "text_covariance")],
    "diagnostics": [("deconfoundlm.pipeline", "_fit_diagnostics")],
    "write": [("deconfoundlm.pipeline.Reward", "save")],
}
ROLES = ["--text", "headline", "--outcome", "clicks", "--trials", "impressions", "--confounder", "test_week:time"]


def make_log(rows: int, path: Path) -> None:
    from deconfoundlm.logs.upworthy import load_packages

    pk = load_packages()
    log = pk.groupby("test_id").sample(1, random_state=0)
    if rows != len(log):
        log = pk.sample(rows, replace=True, random_state=0)
    log[["headline", "clicks", "impressions", "test_week"]].to_csv(path, index=False)


def wall(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    res = subprocess.run(args, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{res.stderr}")
    return time.perf_counter() - t


def stages(log: Path, warm_log: Path, encoder: str, tmp: Path) -> dict[str, float]:
    """Seconds per stage of one fit in this process, timed at the stage functions (no profiler
    overhead), after a warm-up fit that imported every library."""
    import importlib

    from deconfoundlm.cli import main

    tmp.mkdir()
    os.environ["DECONFOUNDLM_CACHE"] = str(tmp / "warmup-cache")
    assert main(["fit-reward", str(warm_log), *ROLES, "--encoder", encoder, "--out", str(tmp / "warm"), "--quiet"]) == 0
    spent = dict.fromkeys(STAGES, 0.0)
    active: set[str] = set()

    def timed(stage: str, fn):
        def run(*args, **kwargs):
            if stage in active:  # a nested call of the same stage
                return fn(*args, **kwargs)
            active.add(stage)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - t
                active.discard(stage)
        return run

    patched = []
    for stage, sites in STAGES.items():
        for module, attr in sites:
            head, _, last = module.rpartition(".")
            owner = getattr(importlib.import_module(head), last) if last[:1].isupper() else \
                importlib.import_module(module)
            original = getattr(owner, attr)
            patched.append((owner, attr, original))
            setattr(owner, attr, timed(stage, original))
    os.environ["DECONFOUNDLM_CACHE"] = str(tmp / "profile-cache")
    t = time.perf_counter()
    code = main(["fit-reward", str(log), *ROLES, "--encoder", encoder, "--out", str(tmp / "prof"), "--quiet"])
    total = time.perf_counter() - t
    for owner, attr, original in patched:
        setattr(owner, attr, original)
    assert code == 0
    return {**spent, "fit in a warm process (all stages)": total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="4873,50000")
    ap.add_argument("--encoders", default="hashing,minilm-onnx")
    ap.add_argument("--out", default="benchmarks/results/profile_fit.md")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    exe = [sys.executable, "-m", "deconfoundlm"]  # the code on PYTHONPATH (before / after runs)
    lines = [f"# fit-reward / score profile{(' (' + a.label + ')') if a.label else ''}", "",
             f"`{' '.join(sys.argv)}`; {os.cpu_count()} CPUs; seconds.", ""]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DECONFOUNDLM_CACHE": str(tmp / "help-cache")}
        help_s = min(wall([*exe, "--help"], env) for _ in range(3))
        lines += [f"`deconfoundlm --help`: {help_s:.2f} s (best of 3)", ""]
        make_log(200, tmp / "warm.csv")
        rows_list = [int(r) for r in a.rows.split(",")]
        table = {}
        for enc in a.encoders.split(","):
            for rows in rows_list:
                log = tmp / f"log{rows}.csv"
                if not log.exists():
                    make_log(rows, log)
                cold = {**env, "DECONFOUNDLM_CACHE": str(tmp / f"cold-{enc}-{rows}")}
                fit_s = wall([*exe, "fit-reward", str(log), *ROLES, "--encoder", enc, "--out", str(tmp / "r"),
                              "--force", "--quiet"], cold)
                score_s = wall([*exe, "score", str(tmp / "r"), str(log), "--text", "headline", "--out",
                                str(tmp / "s.csv"), "--force", "--quiet"], cold)
                st = stages(log, tmp / "warm.csv", enc, tmp / f"p-{enc}-{rows}")
                st["imports and start-up (whole process less the fit in a warm process)"] = \
                    fit_s - st["fit in a warm process (all stages)"]
                table[(enc, rows)] = {"fit-reward, whole process (cold cache)": fit_s,
                                      "score, whole process (warm cache)": score_s, **st}
                print(enc, rows, {k: round(v, 2) for k, v in table[(enc, rows)].items()}, flush=True)
        cols = list(table)
        lines.append("| stage | " + " | ".join(f"{e} {r:,}" for e, r in cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for key in next(iter(table.values())):
            lines.append(f"| {key} | " + " | ".join(f"{table[c][key]:.2f}" for c in cols) + " |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
