"""Regression tests for the second bad-input battery (the newer surfaces): one per class.

Files that are not regular files, JSON bombs, corrupt Parquet parts, caches that are not caches,
flags beyond sane bounds, a constant reward index, lengths beyond a model's positions, a full disk,
outputs inside an input folder, text where a report wants numbers. Fast: hashing encoder, a few
hundred rows; the cases that could hang run in a subprocess under a timeout.
"""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import one_error_line, run_cli

ROLES = ["--text", "headline", "--outcome", "clicks", "--trials", "impressions", "--confounder", "test_week:time",
         "--encoder", "hashing", "--cv", "3"]


def run(args, capsys):
    return run_cli(args, capsys)[:2]


def cli(args, timeout=60, env=None):
    """The command in a fresh process (a hang is a failure, not a stuck test run)."""
    return subprocess.run([sys.executable, "-m", "deconfoundlm", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def reward_dir(hashing_reward):
    return hashing_reward


# -- only regular files are read ----------------------------------------------------------
def test_a_fifo_is_named_not_waited_on(tmp_path, frame):
    (tmp_path / "pq").mkdir()
    frame.iloc[:150].to_parquet(tmp_path / "pq" / "a.parquet")
    os.mkfifo(tmp_path / "pq" / "b.parquet")
    os.mkfifo(tmp_path / "log.csv")
    for data in (tmp_path / "pq", tmp_path / "log.csv"):
        res = cli(["fit-reward", data, *ROLES, "--out", tmp_path / "r"], timeout=60)
        assert res.returncode == 2 and "not a regular file" in res.stderr, res.stderr
    assert not (tmp_path / "r").exists()


def test_a_fifo_inside_a_reward_folder_is_refused(tmp_path, reward_dir, data):
    import shutil

    bad = tmp_path / "r"
    shutil.copytree(reward_dir, bad)
    os.mkfifo(bad / "notes.json")
    res = cli(["score", bad, data, "--text", "headline", "--out", tmp_path / "s.csv"], timeout=60)
    assert res.returncode == 2 and "not a regular file" in res.stderr and "notes.json" in res.stderr, res.stderr


def test_symlink_loops_are_named(tmp_path, data, capsys):
    os.symlink(tmp_path / "b.csv", tmp_path / "a.csv")
    os.symlink(tmp_path / "a.csv", tmp_path / "b.csv")
    one_error_line(*run(["fit-reward", tmp_path / "a.csv", *ROLES, "--out", tmp_path / "r"], capsys), "symlink loop")
    one_error_line(*run(["fit-reward", data, *ROLES, "--out", tmp_path / "a.csv"], capsys), "symlink loop")


def test_json_bombs_are_bounded(tmp_path, reward_dir, data, capsys, monkeypatch):
    import shutil

    from deconfoundlm import outputs

    deep = tmp_path / "deep"
    shutil.copytree(reward_dir, deep)
    (deep / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    one_error_line(*run(["score", deep, data, "--text", "headline", "--out", tmp_path / "s.csv"], capsys),
                   "metrics.json is not valid JSON")
    monkeypatch.setattr(outputs, "MAX_JSON_BYTES", 4000)
    big = tmp_path / "big"
    shutil.copytree(reward_dir, big)
    (big / "metrics.json").write_text(json.dumps({"pad": "x" * 6000}))
    one_error_line(*run(["score", big, data, "--text", "headline", "--out", tmp_path / "s.csv"], capsys),
                   "metrics.json is not valid JSON")


# -- corrupt or mismatched Parquet parts ----------------------------------------------------
@pytest.mark.parametrize("damage, needle", [("corrupt", "not a readable Parquet file"),
                                            ("schema", "column 'clicks' not found")])
def test_bad_parquet_part_is_named(tmp_path, frame, capsys, damage, needle):
    (tmp_path / "pq").mkdir()
    frame.iloc[:150].to_parquet(tmp_path / "pq" / "a.parquet")
    if damage == "corrupt":
        (tmp_path / "pq" / "b.parquet").write_bytes(b"PAR1" + b"\0" * 20 + b"PAR1")
    else:
        frame.iloc[150:].drop(columns="clicks").to_parquet(tmp_path / "pq" / "b.parquet")
    one_error_line(*run(["fit-reward", tmp_path / "pq", *ROLES, "--out", tmp_path / "r"], capsys), "b.parquet", needle)


@pytest.mark.dask
def test_bad_parquet_part_is_named_on_dask(tmp_path, frame, capsys):
    (tmp_path / "pq").mkdir()
    frame.iloc[:150].to_parquet(tmp_path / "pq" / "a.parquet")
    frame.iloc[150:].drop(columns="clicks").to_parquet(tmp_path / "pq" / "b.parquet")
    one_error_line(*run(["fit-reward", tmp_path / "pq", *ROLES, "--dask", "local:1", "--out", tmp_path / "r"], capsys),
                   "b.parquet", "column 'clicks' not found")


# -- Dask: no hang ----------------------------------------------------------------------------
@pytest.mark.dask
def test_a_silent_peer_is_exit_2_within_the_timeout(tmp_path, data):
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(8)], daemon=True).start()
    port = server.getsockname()[1]
    t0 = time.monotonic()
    res = cli(["fit-reward", data, *ROLES, "--dask", f"tcp://127.0.0.1:{port}", "--out", tmp_path / "r"], timeout=60)
    assert res.returncode == 2 and "no Dask scheduler answered" in res.stderr, res.stderr
    assert time.monotonic() - t0 < 30 and len(res.stderr.strip().splitlines()) == 1
    server.close()


@pytest.mark.parametrize("value", ["local:1:1kB", "local:2:0GB", "local:2:100MiB"])
def test_too_little_worker_memory_is_refused_up_front(tmp_path, data, capsys, value):
    one_error_line(*run(["fit-reward", data, *ROLES, "--dask", value, "--out", tmp_path / "r"], capsys),
                   "each worker needs at least 512 MiB")


@pytest.mark.dask
def test_sigterm_stops_the_workers_with_one_line(tmp_path):
    """SIGTERM while a local cluster encodes: one line, exit 143, no process left, nothing written."""
    import signal
    import time

    import psutil

    from deconfoundlm.logs.upworthy import load_packages

    load_packages().to_csv(tmp_path / "log.csv", index=False)
    args = [sys.executable, "-m", "deconfoundlm", "fit-reward", str(tmp_path / "log.csv"), *ROLES[:-4],
            "--encoder", "minilm", "--dask", "local:2", "--out", str(tmp_path / "r")]
    env = {**os.environ, "DECONFOUNDLM_CACHE": str(tmp_path / "cold-cache")}  # so that encoding takes a while
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 90
    while len(parent.children(recursive=True)) < 3 and time.monotonic() < deadline:  # workers up
        time.sleep(0.5)
    time.sleep(3)
    children = parent.children(recursive=True)
    assert children, "the local cluster did not start"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("encoding")]
    assert lines == ["deconfoundlm: terminated (SIGTERM); nothing was written"], err
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"processes left: {alive}"
    assert not (tmp_path / "r").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


# -- a cache is a cache -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["garbage", "folder", "other-schema", "under-a-file", "dev-null"])
def test_a_broken_embedding_cache_is_a_warning(tmp_path, data, tiny_bert, capsys, monkeypatch, kind):
    import sqlite3

    from deconfoundlm.features import text

    monkeypatch.setattr(text, "_BROKEN_CACHES", set())
    root = tmp_path / "cache"
    root.mkdir()
    if kind == "garbage":
        (root / "embeddings.sqlite").write_bytes(b"this is not a database" * 10)
    elif kind == "folder":
        (root / "embeddings.sqlite").mkdir()
    elif kind == "other-schema":
        con = sqlite3.connect(root / "embeddings.sqlite")
        con.execute("CREATE TABLE emb (something INTEGER)")
        con.commit()
        con.close()
    elif kind == "under-a-file":
        (tmp_path / "afile").write_text("x")
        root = tmp_path / "afile" / "cache"
    else:
        root = "/dev/null"
    monkeypatch.setenv("DECONFOUNDLM_CACHE", str(root))
    args = ["fit-reward", data, *ROLES[:-4], "--encoder", tiny_bert, "--cv", "3", "--out", tmp_path / "r"]
    code, err = run(args, capsys)
    assert code == 0, err
    assert "embedding cache" in err and "encoding without it" in err and err.count("embedding cache") == 1


# -- bounded flags, degenerate inputs ---------------------------------------------------------
def test_invariance_weight_is_bounded(tmp_path, data, capsys):
    code, err = run(["fit-reward", data, *ROLES, "--method", "crm", "--invariance-weight", "1e300",
                     "--out", tmp_path / "r"], capsys)
    one_error_line(code, err, "--invariance-weight", "at most 1e6")


def test_sensitivity_with_one_text_is_exit_2(tmp_path, frame, capsys):
    frame["headline"] = "the same headline everywhere"
    frame.to_csv(tmp_path / "const.csv", index=False)
    one_error_line(*run(["sensitivity", tmp_path / "const.csv", *ROLES], capsys), "reward index is (nearly) constant")


# -- a full disk: exit 2, nothing written -------------------------------------------------------
def test_disk_full_while_saving_a_reward(tmp_path, data, capsys, monkeypatch):
    import deconfoundlm.rewards.base as base

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(base, "save_file", full)
    one_error_line(*run(["fit-reward", data, *ROLES, "--out", tmp_path / "r"], capsys), "no space left on device",
                   str(tmp_path / "r"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


def test_disk_full_while_writing_scores(tmp_path, reward_dir, data, capsys, monkeypatch):
    from deconfoundlm.outputs import TableWriter

    def full(self, df):
        with open(self.tmp, "a") as fh:
            fh.write("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TableWriter, "_write", full)
    one_error_line(*run(["score", reward_dir, data, "--text", "headline", "--out", tmp_path / "s.csv"], capsys),
                   "no space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


# -- outputs never go inside an input folder ----------------------------------------------------
def test_outputs_stay_out_of_input_folders(tmp_path, reward_dir, data, tiny_bert, capsys):
    one_error_line(*run(["score", reward_dir, data, "--text", "headline", "--out", reward_dir / "s.csv"], capsys),
                   "inside", "a folder this command reads")
    one_error_line(*run(["diagnose", data, *ROLES[:-4], "--encoder", tiny_bert, "--out", tiny_bert / "d.json"],
                        capsys), "inside")
    assert not (reward_dir / "s.csv").exists() and not (tiny_bert / "d.json").exists()


# -- reports read numbers where they need numbers --------------------------------------------
def test_report_names_text_in_a_numeric_column(tmp_path, quick_demo, capsys):
    import shutil

    d = tmp_path / "demo"
    shutil.copytree(quick_demo, d)
    ts = pd.read_csv(d / "timeseries.csv")
    ts["share_digits"] = ts["share_digits"].astype(object)
    ts.loc[0, "share_digits"] = "lots"
    ts.to_csv(d / "timeseries.csv", index=False)
    one_error_line(*run(["report", d, "--out", tmp_path / "r.html"], capsys), "timeseries.csv", "share_digits")
    diag = json.loads((quick_demo / "diagnostics.json").read_text())
    diag["confounded_ngrams"] = [{"ngram": "x", "count": "many"}]
    shutil.copy(quick_demo / "timeseries.csv", d / "timeseries.csv")
    (d / "diagnostics.json").write_text(json.dumps(diag))
    one_error_line(*run(["report", d, "--out", tmp_path / "r.html"], capsys), "confounded_ngrams")
    assert not (tmp_path / "r.html").exists()


# -- lengths beyond a model's positions -------------------------------------------------------
@pytest.mark.finetune
def test_max_length_beyond_the_positions_is_clamped_and_a_tampered_one_refused(tmp_path, tiny_bert, capsys):
    from conftest import planted_log

    df = planted_log(200)
    df.loc[0, "text"] = " ".join(["alpha"] * 300)  # far beyond the tiny model's 64 positions
    df.to_csv(tmp_path / "log.csv", index=False)
    code, err = run(["fit-reward", tmp_path / "log.csv", "--text", "text", "--outcome", "y", "--confounder",
                     "c:numeric", "--encoder", tiny_bert, "--finetune", "--epochs", "1", "--max-length", "8192",
                     "--out", tmp_path / "r"], capsys)
    assert code == 0 and "beyond" in err and "64 positions" in err, err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["text_model"]["max_length"] == 64
    assert run(["score", tmp_path / "r", tmp_path / "log.csv", "--text", "text", "--out", tmp_path / "s.csv"],
               capsys)[0] == 0
    assert np.isfinite(pd.read_csv(tmp_path / "s.csv")["reward"]).all()
    cfg["text_model"]["max_length"] = 1_000_000
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    one_error_line(*run(["score", tmp_path / "r", tmp_path / "log.csv", "--text", "text", "--out",
                         tmp_path / "t.csv"], capsys), "beyond the model's 64 positions")


def test_integer_text_column_fits_quickly_with_a_warning(tmp_path, frame, capsys):
    """A Parquet text column of integers: a warning, a fit in seconds, a held-out deviance that is
    not an impossible 0."""
    import time

    df = frame.head(60).copy()
    df["headline"] = np.arange(60)
    df.to_parquet(tmp_path / "ints.parquet")
    t0 = time.monotonic()
    code, err = run(["fit-reward", tmp_path / "ints.parquet", *ROLES, "--out", tmp_path / "r"], capsys)
    assert code == 0 and "holds numbers, not texts" in err
    assert time.monotonic() - t0 < 60
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["cv_deviance"] > 0 and np.isfinite(metrics["cv_deviance"])


def test_features_too_wide_for_memory_are_refused_before_the_fit(tmp_path, data, capsys, monkeypatch):
    import psutil

    class Tiny:
        available = 50 * 2**20  # 50 MiB free

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    one_error_line(*run(["fit-reward", data, *ROLES[:-4], "--encoder", "hashing-2048", "--out", tmp_path / "r"],
                        capsys), "2,048 dimensions", "GiB")
    one_error_line(*run(["fit-reward", data, *ROLES[:-4], "--encoder", "hashing-65536", "--out", tmp_path / "r"],
                        capsys), "from 8 to 4096")
    assert not (tmp_path / "r").exists()


def test_disk_full_with_a_library_error_type(tmp_path, data, capsys, monkeypatch):
    """safetensors reports a full disk as its own error type, with the OS's words."""
    import deconfoundlm.rewards.base as base

    class SafetensorError(Exception):
        pass

    def full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(base, "save_file", full)
    one_error_line(*run(["fit-reward", data, *ROLES, "--out", tmp_path / "r"], capsys), "no space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]
