"""The Dask path (--dask): on a LocalCluster with 2 worker processes, the same model as in
memory on the same rows; scoring into partitioned Parquet; diagnose; errors before any work."""

import json
import socket
import time

import numpy as np
import pandas as pd
import pytest

from deconfoundlm import fit_reward, load_reward
from deconfoundlm.cli import main

pytestmark = pytest.mark.dask

N = 20_000
WORDS = "amazing you why this new study finds how people life change secret top best world".split()


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def log_files(tmp_path_factory):
    """One Parquet file and the same rows as a folder of 4 partitions (in order)."""
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, rng.integers(3, 8))) for _ in range(N)]
    week = rng.integers(0, 30, N)
    good = np.array(["amazing" in t for t in texts])
    eta = -3 + 0.3 * good + 0.05 * week
    imp = rng.integers(50, 500, N)
    df = pd.DataFrame({"headline": texts, "clicks": rng.binomial(imp, 1 / (1 + np.exp(-eta))), "impressions": imp,
                       "week": pd.Timestamp("2020-01-06") + pd.to_timedelta(week * 7, "D"),
                       "site": rng.choice(["a", "b", "c"], N), "score": eta + rng.normal(size=N)})
    root = tmp_path_factory.mktemp("dask_log")
    df.to_parquet(root / "log.parquet")
    (root / "parts").mkdir()
    for i, rows in enumerate(np.array_split(np.arange(N), 4)):
        df.iloc[rows].to_parquet(root / "parts" / f"part-{i:03d}.parquet")
    return root, df


KW = dict(text="headline", encoder="hashing", confounders=["week:time", "site:categorical"], cv=3)


@pytest.mark.parametrize("family,roles", [("gaussian", {"outcome": "score"}),
                                          ("binomial", {"outcome": "clicks", "trials": "impressions"})])
def test_same_model_as_in_memory(cluster, log_files, family, roles):
    root, df = log_files
    here = fit_reward(root / "log.parquet", **KW, **roles)
    there = fit_reward(str(root / "parts"), dask=cluster, **KW, **roles)
    assert here.estimator.family_ == there.estimator.family_ == family
    assert here.estimator.alpha_ == there.estimator.alpha_
    texts = df.headline.tolist()[:5000] + ["a headline never seen", "amazing"]
    diff = np.abs(here.score(texts) - there.score(texts))
    assert diff.max() < 1e-6
    assert np.std(here.score(texts)) > 0.01  # the rewards are not trivially equal (constant)
    cov_here, cov_there = here.estimator.text_cov_, there.estimator.text_cov_
    assert np.abs(cov_here - cov_there).max() <= 1e-8 * np.abs(cov_here).max()
    assert there.metrics["n_rows"] == N
    assert there.info["data_fingerprint"] == here.info["data_fingerprint"]  # the same rows, however split
    assert there.metrics["diagnostics"]["confounder_deviance_share"] == pytest.approx(
        here.metrics["diagnostics"]["confounder_deviance_share"], abs=1e-6)


def test_score_writes_partitioned_parquet(cluster, log_files, tmp_path, capsys):
    root, df = log_files
    model = tmp_path / "model"
    fit_reward(root / "log.parquet", outcome="clicks", trials="impressions", out=model, diagnose=False, **KW)
    out = tmp_path / "scores"
    rc = main(["score", str(model), str(root / "parts"), "--text", "headline", "--se", "--dask", cluster,
               "--out", str(out)])
    assert rc == 0
    got = pd.read_parquet(out)  # the marker starts with "_": Parquet readers skip it
    assert list(got.columns) == [*df.columns, "reward", "reward_se"]
    assert len(got) == N
    reward = load_reward(model)
    r, se = reward.score(got.headline.tolist(), return_se=True)
    assert np.abs(got.reward.to_numpy() - r).max() < 1e-9
    assert np.abs(got.reward_se.to_numpy() - se).max() < 1e-9
    # --force replaces an earlier score folder, and nothing else
    assert main(["score", str(model), str(root / "parts"), "--text", "headline", "--dask", cluster,
                 "--out", str(out), "--force"]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep")
    assert main(["score", str(model), str(root / "parts"), "--text", "headline", "--dask", cluster,
                 "--out", str(tmp_path / "other"), "--force"]) == 2
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep"


def test_diagnose_on_the_cluster(cluster, log_files, tmp_path):
    from deconfoundlm.evaluation.diagnose import diagnose

    root, _ = log_files
    kw = dict(text="headline", outcome="clicks", trials="impressions", confounders=["week:time", "site:categorical"],
              encoder="hashing", cv=3)
    here = diagnose(root / "log.parquet", **kw)
    out = tmp_path / "d.json"
    there = diagnose(str(root / "parts"), dask=cluster, out=out, **kw)
    assert there["rows"] == N
    assert there["reward_correlation"] == pytest.approx(here["reward_correlation"], abs=1e-6)
    assert there["confounder_deviance_share"] == pytest.approx(here["confounder_deviance_share"], abs=1e-6)
    assert json.loads(out.read_text())["rows"] == N


def test_local_cluster_started_by_the_command(log_files, tmp_path, capsys):
    """--dask local:2 starts two worker processes for the command, fits, and closes them."""
    root, df = log_files
    small = tmp_path / "small"
    small.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(3000), 3)):
        df.iloc[rows].to_parquet(small / f"p{i}.parquet")
    rc = main(["fit-reward", str(small), "--text", "headline", "--outcome", "score", "--confounder", "site:categorical",
               "--encoder", "hashing", "--cv", "3", "--dask", "local:2:1GB", "--out", str(tmp_path / "m")])
    assert rc == 0
    assert "3000 rows" in capsys.readouterr().out
    here = fit_reward(small, text="headline", outcome="score", confounders=["site:categorical"], encoder="hashing",
                      cv=3)
    texts = df.headline.tolist()[:500]
    assert np.abs(load_reward(tmp_path / "m").score(texts) - here.score(texts)).max() < 1e-6


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_scheduler_is_exit_2_within_30_s(log_files, tmp_path, capsys):
    root, _ = log_files
    t = time.perf_counter()
    rc = main(["fit-reward", str(root / "parts"), "--text", "headline", "--outcome", "clicks", "--trials",
               "impressions", "--confounder", "week:time", "--encoder", "hashing", "--dask",
               f"tcp://127.0.0.1:{_closed_port()}", "--out", str(tmp_path / "m")])
    assert rc == 2
    assert time.perf_counter() - t < 30
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dask" in err[0] and "no Dask scheduler answered" in err[0]
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--dask", "local:0"], "local workers"),
    (["--dask", "not an address"], "scheduler address"),
    (["--dask", "local:1", "--group", "site"], "--group"),
    (["--dask", "local:1", "--method", "odin"], "odin"),
    (["--dask", "local:1", "--head", "mlp"], "mlp"),
])
def test_unsupported_options_fail_before_any_work(log_files, tmp_path, capsys, extra, needle):
    root, _ = log_files
    rc = main(["fit-reward", str(root / "parts"), "--text", "headline", "--outcome", "clicks", "--trials",
               "impressions", "--confounder", "week:time", "--encoder", "hashing", "--out", str(tmp_path / "m"),
               *extra])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "m").exists()


def test_constant_confounder_is_judged_on_the_whole_log(cluster, log_files, tmp_path, capsys):
    # Each partition's "site" is constant; the log's is not (fits), unless all partitions agree (exit 2).
    root, df = log_files
    for name, sites in (("varies", ["a", "a", "b", "a"]), ("constant", ["a"] * 4)):
        folder = tmp_path / name
        folder.mkdir()
        for i, rows in enumerate(np.array_split(np.arange(N), 4)):
            df.iloc[rows].assign(site=sites[i]).to_parquet(folder / f"part-{i:03d}.parquet")
    args = ["fit-reward", "--text", "headline", "--outcome", "clicks", "--trials", "impressions", "--confounder",
            "site:categorical", "--encoder", "hashing", "--cv", "3", "--dask", cluster]
    assert main([args[0], str(tmp_path / "varies"), *args[1:], "--out", str(tmp_path / "m1")]) == 0
    assert load_reward(tmp_path / "m1").estimator.design_.state_[0]["levels"] == ["a", "b"]
    capsys.readouterr()
    assert main([args[0], str(tmp_path / "constant"), *args[1:], "--out", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'site' has a single level ('a')" in err[0]
    assert not (tmp_path / "m2").exists()


def test_diagnostics_of_a_large_log_use_the_same_sampled_rows_on_both_paths(cluster, log_files, monkeypatch):
    # Over DIAGNOSTIC_ROWS rows, diagnostics run on a seeded hash sample of the global row numbers:
    # the same rows whether the log is one file in memory or 4 partitions on the cluster.
    import deconfoundlm.pipeline as reward_module

    monkeypatch.setattr(reward_module, "DIAGNOSTIC_ROWS", 2_000)
    root, _ = log_files
    roles = {"outcome": "clicks", "trials": "impressions"}
    here = fit_reward(root / "log.parquet", **KW, **roles).metrics["diagnostics"]
    there = fit_reward(str(root / "parts"), dask=cluster, **KW, **roles).metrics["diagnostics"]
    assert 1_800 < here["rows_used"] < 2_200 and here["rows_used"] == there["rows_used"]
    assert there["confounder_deviance_share"] == pytest.approx(here["confounder_deviance_share"], abs=1e-9)
    assert there["entanglement_r2"] == pytest.approx(here["entanglement_r2"], abs=1e-9)


def test_csv_on_the_cluster_keeps_the_files_column_types(cluster, log_files, tmp_path, monkeypatch):
    # A CSV is split into text blocks; each block's types are inferred as pandas does and unified
    # over the file: week codes stay numbers (a time confounder of YYYYWW codes), a column that is
    # int in some blocks and float in others is float everywhere (its levels "1.0", as in memory),
    # and score --dask writes numbers as numbers.
    import deconfoundlm.distributed.logs as dlogs

    monkeypatch.setattr(dlogs, "CSV_BLOCK_BYTES", 200_000)  # several blocks of a 20,000-row file
    root, df = log_files
    weeks = (df.week.dt.isocalendar().week.astype(int) + 100 * df.week.dt.isocalendar().year.astype(int))
    tier = np.where(np.arange(N) % 3 == 0, 1, 2).astype(object)
    tier[-50:] = 2.5  # only the last block has a non-integer value
    csv = tmp_path / "log.csv"
    df.assign(week=weeks, tier=tier).drop(columns="score").to_csv(csv, index=False)
    kw = dict(KW, confounders=["week:time", "tier:categorical"], outcome="clicks", trials="impressions")
    here = fit_reward(csv, **kw)
    there = fit_reward(str(csv), dask=cluster, **kw)
    assert there.estimator.design_.to_config() == here.estimator.design_.to_config()
    assert here.estimator.design_.state_[1]["levels"] == ["1.0", "2.0", "2.5"]
    assert there.info["data_fingerprint"] == here.info["data_fingerprint"]  # same values, same types
    texts = df.headline.tolist()[:2000]
    assert np.abs(here.score(texts) - there.score(texts)).max() < 1e-6
    there.save(tmp_path / "m")
    assert main(["score", str(tmp_path / "m"), str(csv), "--text", "headline", "--dask", cluster,
                 "--out", str(tmp_path / "scores")]) == 0
    scored = pd.read_parquet(tmp_path / "scores")
    assert scored.week.dtype == np.int64 and scored.tier.dtype == np.float64 and scored.clicks.dtype == np.int64
    np.testing.assert_allclose(scored.reward.to_numpy(), there.score(df.headline.tolist()), atol=1e-9)


def test_a_bad_value_is_named_by_its_row_in_the_log_not_in_its_partition(cluster, log_files, tmp_path, capsys):
    root, df = log_files
    bad = df.copy()
    bad.loc[15_007, "score"] = np.inf  # the 8th row of the 4th partition
    (tmp_path / "parts").mkdir()
    for i, rows in enumerate(np.array_split(np.arange(N), 4)):
        bad.iloc[rows].to_parquet(tmp_path / "parts" / f"part-{i:03d}.parquet")
    bad.to_parquet(tmp_path / "log.parquet")
    errors = []
    for data, extra in ((tmp_path / "log.parquet", []), (tmp_path / "parts", ["--dask", cluster])):
        rc = main(["fit-reward", str(data), "--text", "headline", "--outcome", "score", "--confounder", "site:categorical",
                   "--encoder", "hashing", "--out", str(tmp_path / "m"), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1
        errors.append(err[0])
    assert "in row 15007" in errors[0] and "in row 15007" in errors[1]
    assert not (tmp_path / "m").exists()


def test_grounding_on_the_tests_fits_the_log_on_the_cluster_and_matches_memory(cluster, log_files, tmp_path):
    """fit-reward --ab with --dask: the log part on the cluster, the tests here; the same reward,
    choice and count of the tests whose texts the log holds as in memory."""
    root, df = log_files
    rng = np.random.default_rng(1)
    rows = []
    for t in range(120):
        for a in range(3):
            text = df.headline.iloc[t] if a == 0 and t < 30 else " ".join(rng.choice(WORDS, 5)) + f" arm{a}"
            eta = -3 + 0.3 * ("amazing" in text.split())
            rows.append({"test": f"t{t}", "headline": text, "impressions": 3000,
                         "clicks": rng.binomial(3000, 1 / (1 + np.exp(-eta)))})
    pd.DataFrame(rows).to_csv(tmp_path / "ab.csv", index=False)
    kw = dict(KW, outcome="clicks", trials="impressions", ab=tmp_path / "ab.csv", test="test")
    here = fit_reward(root / "log.parquet", **kw)
    there = fit_reward(str(root / "parts"), dask=cluster, **kw)
    g_here, g_there = here.metrics["grounding"], there.metrics["grounding"]
    expected = pd.DataFrame(rows).pipe(lambda ab: ab.loc[ab.headline.isin(set(df.headline)), "test"].nunique())
    assert g_here["tests_in_log"] == g_there["tests_in_log"] == {"tests": expected, "of": 120}
    assert expected >= 30
    assert g_here["strength"] == g_there["strength"] and g_here["choice"] == g_there["choice"]
    assert g_here["log_scale"] == pytest.approx(g_there["log_scale"], abs=1e-6)
    texts = df.headline.tolist()[:2000] + ["amazing new study", "why this"]
    assert np.abs(here.score(texts) - there.score(texts)).max() < 1e-6
    assert np.std(there.score(texts)) > 0.01
