"""A BERT encoder's ONNX graph written straight from its safetensors weights (no torch).

The ONNX encoders (:mod:`deconfoundlm.features.onnx_encoder`) export a model once per cache.
Through torch's exporter that costs about 8 s on 2 CPUs for MiniLM (importing torch and
transformers, loading the model, tracing), more than encoding a 5,000-row log with the int8 model
takes. For the architecture of most sentence encoders, BERT with absolute positions (MiniLM,
BGE, E5, GTE, ...), the graph is short and fixed, so it is written here from the weights with
``onnx.helper`` in well under a second. Anything else (another ``model_type``, relative positions,
an activation not listed, weights only in a pickle) is declined by :func:`supports` and goes
through torch's exporter.

The graph computes what transformers' ``BertModel`` returns as ``last_hidden_state`` in eval mode
(a test checks it against transformers to float precision): embeddings (word + absolute position
+ token type, LayerNorm), then per layer multi-head self-attention with the padding mask, a
residual LayerNorm, the feed-forward block and a second residual LayerNorm.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ACTIVATIONS = ("gelu", "relu")  # hidden_act values written here (gelu: the exact, erf form)
OPSET = 17  # LayerNormalization is an ONNX op from 17 on
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _config(folder: Path) -> dict | None:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def _prefix(keys) -> str | None:
    for prefix in ("", "bert."):
        if f"{prefix}embeddings.word_embeddings.weight" in keys:
            return prefix
    return None


def supports(folder: Path) -> bool:
    """Whether ``folder`` holds a BERT encoder this module writes: ``model_type`` bert, absolute
    positions, an activation in :data:`ACTIVATIONS`, weights in ``model.safetensors``."""
    cfg = _config(folder)
    if cfg is None or (folder / "model.safetensors").is_file() is False:
        return False
    try:
        return (cfg.get("model_type") == "bert" and cfg.get("position_embedding_type", "absolute") == "absolute"
                and cfg.get("hidden_act", "gelu") in ACTIVATIONS and not cfg.get("is_decoder", False)
                and int(cfg["hidden_size"]) % int(cfg["num_attention_heads"]) == 0
                and int(cfg["num_hidden_layers"]) > 0)
    except (KeyError, TypeError, ValueError):
        return False


class _Graph:
    """Nodes and initializers of one graph under construction, with generated value names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, name: str, value: np.ndarray):
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, kind: str, *inputs: str, **attrs) -> str:
        from onnx import helper

        self._n += 1
        out = f"{kind.lower()}_{self._n}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], name=f"{kind}_{self._n}", **attrs))
        return out


def build(folder: Path):
    """The float32 ONNX ModelProto of the BERT in ``folder`` (inputs :data:`INPUTS`, output
    ``last_hidden_state``). Call only where :func:`supports` is true; a weight missing or of the
    wrong shape raises ``ValueError``."""
    from onnx import TensorProto, helper
    from safetensors.numpy import load_file

    cfg = _config(folder)
    weights = load_file(str(folder / "model.safetensors"))
    prefix = _prefix(weights)
    if cfg is None or prefix is None:
        raise ValueError(f"{folder}: not a BERT folder")
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    head_dim, eps = hidden // heads, float(cfg.get("layer_norm_eps", 1e-12))

    def w(name: str, shape: tuple[int, ...]) -> np.ndarray:
        key = prefix + name
        if key not in weights or tuple(weights[key].shape) != shape:
            raise ValueError(f"{folder}: weight {key} missing or not of shape {shape}")
        return weights[key].astype(np.float32)

    g = _Graph()
    i64 = lambda name, v: g.const(name, np.asarray(v, dtype=np.int64))  # noqa: E731
    f32 = lambda name, v: g.const(name, np.asarray(v, dtype=np.float32))  # noqa: E731

    def layer_norm(x: str, name: str) -> str:
        return g.op("LayerNormalization", x, f32(f"{name}.weight", w(f"{name}.weight", (hidden,))),
                    f32(f"{name}.bias", w(f"{name}.bias", (hidden,))), axis=-1, epsilon=eps)

    def linear(x: str, name: str, n_in: int, n_out: int) -> str:  # x @ W.T + b, as torch's Linear
        weight = f32(f"{name}.weight", w(f"{name}.weight", (n_out, n_in)).T)
        return g.op("Add", g.op("MatMul", x, weight), f32(f"{name}.bias", w(f"{name}.bias", (n_out,))))

    vocab = int(cfg["vocab_size"])
    # Embeddings: word + absolute position (0 .. L-1) + token type, then LayerNorm.
    words = g.op("Gather", f32("word_embeddings", w("embeddings.word_embeddings.weight", (vocab, hidden))),
                 "input_ids")
    length = g.op("Shape", "input_ids", start=1, end=2)  # [tokens]
    pos_table = f32("position_embeddings",
                    w("embeddings.position_embeddings.weight", (int(cfg["max_position_embeddings"]), hidden)))
    positions = g.op("Slice", pos_table, i64("zero", [0]), length, i64("axis_0", [0]))  # rows 0 .. tokens-1
    types = int(cfg.get("type_vocab_size", 2))
    x = g.op("Add", g.op("Add", words, positions),
             g.op("Gather", f32("token_type_embeddings", w("embeddings.token_type_embeddings.weight", (types, hidden))),
                  "token_type_ids"))
    x = layer_norm(x, "embeddings.LayerNorm")
    # The padding mask as an additive bias on the attention scores, (batch, 1, 1, tokens).
    keep = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    bias = g.op("Mul", g.op("Sub", f32("f_one", 1.0), keep), f32("f_min", np.finfo(np.float32).min))
    bias = g.op("Unsqueeze", bias, i64("axes_1_2", [1, 2]))
    split = i64("heads_shape", [0, 0, heads, head_dim])
    merged = i64("hidden_shape", [0, 0, hidden])
    scale = f32("scale", 1.0 / np.sqrt(head_dim))
    sqrt2, half = f32("sqrt2", np.sqrt(2.0)), f32("half", 0.5)
    for i in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{i}"
        q, k, v = (g.op("Reshape", linear(x, f"{p}.attention.self.{n}", hidden, hidden), split)
                   for n in ("query", "key", "value"))
        scores = g.op("MatMul", g.op("Transpose", q, perm=[0, 2, 1, 3]), g.op("Transpose", k, perm=[0, 2, 3, 1]))
        probs = g.op("Softmax", g.op("Add", g.op("Mul", scores, scale), bias), axis=-1)
        context = g.op("MatMul", probs, g.op("Transpose", v, perm=[0, 2, 1, 3]))
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merged)
        x = layer_norm(g.op("Add", linear(context, f"{p}.attention.output.dense", hidden, hidden), x),
                       f"{p}.attention.output.LayerNorm")
        inner = linear(x, f"{p}.intermediate.dense", hidden, int(cfg["intermediate_size"]))
        if cfg.get("hidden_act", "gelu") == "gelu":  # x (1 + erf(x / sqrt 2)) 0.5: ONNX Runtime fuses it to Gelu
            erf = g.op("Erf", g.op("Div", inner, sqrt2))
            inner = g.op("Mul", g.op("Mul", inner, g.op("Add", erf, "f_one")), half)
        else:
            inner = g.op("Relu", inner)
        x = layer_norm(g.op("Add", linear(inner, f"{p}.output.dense", int(cfg["intermediate_size"]), hidden), x),
                       f"{p}.output.LayerNorm")
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    graph = helper.make_graph(
        g.nodes, "bert",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"]) for n in INPUTS],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", hidden])],
        initializer=g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="deconfoundlm")
