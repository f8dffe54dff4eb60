"""A report of one's own fit (``report REWARD_DIR``), the predicted outcome under a confounder
setting (``score --at``, ``Reward.predict``) and the API functions of the commands."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import planted_log

import deconfoundlm
from deconfoundlm.cli import main


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A binomial deconfound reward with a week trend and a categorical placement, plus its log."""
    d = tmp_path_factory.mktemp("fit")
    rng = np.random.default_rng(0)
    log = planted_log(400)
    log["week"] = np.repeat(np.arange(201401, 201441), 10)
    log["slot"] = rng.choice(["top", "side", "foot"], size=len(log))
    log["views"] = 1000
    p = 1 / (1 + np.exp(-(-3 + 0.5 * log["text"].str.startswith("alpha") + 0.3 * (log["slot"] == "top"))))
    log["clicks"] = rng.binomial(1000, p)
    path = d / "log.csv"
    log.to_csv(path, index=False)
    assert main(["fit-reward", str(path), "--text", "text", "--outcome", "clicks", "--trials", "views",
                 "--confounder", "week:time", "--confounder", "slot:categorical", "--encoder", "hashing",
                 "--cv", "3", "--out", str(d / "reward")]) == 0
    return d, path


def test_reward_report_is_written_beside_the_folder(fitted, capsys):
    d, _ = fitted
    assert main(["report", str(d / "reward")]) == 0
    page = (d / "reward-report.html").read_text()
    assert "1. The fit" in page and "deviance explained (CV)" in page and "week: trend" in page
    assert "2. What the confounders do" in page and page.count("data:image/png;base64,") == 1
    assert sorted(p.name for p in (d / "reward").iterdir()) == ["config.json", "metrics.json", "model.safetensors"]
    metrics = json.loads((d / "reward" / "metrics.json").read_text())
    assert 0 < metrics["cv_deviance"] < metrics["null_deviance"]  # the fit explains part of the deviance


def test_reward_report_includes_diagnose_sensitivity_and_evaluate(fitted, tmp_path):
    d, log = fitted
    roles = ["--text", "text", "--outcome", "clicks", "--trials", "views", "--confounder", "week:time",
             "--encoder", "hashing", "--cv", "3"]
    assert main(["diagnose", str(log), *roles, "--out", str(tmp_path / "diag.json")]) == 0
    assert main(["sensitivity", str(log), *roles, "--out", str(tmp_path / "sens.json")]) == 0
    ab = pd.read_csv(log).assign(test=lambda x: x.index // 4)
    ab.to_csv(tmp_path / "ab.csv", index=False)
    assert main(["evaluate", str(d / "reward"), str(tmp_path / "ab.csv"), "--text", "text", "--test", "test",
                 "--outcome", "clicks", "--trials", "views", "--alpha", "0.2", "--out", str(tmp_path / "ev.json")]) == 0
    out = tmp_path / "r.html"
    assert main(["report", str(d / "reward"), "--diagnostics", str(tmp_path / "diag.json"), "--sensitivity",
                 str(tmp_path / "sens.json"), "--evaluation", str(tmp_path / "ev.json"), "--out", str(out)]) == 0
    page = out.read_text()
    for heading in ("3. Diagnostics", "4. What if a confounder was not named?", "5. Against randomized A/B tests"):
        assert heading in page
    # diagnose and sensitivity ran with the week only, the reward with week and slot: said, not hidden
    assert page.count("Not checked:") == 2 and "confounders week:time, the reward" in page
    assert "correlation of naive and deconfounded rewards" in page


@pytest.mark.parametrize("extra, message", [
    (["--evaluation", "{diag}"], "not an `evaluate --out` result"),
    (["--diagnostics", "{bad}"], "not valid JSON"),
    (["--sensitivity", "{nofile}"], "no such file"),
    (["--out", "{reward}/r.html"], "inside"),
])
def test_reward_report_bad_input_exit_2(fitted, tmp_path, capsys, extra, message):
    d, log = fitted
    (tmp_path / "diag.json").write_text('{"confounder_deviance_share": 0.1}')
    (tmp_path / "bad.json").write_text("{")
    names = {"diag": tmp_path / "diag.json", "bad": tmp_path / "bad.json", "nofile": tmp_path / "no.json",
             "reward": d / "reward"}
    args = [x.format(**names) for x in extra]
    assert main(["report", str(d / "reward"), *args, "--force"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (d / "reward" / "r.html").exists()


def test_extras_apply_to_reward_folders_only(tmp_path, capsys):
    (tmp_path / "e.json").write_text("{}")
    assert main(["report", str(tmp_path), "--evaluation", str(tmp_path / "e.json")]) == 2
    assert "applies to the report of a reward folder" in capsys.readouterr().err


def test_score_at_predicts_the_outcome_under_a_setting(fitted, tmp_path, capsys):
    d, log = fitted
    texts = pd.DataFrame({"text": ["alpha the a you why how", "the a you why how this", "cats dogs"]})
    texts.to_csv(tmp_path / "t.csv", index=False)
    for slot in ("top", "foot"):
        assert main(["score", str(d / "reward"), str(tmp_path / "t.csv"), "--text", "text", "--at", "week=201420",
                     "--at", f"slot={slot}", "--out", str(tmp_path / f"{slot}.csv")]) == 0
    top, foot = pd.read_csv(tmp_path / "top.csv"), pd.read_csv(tmp_path / "foot.csv")
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    # Between texts the predicted log-odds differ by the reward; between settings by g(c).
    np.testing.assert_allclose(np.diff(logit(top["predicted"])), np.diff(top["reward"]), atol=1e-6)
    reward = deconfoundlm.load_reward(d / "reward")
    g = reward.estimator.confounder_effect(pd.DataFrame({"week": [201420, 201420], "slot": ["top", "foot"]}))
    np.testing.assert_allclose(logit(top["predicted"]) - logit(foot["predicted"]), g[0] - g[1], atol=1e-6)
    assert 0.02 < top["predicted"].mean() < 0.2  # near the log's click rate (~5%)
    np.testing.assert_allclose(reward.predict(texts["text"].tolist(), {"week": 201420, "slot": "top"}),
                               top["predicted"], atol=1e-9)
    with pytest.raises(TypeError):
        reward.predict("one text", {"week": 201420, "slot": "top"})


@pytest.mark.parametrize("at, message", [
    (["week=201420"], "'slot' is missing"),
    (["week=201420", "slot=middle"], "not fitted on"),
    (["week=201420", "slot=top", "color=red"], "not a confounder"),
    (["week201420"], "expected COL=VALUE"),
    (["week=201420", "week=201421", "slot=top"], "given twice"),
])
def test_score_at_bad_settings(fitted, tmp_path, capsys, at, message):
    d, _ = fitted
    pd.DataFrame({"text": ["a b"]}).to_csv(tmp_path / "t.csv", index=False)
    args = [x for a in at for x in ("--at", a)]
    assert main(["score", str(d / "reward"), str(tmp_path / "t.csv"), "--text", "text", *args,
                 "--out", str(tmp_path / "s.csv")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_api_functions_are_the_commands():
    assert deconfoundlm.evaluate.__name__ == "evaluate" and deconfoundlm.diagnose.__name__ == "diagnose"
    assert deconfoundlm.sensitivity.__name__ == "sensitivity" and callable(deconfoundlm.report)
    with pytest.raises(AttributeError):
        deconfoundlm.no_such_function  # noqa: B018
