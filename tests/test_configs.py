"""One typed config per command: the command line is generated from the configs, the Python API
takes them, each shared option is declared once, and a bad value is refused with the same rule
from Python (naming ``cv``) and from the command line (naming ``--cv``)."""

import argparse
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from deconfoundlm import configs
from deconfoundlm.cli import build_parser, main
from deconfoundlm.errors import UserError

SOURCE = (Path(__file__).resolve().parents[1] / "src" / "deconfoundlm" / "configs.py").read_text()


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in name.split():
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


@pytest.mark.parametrize("command", list(configs.COMMANDS))
def test_every_field_is_a_flag_with_the_configs_default(command):
    cls, _ = configs.COMMANDS[command]
    actions = {a.dest: a for a in _subparser(command)._actions}
    for f in dataclasses.fields(cls):
        if not f.metadata or not f.metadata["cli"]:
            assert f.name not in actions, f.name
            continue
        action = actions[f.name]
        assert action.help, f.name
        if not action.required and f.default is not dataclasses.MISSING and not f.metadata["negatable"]:
            assert action.default == f.default, (command, f.name, action.default, f.default)
        if not action.required and f.default_factory is not dataclasses.MISSING and not f.metadata["repeat"]:
            assert action.default == f.default_factory(), (command, f.name, action.default)  # e.g. --sizes
    for dest, *_ in cls.INPUTS:
        assert dest in actions


@pytest.mark.parametrize("name", ["seed", "force", "encoder", "dask", "text", "confounders", "weights"])
def test_a_shared_option_is_declared_once(name):
    """(``text`` once for the commands that read a text column; align's is optional, with another
    default. Options of one name with other rules stay apart: ``cv`` of sensitivity has its own bound.)"""
    found = re.findall(rf"^    {name}: .* = option\(", SOURCE, flags=re.M)
    assert len(found) == 1 + (name == "text"), name


def test_the_same_rule_from_python_and_from_the_command_line(capsys):
    with pytest.raises(UserError, match=r"^cv 1: must be at least 2, got 1$"):
        configs.FitConfig(text="t", outcome="y", cv=1)
    assert isinstance(UserError("x"), ValueError)
    assert main(["fit-reward", "log.csv", "--text", "t", "--outcome", "y", "--out", "r", "--cv", "1"]) == 2
    assert "argument --cv: must be at least 2, got 1" in capsys.readouterr().err
    with pytest.raises(UserError, match="lora applies to finetune only"):
        configs.FitConfig(text="t", outcome="y", lora=True)
    assert main(["fit-reward", "log.csv", "--text", "t", "--outcome", "y", "--out", "r", "--lora"]) == 2
    assert "--lora applies to --finetune only" in capsys.readouterr().err
    with pytest.raises(UserError, match="text is required"):
        configs.FitConfig(outcome="y")
    with pytest.raises(TypeError, match="unexpected option 'outcomes'"):
        configs.FitConfig.of(None, {"text": "t", "outcomes": "y"})


def test_a_config_and_keywords_fit_the_same_reward(upworthy_sample):
    from deconfoundlm import fit_reward

    kw = dict(text="headline", outcome="clicks", trials="impressions", confounders=("test_week:time",),
              encoder="hashing", cv=3)
    cfg = configs.FitConfig(**kw)
    texts = upworthy_sample["headline"].head(50).tolist()
    a = fit_reward(upworthy_sample, cfg).score(texts)
    b = fit_reward(upworthy_sample, **kw).score(texts)
    np.testing.assert_array_equal(a, b)
    c = fit_reward(upworthy_sample, cfg, method="naive")  # a keyword replaces the config's field
    assert c.metrics["method"] == "naive" and cfg.method == "deconfound"


def test_a_library_error_names_the_parameter_from_python_and_the_flag_from_the_cli(upworthy_sample, tmp_path,
                                                                                   capsys):
    from deconfoundlm import fit_reward

    df = upworthy_sample[["headline", "clicks"]]
    with pytest.raises(UserError, match=r"^family binomial needs trials "):
        fit_reward(df, text="headline", outcome="clicks", family="binomial", encoder="hashing", method="naive")
    df.to_csv(tmp_path / "log.csv", index=False)
    assert main(["fit-reward", str(tmp_path / "log.csv"), "--text", "headline", "--outcome", "clicks", "--family",
                 "binomial", "--encoder", "hashing", "--method", "naive", "--out", str(tmp_path / "r")]) == 2
    assert "--family binomial needs --trials" in capsys.readouterr().err
