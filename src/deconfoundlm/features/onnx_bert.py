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

``build(folder, int8=True)`` writes the graph ONNX Runtime's ``quantize_dynamic(..., per_channel=True,
weight_type=QInt8)`` makes of the float one, node for node and weight for weight (a test checks the
two give the same outputs): int8 weights per output column (symmetric, scale max|w| / 127) behind
``DynamicQuantizeLinear`` + ``MatMulInteger`` for every linear layer, the two embedding tables
``Gather``-ed as uint8 with one scale. The quantizer reaches it through a Python loop over the
weights' columns (1.6 s for MiniLM's 20,736 on 2 CPUs); here it is one array operation per matrix,
the quantizer's formulas written out (importing its module also imports torch in some versions,
and its helpers changed signatures between versions). The int8 graph, run only by ONNX
Runtime, computes attention with its ``MultiHeadAttention`` kernel instead of the eleven standard
ops per layer (MiniLM's embeddings of 4,873 headlines came out equal to the bit, about 10% faster).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ACTIVATIONS = ("gelu", "relu")  # hidden_act values written here (gelu: the exact, erf form)
OPSET = 17  # LayerNormalization is an ONNX op from 17 on
IR_VERSION = 8
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
    positions, an activation in :data:`ACTIVATIONS`, weights in ``model.safetensors``, and the
    sizes the graph reads as positive integers (a config this declines goes to torch's exporter,
    which reports what is wrong with it)."""
    cfg = _config(folder)
    if cfg is None or (folder / "model.safetensors").is_file() is False:
        return False
    sizes = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size",
             "max_position_embeddings")
    if not all(type(cfg.get(k)) is int and cfg[k] > 0 for k in sizes):
        return False
    eps = cfg.get("layer_norm_eps", 1e-12)
    return (cfg.get("model_type") == "bert" and cfg.get("position_embedding_type", "absolute") == "absolute"
            and cfg.get("hidden_act", "gelu") in ACTIVATIONS and not cfg.get("is_decoder", False)
            and type(cfg.get("type_vocab_size", 2)) is int and cfg.get("type_vocab_size", 2) > 0
            and isinstance(eps, (int, float)) and not isinstance(eps, bool) and 0 < eps < 1
            and cfg["hidden_size"] % cfg["num_attention_heads"] == 0)


class _Graph:
    """Nodes and initializers of one graph under construction, with generated value names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self._n = 0
        self._quantized: dict[str, tuple[str, str, str]] = {}  # value -> DynamicQuantizeLinear's outputs

    def const(self, name: str, value: np.ndarray):
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value).reshape(np.shape(value)), name))
        return name

    def op(self, kind: str, *inputs: str, **attrs) -> str:
        from onnx import helper

        self._n += 1
        out = f"{kind.lower()}_{self._n}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], name=f"{kind}_{self._n}", **attrs))
        return out

    def dynamic_quantize(self, x: str) -> tuple[str, str, str]:
        """``x`` as uint8 with its scale and zero point, computed once per value (the linear layers
        that read one input share it, as in the quantizer's graph)."""
        from onnx import helper

        if x not in self._quantized:
            outs = (f"{x}_quantized", f"{x}_scale", f"{x}_zero_point")
            self.nodes.append(helper.make_node("DynamicQuantizeLinear", [x], list(outs), name=f"{x}_quantize"))
            self._quantized[x] = outs
        return self._quantized[x]


def _int8_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 scale per column) of a (in, out) float32 matrix: what ONNX Runtime's
    dynamic quantizer computes column by column for QInt8 per channel (symmetric range +-127, the
    scale rounded to float32 from float64, 1 where the column is all zero; zero point 0; values
    rounded half to even and clipped to -128..127)."""
    absmax = np.maximum(np.abs(np.minimum(weight.min(axis=0), 0)), np.maximum(weight.max(axis=0), 0))
    scale64 = (2 * absmax.astype(np.float64)) / 254.0
    scale = np.where(scale64 < np.finfo(np.float32).tiny, 1.0, scale64).astype(np.float32)
    q = np.round(weight.astype(np.float32) / scale[None, :])
    return np.clip(q, -128, 127).astype(np.int8), scale


def _uint8_tensor(table: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """(uint8 table, scale, zero point) of a float32 matrix with one scale: what the quantizer
    computes for a ``Gather``-ed table (asymmetric 0..255 over [min(x, 0), max(x, 0)], the zero
    point rounded with the float64 scale, the scale then stored as float32)."""
    rmin, rmax = min(float(table.min()), 0.0), max(float(table.max()), 0.0)
    scale64 = (np.float64(np.float32(rmax)) - np.float64(np.float32(rmin))) / 255.0
    if scale64 < np.finfo(np.float32).tiny:
        return np.zeros(table.shape, dtype=np.uint8), np.float32(1.0), np.uint8(0)
    zero = np.uint8(np.round(0 - np.float32(rmin) / scale64))
    scale = np.float32(scale64)
    q = np.round(table.astype(np.float32) / scale) + zero
    return np.clip(q, 0, 255).astype(np.uint8), scale, zero


def build(folder: Path, int8: bool = False):
    """The ONNX ModelProto of the BERT in ``folder`` (inputs :data:`INPUTS`, output
    ``last_hidden_state``): float32, or with ``int8`` the dynamically quantized graph (module
    docstring). Call only where :func:`supports` is true; a weight missing or of the wrong shape
    raises ``ValueError``."""
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
        weight, bias = w(f"{name}.weight", (n_out, n_in)).T, f32(f"{name}.bias", w(f"{name}.bias", (n_out,)))
        if not int8:
            return g.op("Add", g.op("MatMul", x, f32(f"{name}.weight", weight)), bias)
        xq, x_scale, x_zero = g.dynamic_quantize(x)
        wq, w_scale = _int8_columns(weight)
        scales = g.op("Mul", x_scale, g.const(f"{name}.weight_scale", w_scale))
        product = g.op("MatMulInteger", xq, g.const(f"{name}.weight_quantized", wq), x_zero,
                       g.const(f"{name}.weight_zero_point", np.zeros(n_out, dtype=np.int8)))
        return g.op("Add", g.op("Mul", g.op("Cast", product, to=TensorProto.FLOAT), scales), bias)

    def lookup(name: str, table: np.ndarray, ids: str) -> str:  # table[ids], uint8 with one scale under int8
        if not int8:
            return g.op("Gather", f32(name, table), ids)
        q, scale, zero = _uint8_tensor(table)
        return g.op("DequantizeLinear", g.op("Gather", g.const(f"{name}_quantized", q), ids),
                    g.const(f"{name}_scale", np.asarray(scale, dtype=np.float32)),
                    g.const(f"{name}_zero_point", np.asarray(zero, dtype=np.uint8)))

    vocab = int(cfg["vocab_size"])
    # Embeddings: word + absolute position (0 .. L-1) + token type, then LayerNorm.
    words = lookup("word_embeddings", w("embeddings.word_embeddings.weight", (vocab, hidden)), "input_ids")
    length = g.op("Shape", "input_ids", start=1, end=2)  # [tokens]
    pos_table = f32("position_embeddings",
                    w("embeddings.position_embeddings.weight", (int(cfg["max_position_embeddings"]), hidden)))
    positions = g.op("Slice", pos_table, i64("zero", [0]), length, i64("axis_0", [0]))  # rows 0 .. tokens-1
    types = int(cfg.get("type_vocab_size", 2))
    x = g.op("Add", g.op("Add", words, positions),
             lookup("token_type_embeddings", w("embeddings.token_type_embeddings.weight", (types, hidden)),
                    "token_type_ids"))
    x = layer_norm(x, "embeddings.LayerNorm")
    if int8:  # ONNX Runtime's attention kernel, the padding mask as int32 (0: ignore that key)
        mask = g.op("Cast", "attention_mask", to=TensorProto.INT32)

        def attention(q: str, k: str, v: str) -> str:
            return g.op("MultiHeadAttention", q, k, v, "", mask, domain="com.microsoft", num_heads=heads)
    else:  # standard ONNX ops; the padding mask as an additive bias on the scores, (batch, 1, 1, tokens)
        keep = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
        bias = g.op("Mul", g.op("Sub", f32("f_one", 1.0), keep), f32("f_min", np.finfo(np.float32).min))
        bias = g.op("Unsqueeze", bias, i64("axes_1_2", [1, 2]))
        split = i64("heads_shape", [0, 0, heads, head_dim])
        merged = i64("hidden_shape", [0, 0, hidden])
        scale = f32("scale", 1.0 / np.sqrt(head_dim))

        def attention(q: str, k: str, v: str) -> str:
            q, k, v = (g.op("Reshape", t, split) for t in (q, k, v))
            scores = g.op("MatMul", g.op("Transpose", q, perm=[0, 2, 1, 3]), g.op("Transpose", k, perm=[0, 2, 3, 1]))
            probs = g.op("Softmax", g.op("Add", g.op("Mul", scores, scale), bias), axis=-1)
            context = g.op("MatMul", probs, g.op("Transpose", v, perm=[0, 2, 1, 3]))
            return g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merged)
    sqrt2, half, one = f32("sqrt2", np.sqrt(2.0)), f32("half", 0.5), f32("gelu_one", 1.0)
    for i in range(int(cfg["num_hidden_layers"])):
        p = f"encoder.layer.{i}"
        context = attention(*(linear(x, f"{p}.attention.self.{n}", hidden, hidden) for n in ("query", "key", "value")))
        x = layer_norm(g.op("Add", linear(context, f"{p}.attention.output.dense", hidden, hidden), x),
                       f"{p}.attention.output.LayerNorm")
        inner = linear(x, f"{p}.intermediate.dense", hidden, int(cfg["intermediate_size"]))
        if cfg.get("hidden_act", "gelu") == "gelu":  # x (1 + erf(x / sqrt 2)) 0.5: ONNX Runtime fuses it to Gelu
            erf = g.op("Erf", g.op("Div", inner, sqrt2))
            inner = g.op("Mul", g.op("Mul", inner, g.op("Add", erf, one)), half)
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
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("com.microsoft", 1)] if int8 else [])
    # IR version 8 (ONNX 1.13, the one of opset 17), not the installed onnx's newest: an older ONNX
    # Runtime refuses a file of an IR version it does not know.
    return helper.make_model(graph, opset_imports=opsets, producer_name="deconfoundlm", ir_version=IR_VERSION)
