import os

import numpy as np
import pandas as pd
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DECONFOUNDLM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def upworthy_sample() -> pd.DataFrame:
    from deconfoundlm.logs.upworthy import load_packages

    return load_packages().sample(400, random_state=0).reset_index(drop=True)


@pytest.fixture
def frame(upworthy_sample):
    """The role columns of the Upworthy sample (headline, clicks, impressions, test_week)."""
    return upworthy_sample[["headline", "clicks", "impressions", "test_week"]].copy()


@pytest.fixture
def data(tmp_path, frame):
    """``frame`` as a CSV file."""
    path = tmp_path / "log.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def log_csv(tmp_path, upworthy_sample):
    path = tmp_path / "log.csv"
    upworthy_sample.to_csv(path, index=False)
    return path


def simulate(family: str, n: int = 4000, seed: int = 0):
    """Known text features X, a confounder c that shifts both X and the outcome (see
    :mod:`deconfoundlm.evaluation.benchmark.linear_log`)."""
    from deconfoundlm.evaluation.benchmark.linear_log import simulate_linear_log

    return simulate_linear_log(family, n, seed)


TINY_WORDS = ("the a you why how this is what happened next cats dogs facts news world kindness "
              "believe won't alpha beta gamma delta one two three ten").split()


def make_tiny_bert(folder, seed: int = 0):
    """A tiny randomly initialised BERT (2 layers, 32 wide) with a word-level vocabulary, saved
    as a standard Hugging Face folder: fast tests of transformer code, nothing downloaded."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "'", "!", "?", ".", ","] + letters \
        + [f"##{x}" for x in letters] + sorted(set(TINY_WORDS))
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("backbones") / "tiny-bert")


def planted_log(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """Six-word texts: 'alpha' (first word) raises y by 0.8; 'beta' (fourth word) has no effect
    but is more common when the confounder c is high; c raises y by 1.5 per SD."""
    rng = np.random.default_rng(seed)
    fill = TINY_WORDS[:16]
    c = rng.normal(size=n)
    has_alpha = rng.random(n) < 0.5
    has_beta = rng.random(n) < 1 / (1 + np.exp(-2.0 * c))
    texts = []
    for i in range(n):
        w = list(rng.choice(fill, size=6))
        if has_alpha[i]:
            w[0] = "alpha"
        if has_beta[i]:
            w[3] = "beta"
        texts.append(" ".join(w))
    y = 0.8 * has_alpha + 1.5 * c + rng.normal(scale=0.5, size=n)
    return pd.DataFrame({"text": texts, "y": y, "c": c})


def word_effect(reward, word: str, n: int = 200, seed: int = 1) -> float:
    """Mean change of the reward when ``word`` takes its position in random six-word texts."""
    rng = np.random.default_rng(seed)
    base = [list(rng.choice(TINY_WORDS[:16], size=6)) for _ in range(n)]
    pos = 0 if word == "alpha" else 3
    with_w = [" ".join(b[:pos] + [word] + b[pos + 1:]) for b in base]
    return float(np.mean(reward.score(with_w) - reward.score([" ".join(b) for b in base])))


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """One quick demo run (hashing encoder) shared by the demo and report tests."""
    from deconfoundlm.cli import main

    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--quick", "--encoder", "hashing", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def hashing_reward(tmp_path_factory, upworthy_sample):
    """A deconfound reward folder (hashing encoder, binomial, week trend) fitted once per session
    through the CLI; tests that edit it copy it first."""
    from deconfoundlm.cli import main

    d = tmp_path_factory.mktemp("hashing-reward")
    upworthy_sample.to_csv(d / "log.csv", index=False)
    assert main(["fit-reward", str(d / "log.csv"), "--text", "headline", "--outcome", "clicks", "--trials",
                 "impressions", "--confounder", "test_week:time", "--encoder", "hashing", "--cv", "3",
                 "--out", str(d / "r")]) == 0
    return d / "r"


def run_cli(args, capsys):
    """(exit code, stderr, stdout) of the command run in this process."""
    from deconfoundlm.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err, captured.out


def one_error_line(code, err, *needles):
    """Exit 2 and exactly one line on stderr, naming each of ``needles``."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("deconfoundlm: error:"), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def write_log_and_tests(d, seed: int, n_log: int, n_ab: int):
    """Upworthy as a user's files in ``d``: log.csv (one package per test of ``n_log`` tests, the
    week) and ab.csv (every reliably randomized package of ``n_ab`` other tests, the test id)."""
    from deconfoundlm.logs.upworthy import load_packages, reliable

    pk = load_packages()
    tests = np.random.default_rng(seed).permutation(np.sort(pk["test_id"].unique()))
    log = pk[pk["test_id"].isin(tests[:n_log])].groupby("test_id").sample(n=1, random_state=0)
    log[["headline", "clicks", "impressions", "test_week"]].to_csv(d / "log.csv", index=False)
    ab = pk[pk["test_id"].isin(tests[n_log:n_log + n_ab]) & reliable(pk)]
    ab[["headline", "clicks", "impressions", "test_id"]].to_csv(d / "ab.csv", index=False)
    return d
