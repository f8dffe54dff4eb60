"""The Upworthy policy study: SmolLM2 writes for held-out stories, a judge of separate tests scores."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from deconfoundlm.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    assert main(["benchmark", "upworthy", "--max-tests", "400", "--stories", "2", "--k", "2", "--dpo-steps", "1",
                 "--dpo-batch", "1", "--samples", "1", "--encoder", "hashing", "--out", str(out)]) == 0
    return out


def test_study_measures_every_policy_against_the_judge(study_dir):
    table = pd.read_csv(study_dir / "policy_study.csv").set_index("policy")
    kinds = ["best-of-2", "dpo"]
    rewards = ["naive", "deconfound", "experimental"]
    assert set(table.index) == {"base", "real A/B winner", "real headlines"} | {f"{k} {r}" for k in kinds
                                                                               for r in rewards}
    assert table.loc["base", "gain_vs_base"] == 0 and (table["stories"] == 2).all()
    ok = table["gain_ci_low"].notna()
    assert ((table.loc[ok, "gain_ci_low"] <= table.loc[ok, "gain_vs_base"] + 1e-12)
            & (table.loc[ok, "gain_vs_base"] <= table.loc[ok, "gain_ci_high"] + 1e-12)).all()
    # Win rates against the naive policy of the same kind only.
    assert table.loc[["best-of-2 deconfound", "dpo experimental"], "win_rate_vs_naive"].between(0, 1).all()
    assert table.loc[["base", "best-of-2 naive", "dpo naive"], "win_rate_vs_naive"].isna().all()
    assert np.isfinite(table.loc["base", ["fluency", "on_topic", "judge"]].astype(float)).all()
    per = pd.read_csv(study_dir / "policy_study_stories.csv")
    # best-of-K picks one of the base model's candidates of the same story.
    for (test_id, _policy), g in per[per["policy"].str.startswith("best-of")].groupby(["test_id", "policy"]):
        base = per[(per["test_id"] == test_id) & (per["policy"] == "base")]["headline"]
        assert len(g) == 1 and g["headline"].iloc[0] in set(base)
    facts = json.loads((study_dir / "policy_study.json").read_text())
    assert facts["judge"]["heldout_pairs"] > 0 and 0 <= facts["judge"]["heldout_accuracy"] <= 1
    assert facts["tests"]["story"] == 2 and set(facts["train_seconds"]) == {f"dpo {r}" for r in rewards}
    examples = pd.read_csv(study_dir / "policy_study_examples.csv")
    assert len(examples) == 2 and examples["real A/B winner"].str.contains("CTR").all()
    page = (study_dir / "report.html").read_text()
    assert "Who writes better headlines?" in page and "data:image/png;base64" in page


def test_demo_report_shows_the_study_in_place_of_the_toy(quick_demo, study_dir, tmp_path):
    d = tmp_path / "demo"
    shutil.copytree(quick_demo, d)
    for f in ("policy_study.csv", "policy_study_examples.csv", "policy_study.json"):
        shutil.copy(study_dir / f, d / f)
    assert main(["report", str(d), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "7. Who writes better headlines?" in page
    assert "8. Training end to end" in page  # --quick still trains the toy


def test_study_inputs_and_tampered_outputs_are_refused(study_dir, tmp_path, capsys):
    code = main(["benchmark", "upworthy", "--stories", "1", "--out", str(tmp_path / "s")])
    assert code == 2 and "--stories" in capsys.readouterr().err and not (tmp_path / "s").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    code = main(["benchmark", "upworthy", "--out", str(tmp_path / "mine")])
    assert code == 2 and (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    capsys.readouterr()
    d = tmp_path / "tampered"
    shutil.copytree(study_dir, d)
    table = pd.read_csv(d / "policy_study.csv")
    table["gain_vs_base"] = table["gain_vs_base"].astype(object)
    table.loc[0, "gain_vs_base"] = "lots"
    table.to_csv(d / "policy_study.csv", index=False)
    code = main(["report", str(d), "--out", str(tmp_path / "t.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "policy_study.csv" in err[0] and "gain_vs_base" in err[0]
    assert not (tmp_path / "t.html").exists()


def test_summary_says_dash_where_the_judge_had_no_held_out_pair():
    from deconfoundlm.evaluation.benchmark.upworthy_study import study_markdown

    table = pd.DataFrame([{"policy": "base", "stories": 2, "headlines": 4, "gain_vs_base": 0.0,
                           "gain_ci_low": float("nan"), "gain_ci_high": float("nan"),
                           "win_rate_vs_naive": float("nan"), "win_ci_low": float("nan"), "win_ci_high": float("nan"),
                           "fluency": -2.0, "on_topic": 0.4, "digits": 0.0, "you": 0.0, "question": 0.0,
                           "words": 8.0, "distinct_2": 1.0}])
    facts = {"judge": {"tests": 10, "packages": 40, "heldout_tests": 3, "heldout_pairs": 0, "heldout_accuracy": None},
             "tests": {"train": 50, "story": 2}, "stories_written": 2, "seconds": 60.0}
    text = study_markdown(table, facts)
    assert "held-out judge tests: -." in text and "| base | 2 | 4 | +0.000 [-, -] | - |" in text
