"""ONNX Runtime encoders: ``minilm-onnx`` and ``onnx:PATH`` (a local sentence-transformers folder).

On first use the model's transformer is exported to ONNX, its weights quantized to int8 per
channel by ONNX Runtime (dynamic quantization: activations stay float), and the file cached under
the cache directory in a folder named by the source model's content hash, the export recipe and
the library versions that shaped it; nothing is downloaded. A BERT with absolute positions and
safetensors weights (MiniLM and most sentence encoders) is written as the same int8 graph straight
from its weights (:mod:`deconfoundlm.features.onnx_bert`, about 1.2 s for MiniLM on 2 CPUs, most of
it importing onnx); any other model goes through torch's exporter and the quantizer (about 10 s). The two recipes have their own
identities. Encoding then runs in ONNX Runtime with the folder's own pooling (mean or CLS) and
normalization, batches sorted by length. The identity (and so the embedding cache and a reward's
record) differs from the PyTorch encoder of the same model: int8 embeddings are close to, not
equal to, the float ones.

(sentence-transformers' ``backend="onnx"`` needs optimum, which pins transformers below the
version this package uses; torch's exporter and ONNX Runtime's quantizer are the maintained parts
it wraps.)
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from deconfoundlm.errors import UserError
from deconfoundlm.features import onnx_bert
from deconfoundlm.features.backbones import (
    Backbone,
    BackboneIdentity,
    sentence_transformers_settings,
)
from deconfoundlm.features.model_cache import cached_folder
from deconfoundlm.options import label
from deconfoundlm.outputs import UnreadableJSON, read_json

RECIPE = "onnx-opset17-int8-per-channel-v1"  # torch's exporter, then the int8 quantizer
DIRECT_RECIPE = "bert-graph-opset17-int8-per-channel-v1"  # onnx_bert's int8 graph: what the quantizer makes
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
ONNX_INSTALL = "pip install onnxruntime onnx"
ONNX_PREFIX = "onnx:"


def _require_onnx() -> None:
    """onnxruntime and onnx importable, or a clear error."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError(f"ONNX encoders need onnxruntime and onnx: {ONNX_INSTALL}") from None


def _tokenizer_as_is(folder: Path) -> bool:
    """Whether the folder's ``tokenizer.json`` tokenizes as transformers' tokenizer of the folder
    does, so the file can be copied instead of loaded and saved through transformers: a BERT
    tokenizer whose normalizer agrees with the settings of ``tokenizer_config.json`` (transformers
    rebuilds the normalizer where they differ)."""
    try:
        cfg = read_json(folder / "tokenizer_config.json")
        tok = read_json(folder / "tokenizer.json")
    except (OSError, UnreadableJSON):
        return False
    if not (isinstance(cfg, dict) and isinstance(tok, dict)) or cfg.get("tokenizer_class") not in (
            None, "BertTokenizer", "BertTokenizerFast"):
        return False
    norm = tok.get("normalizer")
    return (isinstance(norm, dict) and norm.get("type") == "BertNormalizer"
            and norm.get("lowercase") == cfg.get("do_lower_case", True)
            and norm.get("strip_accents") == cfg.get("strip_accents")
            and norm.get("handle_chinese_chars") == cfg.get("tokenize_chinese_chars", True))


def _normalizes(path: Path) -> bool:
    try:
        modules = read_json(path / "modules.json")
    except (OSError, UnreadableJSON):
        return False
    return any(str(m.get("type", "")).endswith("Normalize") for m in modules if isinstance(m, dict))


class OnnxEncoder:
    """A sentence-transformers folder run by ONNX Runtime with int8 weights (see the module)."""

    def __init__(self, backbone: Backbone, name: str, cache_root: Path, progress: dict[str, bool],
                 batch_size: int = 64) -> None:
        if backbone.kind != "sentence-transformers":
            raise UserError(f"{label('encoder')} {name!r}: ONNX encoding takes a sentence-transformers folder "
                            "(modules.json), e.g. minilm-onnx or onnx:PATH")
        self.backbone = backbone
        self.name = name
        self.cache_root = Path(cache_root)  # exported models live in cache_root / "onnx"
        self.progress = progress  # {"bars": bool}: progress bars on long encodes
        self.batch_size = batch_size
        self.pooling, self.max_length = sentence_transformers_settings(backbone.path)
        if self.pooling not in ("mean", "cls"):
            raise UserError(f"{label('encoder')} {name!r}: pooling {self.pooling!r} is not supported with ONNX (mean or cls)")
        path = Path(backbone.path)
        self.normalize = _normalizes(path)
        self.direct = onnx_bert.supports(path) and _tokenizer_as_is(path)  # no torch export needed
        self._identity: BackboneIdentity | None = None
        self._session = None
        self._tok = None

    def identity(self) -> BackboneIdentity:
        if self._identity is None:
            recipe = DIRECT_RECIPE if self.direct else RECIPE
            h = hashlib.sha256(f"{self.backbone.content_hash()}:{recipe}:{self.normalize}".encode()).hexdigest()
            self._identity = BackboneIdentity(self.name, "onnx-int8", h, self.pooling, self.max_length)
        return self._identity

    def model_file(self) -> Path:
        """The cached int8 ONNX file, exported on first use (the exporter is imported only then)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(f"ONNX encoders need onnxruntime and onnx: {ONNX_INSTALL}") from None
        from importlib.metadata import version

        # The exporter's version from its metadata (torch's is the same string as torch.__version__):
        # a cached export is used without importing it.
        exporter = version("onnx") if self.direct else version("torch")
        key = hashlib.sha256(f"{self.identity().content_hash}:{exporter}:{ort.__version__}".encode())
        return cached_folder(self.cache_root / "onnx", key.hexdigest()[:24], "model.int8.onnx",
                             self._export_direct if self.direct else self._export) / "model.int8.onnx"

    def _export_direct(self, folder: Path) -> None:
        import shutil

        _require_onnx()
        src = Path(self.backbone.path)
        (folder / "model.int8.onnx").write_bytes(onnx_bert.build(src, int8=True).SerializeToString())
        (folder / "tokenizer").mkdir()
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, folder / "tokenizer" / name)

    def _export(self, folder: Path) -> None:
        _require_onnx()
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.backbone.path, trust_remote_code=False)
        model = AutoModel.from_pretrained(self.backbone.path, trust_remote_code=False,
                                          dtype=torch.float32).eval()
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tok.model_input_names]

        class Hidden(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, *args):
                return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

        sample = tok(["an example text", "another, longer example text"], padding=True, return_tensors="pt")
        axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
        with _quiet_quantizer():
            torch.onnx.export(Hidden(model), tuple(sample[n] for n in names), str(folder / "model.onnx"),
                              input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
            quantize_dynamic(str(folder / "model.onnx"), str(folder / "model.int8.onnx"),
                             weight_type=QuantType.QInt8, per_channel=True)
        (folder / "model.onnx").unlink()
        tok.save_pretrained(folder / "tokenizer")

    def _load(self):
        if self._session is None:
            try:
                self._open()
            except (UserError, MemoryError):
                raise
            except Exception as exc:  # the model folder is the user's: a broken one is bad input
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise UserError(f"{label('encoder')} {self.name!r}: its model could not be exported to or run "
                                f"by ONNX Runtime ({type(exc).__name__}: {first}); check the model folder "
                                f"{self.backbone.path}") from exc
        return self._session, self._tok

    def _open(self) -> None:
        import onnxruntime as ort

        path = self.model_file()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = os.cpu_count() or 1
        opts.log_severity_level = 3
        # The direct recipe runs without ONNX Runtime's SkipLayerNormalization fusion: on 2 CPUs
        # its kernel took 0.045 s per node per 1,500 headlines against 0.006 s for the plain
        # LayerNormalization and Add it replaces (MiniLM encodes 3.0 s / 3,000 headlines
        # instead of 3.9 s). It is part of the recipe: int8 activations make the two differ.
        skip = ["SkipLayerNormFusion"] if self.direct else None
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"],
                                             disabled_optimizers=skip)
        self._tok = _batch_tokenizer(path.parent / "tokenizer", self.max_length)
        self._inputs = [i.name for i in self._session.get_inputs()]

    def encode(self, texts: list[str]) -> np.ndarray:
        from tqdm.auto import tqdm

        session, tok = self._load()
        dim = session.get_outputs()[0].shape[-1]
        out = np.empty((len(texts), dim if isinstance(dim, int) else 0), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch
        steps = range(0, len(texts), self.batch_size)
        bar = self.progress["bars"] and len(texts) > 2000
        rows = []
        for i in tqdm(steps, desc=f"encoding ({self.name})", unit="batch", disable=None if bar else True):
            idx = order[i : i + self.batch_size]
            enc = tok([texts[j] for j in idx])
            hidden = session.run(None, {n: enc[n].astype(np.int64) for n in self._inputs})[0]
            if self.pooling == "cls":
                v = hidden[:, 0]
            else:
                mask = enc["attention_mask"][..., None].astype(np.float32)
                v = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
            if self.normalize:
                v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            rows.append((idx, v.astype(np.float32)))
        if rows and out.shape[1] == 0:
            out = np.empty((len(texts), rows[0][1].shape[1]), dtype=np.float32)
        for idx, v in rows:
            out[idx] = v
        return out


@contextmanager
def _quiet_quantizer():
    """Warnings off, and the root logger at ERROR: the quantizer prints its advice to pre-process
    on the root logger."""
    import logging
    import warnings

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _batch_tokenizer(folder: Path, max_length: int):
    """texts -> {input_ids, token_type_ids, attention_mask} as int arrays, padded to the batch's
    longest and truncated at ``max_length``: what transformers' fast tokenizer gives with
    ``padding=True, truncation=True``, from its own ``tokenizer.json`` through the tokenizers
    library (no transformers import on the scoring path). A folder with settings this does not
    reproduce (padding or truncation on the left, no tokenizer.json) uses transformers."""
    try:
        cfg = read_json(folder / "tokenizer_config.json")
    except (OSError, UnreadableJSON):
        cfg = None
    simple = (isinstance(cfg, dict) and (folder / "tokenizer.json").is_file()
              and cfg.get("padding_side", "right") == "right" and cfg.get("truncation_side", "right") == "right"
              and isinstance(cfg.get("pad_token"), str))
    if not simple:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder)
        return lambda texts: tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad_id = tk.token_to_id(cfg["pad_token"])
    tk.enable_truncation(max_length)
    tk.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token=cfg["pad_token"],
                      pad_type_id=int(cfg.get("pad_token_type_id", 0)))

    def encode(texts: list[str]) -> dict[str, np.ndarray]:
        encs = tk.encode_batch(texts)
        return {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64)}

    return encode
