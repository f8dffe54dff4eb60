"""ONNX encoders (`minilm-onnx`, `onnx:PATH`): exported locally on first use, cached under the
cache directory with their own identity, close to the PyTorch embeddings, usable for a reward."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_WORDS, planted_log

from deconfoundlm.cli import main

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory, tiny_bert):
    """A tiny sentence-transformers folder (mean pooling, normalized) around the tiny BERT."""
    from sentence_transformers import SentenceTransformer, models

    folder = tmp_path_factory.mktemp("st") / "tiny-st"
    word = models.Transformer(str(tiny_bert), max_seq_length=32)
    SentenceTransformer(modules=[word, models.Pooling(word.get_word_embedding_dimension(), "mean"),
                                 models.Normalize()]).save(str(folder))
    return folder


def test_onnx_embeddings_are_close_to_pytorch_and_cached(st_folder, tmp_path, monkeypatch):
    from deconfoundlm.features.text import get_encoder

    monkeypatch.setenv("DECONFOUNDLM_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(TINY_WORDS, size=int(rng.integers(1, 12)))) for _ in range(50)]
    onnx, ref = get_encoder(f"onnx:{st_folder}", cache=False), get_encoder(str(st_folder), cache=False)
    a, b = onnx.encode(texts), ref.encode(texts)
    assert a.shape == b.shape
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.95, cos.min()
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)  # the folder normalizes
    files = list((tmp_path / "cache" / "onnx").rglob("*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    np.testing.assert_array_equal(get_encoder(f"onnx:{st_folder}", cache=False).encode(texts), a)  # deterministic
    assert files[0].stat().st_mtime_ns == stamp  # exported once
    assert onnx.identity().kind == "onnx-int8" and onnx.identity().content_hash != ref.identity().content_hash
    assert oct(files[0].parent.stat().st_mode & 0o777) != oct(0o700)  # a normal folder, not a private temp dir


def test_a_reward_on_an_onnx_encoder_scores_the_same_after_loading(st_folder, tmp_path, capsys):
    planted_log(300).to_csv(tmp_path / "log.csv", index=False)
    enc = f"onnx:{st_folder}"
    assert main(["fit-reward", str(tmp_path / "log.csv"), "--text", "text", "--outcome", "y", "--confounder",
                 "c:numeric", "--encoder", enc, "--cv", "3", "--out", str(tmp_path / "r")]) == 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["encoder"] == enc and cfg["backbone"]["kind"] == "onnx-int8"
    assert main(["score", str(tmp_path / "r"), str(tmp_path / "log.csv"), "--text", "text", "--out",
                 str(tmp_path / "s.csv")]) == 0
    s = pd.read_csv(tmp_path / "s.csv")["reward"]
    assert np.isfinite(s).all() and s.std() > 0


def test_onnx_encoders_are_frozen(tmp_path, capsys):
    planted_log(200).to_csv(tmp_path / "log.csv", index=False)
    code = main(["fit-reward", str(tmp_path / "log.csv"), "--text", "text", "--outcome", "y", "--confounder",
                 "c:numeric", "--encoder", "minilm-onnx", "--finetune", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "frozen" in err and not os.path.exists(tmp_path / "r")
    assert main(["fit-reward", str(tmp_path / "log.csv"), "--text", "text", "--outcome", "y", "--encoder", "onnx:",
                 "--out", str(tmp_path / "r")]) == 2
