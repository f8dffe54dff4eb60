"""A command costs its work and no more: reading the arguments (``--help``, a bad flag) imports
none of the heavy libraries; only the command that runs imports what it uses."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "sklearn", "scipy", "dask", "distributed", "fastapi", "uvicorn", "pandas",
         "numpy", "pyarrow", "sentence_transformers", "onnxruntime", "trl", "peft", "datasets", "matplotlib")

PROBE = """
import json, sys
from deconfoundlm.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def imported_by(*args):
    res = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return got["code"], set(got["modules"]), res.stderr


COMMANDS = ["fit-reward", "score", "evaluate", "diagnose", "sensitivity", "report", "align", "generate", "serve",
            "demo", "benchmark"]


@pytest.mark.parametrize("args", [["--help"], ["--version"], *[[c, "--help"] for c in COMMANDS],
                                  ["fit-reward", "log.csv", "--text", "t", "--outcome", "y", "--cv", "1"],
                                  ["score"], ["no-such-command"]])
def test_reading_the_arguments_imports_no_heavy_library(args):
    code, modules, err = imported_by(*args)
    assert code in (0, 2), err
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_a_command_imports_what_it_uses(tmp_path):
    """The guard above is not vacuous: running a command does import its libraries."""
    (tmp_path / "log.csv").write_text("t,y\na,1\n")
    code, modules, err = imported_by("fit-reward", str(tmp_path / "log.csv"), "--text", "t", "--outcome", "y",
                                     "--out", str(tmp_path / "r"))
    assert code == 2 and "pandas" in modules, err


def test_a_linear_reward_on_hashed_features_never_imports_torch(tmp_path):
    """fit-reward with the hashing encoder, score and diagnose of a linear reward: numpy and
    scipy only (torch, transformers and accelerate would cost seconds at every command)."""
    rng = __import__("numpy").random.default_rng(0)
    words = ["you", "will", "never", "guess", "why", "this", "dog", "cat", "story", "amazing"]
    rows = ["headline,clicks,impressions,week"]
    for i in range(120):
        text = " ".join(rng.choice(words, 5))
        rows.append(f"{text},{int(rng.integers(0, 30))},{int(rng.integers(100, 300))},{i % 6}")
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    roles = ["--text", "headline", "--outcome", "clicks", "--trials", "impressions", "--encoder", "hashing"]
    runs = {"fit": ["fit-reward", str(tmp_path / "log.csv"), *roles, "--confounder", "week:categorical",
                    "--cv", "3", "--out", str(tmp_path / "r")],
            "score": ["score", str(tmp_path / "r"), str(tmp_path / "log.csv"), "--text", "headline", "--se",
                      "--out", str(tmp_path / "s.csv")],
            "diagnose": ["diagnose", str(tmp_path / "log.csv"), *roles, "--confounder", "week:categorical",
                         "--cv", "3", "--out", str(tmp_path / "d.json")]}
    for name, args in runs.items():
        code, modules, err = imported_by(*args)
        assert code == 0, (name, err)
        assert not modules & {"torch", "transformers", "accelerate"}, (name, sorted(modules & {"torch", "transformers"}))
    assert (tmp_path / "r" / "model.safetensors").is_file() and (tmp_path / "s.csv").is_file()
