"""Benchmark DGP files: the bundled versions, the schema's checks, and the 'misleading' scenario."""

import json

import numpy as np
import pandas as pd
import pytest

from deconfoundlm.cli import main
from deconfoundlm.errors import UserError
from deconfoundlm.evaluation.benchmark import dgp
from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.rewards import make_estimator

TEXTS = ["You won't believe these 7 facts?", "This is the most amazing dog ever", "a b c", "Why 3 cats?"]


def test_dgp_v1_is_unchanged():
    cfg = dgp.load_config()
    assert list(cfg["scenarios"]) == ["none", "spurious", "entangled"]
    assert cfg["causal_effect"] == {"has_number": 0.6, "second_person": 0.4, "question": -0.4, "length": 0.2}
    feats = dgp.text_features(TEXTS, cfg)
    assert list(feats.columns) == ["has_number", "second_person", "question", "length", "this_word"]
    # 0.6 number + 0.4 you - 0.4 question + 0.2 * clip((6 - 15) / 3, -2.5, 2.5)
    assert dgp.true_effect(feats, cfg)[0] == pytest.approx(0.6 + 0.4 - 0.4 + 0.2 * -2.5)


def test_dgp_v2_adds_hype_and_the_misleading_scenario():
    cfg = dgp.load_config("dgp_v2")
    feats = dgp.text_features(TEXTS, cfg)
    assert feats["hype"].tolist() == [0.0, 1.0, 0.0, 0.0]
    mis = dgp.scenario_config(cfg, "misleading")
    assert mis["entangled_feature"] == "hype" and cfg["causal_effect"]["hype"] < 0
    assert mis["confounder"]["effect"] == 0.6 and cfg["confounder"]["effect"] == 0.4


def test_misleading_logs_teach_a_naive_reward_the_wrong_sign():
    # On the DGP's own features (no encoder), the naive fit gives hype a positive effect; the
    # deconfounded fit recovers its negative causal effect.
    cfg = dgp.load_config("dgp_v2")
    rng = np.random.default_rng(0)
    words = ["best", "cat", "news", "amazing", "why?", "you", "7", "this", "world", "people"]
    texts = [" ".join(rng.choice(words, 6)) for _ in range(3000)]
    feats = dgp.text_features(texts, cfg)
    log = dgp.simulate_log(feats, "misleading", 20_000, "gaussian", rng, cfg)
    X = feats.iloc[log.text_index].to_numpy(float)
    hype = list(feats.columns).index("hype")
    kw = dict(family="gaussian", cv=3, alphas=(1e-4,))
    naive = make_estimator("naive", **kw).fit(X, log.outcome)
    dec = make_estimator("deconfound", **kw).fit(X, log.outcome, confounders=pd.DataFrame({"c": log.confounder}),
                                                 specs=[ConfounderSpec("c", "numeric")])
    unit = np.eye(X.shape[1])[hype] + X.mean(0)
    base = X.mean(0)[None, :]
    naive_hype = float((naive.reward(unit[None, :]) - naive.reward(base))[0])
    dec_hype = float((dec.reward(unit[None, :]) - dec.reward(base))[0])
    assert naive_hype > 0.1
    assert dec_hype == pytest.approx(-0.5, abs=0.1)


def _set(**fields):
    return lambda cfg: {**cfg, **fields}


def _drop(key):
    return lambda cfg: {k: v for k, v in cfg.items() if k != key}


BAD = {  # case -> (a change of dgp_v2, or the file's text) and what the error names
    "not-json": ("{", "not valid JSON"),
    "deep": ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    "nan": ('{"features": NaN}', "not valid JSON"),
    "unknown-top": (_set(featurez={}), "'featurez'"),
    "missing": (_drop("causal_effect"), "'causal_effect' is missing"),
    "bad-regex": (lambda c: {**c, "features": {**c["features"], "x": {"regex": "(unclosed"}}}, "'features.x.regex'"),
    "nested-quantifier": (lambda c: {**c, "features": {**c["features"], "x": {"regex": "(\\w+\\s?)+!"}}},
                          "'features.x.regex' repeats a group"),
    "back-reference": (lambda c: {**c, "features": {**c["features"], "x": {"regex": "(a)\\1"}}},
                       "'features.x.regex' repeats a group that itself repeats, or uses a back-reference"),
    "effect-of-nothing": (_set(causal_effect={"nope": 1.0}), "'causal_effect.nope'"),
    "huge-effect": (_set(causal_effect={"question": 1e9}), "'causal_effect.question'"),
    "non-binary-entangled": (_set(entangled_feature="length"), "'entangled_feature'"),
    "scenario-without-a_e": (_set(scenarios={"s": {"a_s": 1.0}}), "'scenarios.s.a_e'"),
    "scenario-extra": (_set(scenarios={"s": {"a_s": 1.0, "a_e": 0, "strength": 2}}), "'scenarios.s.strength'"),
    "pools": (_set(pools={"logging": 0.8, "evaluation": 0.2, "candidate": 0.2}), "'pools'"),
    "impressions": (lambda c: {**c, "outcome": {**c["outcome"], "binomial": {**c["outcome"]["binomial"],
                                                                           "impressions": 0.5}}},
                    "'outcome.binomial.impressions'"),
}


def _write(tmp_path, change):
    path = tmp_path / "dgp.json"
    if isinstance(change, str):
        path.write_text(change)
    else:
        path.write_text(json.dumps(change(json.loads(json.dumps(dgp.load_config("dgp_v2"))))))
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_dgp_file_is_a_user_error_naming_the_field(tmp_path, case):
    change, expected = BAD[case]
    path = _write(tmp_path, change)
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        dgp.load_config(path)


def test_benchmark_simulate_refuses_a_bad_dgp_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, _set(entangled_feature="length"))
    code = main(["benchmark", "simulate", "--dgp", str(path), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "entangled_feature" in err[0]
    assert not (tmp_path / "b").exists()
    code = main(["benchmark", "simulate", "--dgp", "dgp_v2", "--scenario", "shocking", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "misleading" in err[0] and not (tmp_path / "b").exists()


def test_a_dgp_file_with_regex_features_drives_the_simulation(tmp_path):
    cfg = json.loads(json.dumps(dgp.load_config("dgp_v1")))
    cfg["features"]["dog"] = {"regex": r"\bdogs?\b", "ignore_case": True}
    cfg["causal_effect"]["dog"] = 1.0
    cfg["scenarios"] = {"dogs": {"a_s": 0, "a_e": 2.0, "entangled_feature": "dog"}}
    path = tmp_path / "dogs.json"
    path.write_text(json.dumps(cfg))
    loaded = dgp.load_config(path)
    feats = dgp.text_features(["Dogs rule", "cats rule"] * 50, loaded)
    assert feats["dog"].tolist()[:2] == [1.0, 0.0]
    log = dgp.simulate_log(feats, "dogs", 4000, "gaussian", np.random.default_rng(1), loaded)
    published_dog = feats["dog"].to_numpy()[log.text_index] == 1
    # The logging policy publishes dog headlines when c is high.
    assert log.confounder[published_dog].mean() > log.confounder[~published_dog].mean() + 0.5
