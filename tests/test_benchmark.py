"""Smoke run of the semi-synthetic benchmark (hashing encoder, one seed, entangled)."""

import numpy as np
import pandas as pd
import pytest

from deconfoundlm.cli import main
from deconfoundlm.evaluation.benchmark import dgp

pytestmark = pytest.mark.slow


def test_features_are_pure_functions_of_the_string():
    feats = dgp.text_features(["You won't believe these 7 facts?", "This is it", "a b c"])
    assert feats["has_number"].tolist() == [1, 0, 0]
    assert feats["second_person"].tolist() == [1, 0, 0]
    assert feats["question"].tolist() == [1, 0, 0]
    assert feats["this_word"].tolist() == [0, 1, 0]
    f = dgp.true_effect(feats)
    cfg = dgp.load_config()
    assert np.isclose(f[0], 0.6 + 0.4 - 0.4 + 0.2 * max((6 - 15) / 3, -2.5))  # 6 words, clipped
    assert set(cfg["causal_effect"]) >= {"has_number", "second_person", "question"}
    assert cfg["spurious_feature"] not in cfg["causal_effect"]


def test_logging_policy_entangles_confounder_and_features():
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    feats = dgp.text_features([f"headline {words[i % 5]}" + (" 5" if i % 3 == 0 else "")
                               + (" this" if i % 4 == 0 else "") for i in range(400)])
    cfg = dgp.load_config()
    rng = np.random.default_rng(0)
    ent = dgp.simulate_log(feats, "entangled", 5000, "gaussian", rng, cfg)
    none = dgp.simulate_log(feats, "none", 5000, "gaussian", rng, cfg)
    corr = lambda log, f: np.corrcoef(log.confounder, feats[f].to_numpy()[log.text_index])[0, 1]  # noqa: E731
    assert corr(ent, "has_number") > 0.2 and corr(ent, "this_word") > 0.2
    assert abs(corr(none, "has_number")) < 0.05 and abs(corr(none, "this_word")) < 0.05


def test_benchmark_smoke_entangled_ordering(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["benchmark", "simulate", "--scenario", "entangled", "--n", "3000", "--seeds", "1",
                 "--encoder", "hashing", "--methods", "naive,odin,crm,deconfound", "--out", str(out)])
    assert code == 0
    res = pd.read_csv(out / "results.csv").set_index("method")
    assert (out / "summary.md").read_text().count("| 3000 |") == 4
    assert (out / "entangled.png").stat().st_size > 1000
    # Under entangled confounding the invariance baselines lose causal signal and the naive
    # reward over-selects the spurious feature; generous margins.
    assert res.loc["deconfound", "recovery"] > res.loc["odin", "recovery"] + 0.03
    assert res.loc["deconfound", "recovery"] > res.loc["crm", "recovery"] + 0.03
    assert res.loc["naive", "spurious_rate"] > res.loc["deconfound", "spurious_rate"] + 0.02


def test_policy_stage_best_of_k_with_the_misleading_dgp(tmp_path):
    out = tmp_path / "pb"
    code = main(["benchmark", "simulate", "--dgp", "dgp_v2", "--scenario", "misleading", "--n", "2000",
                 "--seeds", "1", "--encoder", "hashing", "--methods", "naive,deconfound,oracle", "--max-texts", "2000",
                 "--policy-stage", "--policy-method", "best-of-4", "--policy-samples", "16", "--out", str(out)])
    assert code == 0
    pol = pd.read_csv(out / "policy_results.csv").set_index("policy")
    assert set(pol.index) == {"base", "naive", "odin", "deconfound", "oracle"}
    # Every policy picks from the same 16 x 4 finished candidates; cut-off replies are counted.
    assert (pol["samples"] == 16).all() and (pol["candidates"] == 64).all() and (pol["cut_off"] >= 0).all()
    for col in ("f_mean", "spurious_rate", "entangled_rate", "fluency", "distinct_2"):
        assert pol[col].notna().all(), col
    assert (pol["fluency"] < 0).all() and ((pol["distinct_2"] > 0) & (pol["distinct_2"] <= 1)).all()
    assert pol.loc["base", "f_normalized"] == 0 and pol.loc["oracle", "f_normalized"] == 1
    assert "best-of-4" in (out / "summary.md").read_text()


def test_policy_flags_need_the_policy_stage(tmp_path, capsys):
    code = main(["benchmark", "simulate", "--policy-method", "best-of-8", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--policy-stage" in err[0] and not (tmp_path / "b").exists()
    code = main(["benchmark", "simulate", "--policy-stage", "--policy-method", "best-of-1", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "best-of-K" in err[0]
    code = main(["benchmark", "simulate", "--policy-stage", "--policy", "gpt-17", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "smollm2-135m" in err[0] and not (tmp_path / "b").exists()


def test_chat_replies_are_cleaned_and_non_headlines_counted(monkeypatch):
    from types import SimpleNamespace

    from deconfoundlm.evaluation.benchmark import policy_stage

    replies = ['Headline: "Why 7 Dogs Changed This Town Forever"\nIt is a story about...',
               "Sure! Here's a rewritten version of the headline:", "Cats win"]
    seen = {}

    def fake(policy, requests, limit, **kw):
        seen["limit"] = limit
        return [(replies[:n], 2) for _, n in requests]

    monkeypatch.setattr(policy_stage, "sample_finished_many", fake)
    chat = SimpleNamespace(chat=True, name="x")
    [(texts, cut, rejected)] = policy_stage._texts(chat, [("p", 3)], policy_stage.PolicyStageConfig())
    assert texts == ["Why 7 Dogs Changed This Town Forever"] and cut == 2 and rejected == 2
    assert seen["limit"] == 48  # a chat policy gets room to finish
    plain = SimpleNamespace(chat=False, name="x")
    [(texts, _, rejected)] = policy_stage._texts(plain, [(None, 3)], policy_stage.PolicyStageConfig())
    assert texts == replies and rejected == 0 and seen["limit"] == 28


def test_policy_stage_grpo_tunes_on_each_reward(tmp_path):
    out = tmp_path / "pg"
    code = main(["benchmark", "simulate", "--dgp", "dgp_v2", "--scenario", "misleading", "--n", "1000",
                 "--seeds", "1", "--encoder", "hashing", "--methods", "naive,deconfound,oracle", "--max-texts", "1500",
                 "--policy-stage", "--policy-method", "grpo", "--policy-steps", "2", "--policy-samples", "8",
                 "--out", str(out)])
    assert code == 0
    pol = pd.read_csv(out / "policy_results.csv").set_index("policy")
    assert {"base", "naive", "odin", "deconfound", "oracle"} <= set(pol.index)
    assert (pol.drop(index="base")["prompts"] == 2 * 16 // 4).all()  # steps x batch / generations
    assert not pol.drop(index="base")["lora"].astype(bool).any()  # the toy trains every weight
    assert np.isfinite(pol["f_mean"]).all() and (pol["samples"] > 0).all()


def test_policy_stage_reward_floors_replies_that_are_not_headlines():
    from deconfoundlm.evaluation.benchmark.policy_stage import StageReward, parse_policy_method

    reward = StageReward(lambda texts: np.array([len(t) for t in texts], dtype=float), chat=True)
    got = reward(None, ["Headline: Ten Dogs Saved A Town", "Sure! Here's a headline:", "Cats Win The Big Game Tonight"])
    assert got == [len("Ten Dogs Saved A Town"), len("Ten Dogs Saved A Town"), len("Cats Win The Big Game Tonight")]
    assert parse_policy_method("grpo") == ("grpo", 0) and parse_policy_method("best-of-8") == ("best-of", 8)


def test_policy_training_flags_are_refused_for_best_of_k(tmp_path, capsys):
    code = main(["benchmark", "simulate", "--policy-stage", "--policy-method", "best-of-4", "--no-policy-lora",
                 "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--policy-lora" in err[0] and not (tmp_path / "b").exists()
