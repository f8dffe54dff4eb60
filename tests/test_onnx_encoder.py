"""ONNX encoders (`minilm-onnx`, `onnx:PATH`): exported locally on first use, cached under the
cache directory with their own identity, close to the PyTorch embeddings, usable for a reward."""

import json
import os
import shutil
import subprocess
import sys

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


@pytest.fixture(scope="module")
def st_torch_folder(tmp_path_factory, st_folder):
    """The same folder with a BERT the direct graph does not write (hidden_act gelu_new): the
    ONNX encoder exports it with torch's exporter."""
    folder = tmp_path_factory.mktemp("st") / "tiny-st-gelu-new"
    shutil.copytree(st_folder, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "hidden_act": "gelu_new"}))
    return folder


@pytest.mark.parametrize("which", ["direct", "torch"])
def test_onnx_embeddings_are_close_to_pytorch_and_cached(which, st_folder, st_torch_folder, tmp_path, monkeypatch):
    from deconfoundlm.features.text import get_encoder

    folder = st_folder if which == "direct" else st_torch_folder
    monkeypatch.setenv("DECONFOUNDLM_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(TINY_WORDS, size=int(rng.integers(1, 12)))) for _ in range(50)]
    onnx, ref = get_encoder(f"onnx:{folder}", cache=False), get_encoder(str(folder), cache=False)
    assert onnx.direct == (which == "direct")
    a, b = onnx.encode(texts), ref.encode(texts)
    assert a.shape == b.shape
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.95, cos.min()
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)  # the folder normalizes
    files = list((tmp_path / "cache" / "onnx").rglob("*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    np.testing.assert_array_equal(get_encoder(f"onnx:{folder}", cache=False).encode(texts), a)  # deterministic
    assert files[0].stat().st_mtime_ns == stamp  # exported once
    assert onnx.identity().kind == "onnx-int8" and onnx.identity().content_hash != ref.identity().content_hash
    assert oct(files[0].parent.stat().st_mode & 0o777) != oct(0o700)  # a normal folder, not a private temp dir


def test_the_bert_graph_computes_what_transformers_computes(tiny_bert):
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer

    from deconfoundlm.features import onnx_bert

    assert onnx_bert.supports(tiny_bert)
    session = ort.InferenceSession(onnx_bert.build(tiny_bert).SerializeToString(), providers=["CPUExecutionProvider"])
    tok, model = AutoTokenizer.from_pretrained(tiny_bert), AutoModel.from_pretrained(tiny_bert).eval()
    texts = ["alpha", "beta gamma, delta! alpha beta gamma delta", "gamma delta alpha"]
    enc = tok(texts, padding=True, return_tensors="np")
    got = session.run(None, {n: enc[n].astype(np.int64) for n in onnx_bert.INPUTS})[0]
    with torch.no_grad():
        want = model(**tok(texts, padding=True, return_tensors="pt")).last_hidden_state.numpy()
    real = enc["attention_mask"].astype(bool)  # padded positions are pooled away
    assert got.shape == want.shape and real.sum() > real.shape[0] * 2
    np.testing.assert_allclose(got[real], want[real], atol=2e-5, rtol=1e-4)



def test_the_int8_graph_is_what_the_quantizer_makes_of_the_float_one(tiny_bert, tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from deconfoundlm.features import onnx_bert

    quantize_dynamic(onnx_bert.build(tiny_bert), str(tmp_path / "q.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True)
    theirs, mine = onnx.load(str(tmp_path / "q.onnx")), onnx_bert.build(tiny_bert, int8=True)
    arrays = [{i.name: numpy_helper.to_array(i) for i in m.graph.initializer} for m in (theirs, mine)]
    quantized = {n for n, a in arrays[0].items() if a.dtype in (np.int8, np.uint8)}
    assert len(quantized) > 10 and quantized <= arrays[1].keys()  # every int8 weight, one uint8 table
    for name, b in arrays[1].items():  # the same weights, scales and zero points
        a = arrays[0][name]
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name
    ops = [n.op_type for n in mine.graph.node]
    assert ops.count("MultiHeadAttention") == 2 and ops.count("MatMulInteger") == 12 and "MatMul" not in ops
    ids = np.array([[2, 5, 9, 11, 7, 3], [2, 6, 3, 0, 0, 0]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"],  # as OnnxEncoder runs it
                                 disabled_optimizers=["SkipLayerNormFusion"]).run(None, feed)[0]
            for m in (theirs, mine)]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)

def test_the_direct_export_imports_no_torch_and_tokenizes_as_transformers(st_folder, tmp_path):
    from transformers import AutoTokenizer

    from deconfoundlm.features.onnx_encoder import _batch_tokenizer

    code = ("import sys; from deconfoundlm.features.text import get_encoder; "
            f"e = get_encoder('onnx:{st_folder}', cache=False); v = e.encode(['alpha beta']); "
            "print(e.direct, v.shape, 'torch' in sys.modules, 'transformers' in sys.modules)")
    env = {**os.environ, "DECONFOUNDLM_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "True (1, 32) False False", out.stdout + out.stderr
    (folder,) = (tmp_path / "cache" / "onnx").glob("*/tokenizer")
    texts = ["Alpha BETA, gamma!", "Café délta 中文 alpha", "?!.,", "", " ".join(["alpha"] * 80)]
    mine = _batch_tokenizer(folder, 32)(texts)
    ref = AutoTokenizer.from_pretrained(st_folder)(texts, padding=True, truncation=True, max_length=32,
                                                    return_tensors="np")
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(mine[name], ref[name])


def test_a_tokenizer_transformers_would_rebuild_is_not_copied(st_folder, tmp_path):
    from deconfoundlm.features.onnx_encoder import _tokenizer_as_is

    folder = tmp_path / "st"
    shutil.copytree(st_folder, folder)
    assert _tokenizer_as_is(folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "do_lower_case": False}))
    assert not _tokenizer_as_is(folder)  # the normalizer lowercases: transformers would rebuild it


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


def _garbage_weights(folder):
    (folder / "model.safetensors").write_bytes(b"not a safetensors file" * 4)


def _more_layers_than_weights(folder):
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": cfg["num_hidden_layers"] + 5}))


def _negative_heads(folder):
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": -2}))


@pytest.mark.parametrize("edit", [_garbage_weights, _more_layers_than_weights, _negative_heads])
def test_an_edited_model_folder_is_bad_input_not_a_crash(edit, st_folder, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "edited"
    shutil.copytree(st_folder, folder)
    edit(folder)
    monkeypatch.setenv("DECONFOUNDLM_CACHE", str(tmp_path / "cache"))
    planted_log(100).to_csv(tmp_path / "log.csv", index=False)
    code = main(["fit-reward", str(tmp_path / "log.csv"), "--text", "text", "--outcome", "y", "--method", "naive",
                 "--encoder", f"onnx:{folder}", "--cv", "3", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "could not be exported to or run by ONNX Runtime" in err[0], err
    assert str(folder) in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "r").exists()
    assert not list((tmp_path / "cache").glob("onnx/*/model.int8.onnx"))  # no half-made export kept
