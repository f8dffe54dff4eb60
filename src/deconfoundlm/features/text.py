"""Text features phi(x): frozen encoders with an on-disk embedding cache keyed by the backbone's
identity (not its name) and the text.

- ``hashing`` / ``hashing-N``: word and character n-gram hashing projected to N dimensions (256
  by default); no model, fast, deterministic: for tests and very large logs.
- ``minilm`` and any sentence-transformers folder or id: the model's own pooling.
- ``minilm-onnx`` and ``onnx:PATH``: the same model exported to ONNX with int8 weights, run by
  ONNX Runtime (about 3x faster on a CPU; see :mod:`deconfoundlm.features.onnx_encoder`).
- ``smollm2-135m`` and any other Hugging Face model (encoder or causal LM), through ``AutoModel``:
  mean pooling over the last hidden layer (padding excluded), at most 128 tokens. Never
  ``trust_remote_code``.

See :mod:`deconfoundlm.features.backbones` for how names resolve and what the identity is.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from deconfoundlm.errors import DataWarning, UserError
from deconfoundlm.features.backbones import (
    Backbone,
    BackboneIdentity,
    device,
    folder_position_limit,
    resolve_backbone,
    sentence_transformers_settings,
)
from deconfoundlm.features.model_cache import cache_dir
from deconfoundlm.features.onnx_encoder import ONNX_PREFIX
from deconfoundlm.progress import PROGRESS, disable

BUILTIN_ENCODERS = ("minilm", "hashing", "smollm2-135m")
HASHING_VERSION = "hashing-v1"  # bump when HashingEncoder's output changes


class Encoder(Protocol):
    """A frozen text feature extractor."""

    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def identity(self) -> BackboneIdentity: ...


class HashingEncoder:
    """Word 1-2-grams and character 3-5-grams, hashed, then a fixed sparse random projection.

    Pure function of the string (no fitted state), so scores are reproducible anywhere.
    """

    def __init__(self, n_features: int = 256, n_hash: int = 2**18) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.random_projection import SparseRandomProjection

        self.name = f"hashing-{n_features}"
        self.dim = n_features
        self._words = HashingVectorizer(
            n_features=n_hash, ngram_range=(1, 2), alternate_sign=False, norm=None,
            lowercase=True, token_pattern=r"(?u)\b\w+\b|[!?]",
        )
        self._chars = HashingVectorizer(
            n_features=n_hash, analyzer="char_wb", ngram_range=(3, 5), alternate_sign=False,
            norm=None, lowercase=False,
        )
        # The projection depends only on (n_hash, n_features, seed): fitting reads the shape.
        self._proj = SparseRandomProjection(n_components=n_features, dense_output=True, random_state=0)
        self._proj.fit(sp.csr_matrix((1, n_hash), dtype=np.float64))

    def identity(self) -> BackboneIdentity:
        spec = f"{HASHING_VERSION}:{self.dim}:{self._words.n_features}"
        return BackboneIdentity(self.name, "hashing", hashlib.sha256(spec.encode()).hexdigest(), "none", 0)

    def encode(self, texts: list[str]) -> np.ndarray:
        """One row per text; each distinct text is hashed once (a log repeats its texts)."""
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        index: dict[str, int] = {}
        codes = np.fromiter((index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts))
        if len(index) == len(texts):
            return self._encode(texts)
        return self._encode(list(index))[codes]

    def _encode(self, texts: list[str]) -> np.ndarray:
        from sklearn.preprocessing import normalize

        x = normalize(self._words.transform(texts)) + normalize(self._chars.transform(texts))
        z = np.asarray(self._proj.transform(x), dtype=np.float32)
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        return z / np.maximum(norms, 1e-12)


def _load_error(name: str, exc: BaseException, hint: str = "") -> UserError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return UserError(f"encoder {name!r} could not be loaded offline ({first}){hint}; use minilm, smollm2-135m, "
                     "hashing, or a local model folder")


class SentenceTransformerEncoder:
    """A sentence-transformers model (its own pooling), loaded offline; ``minilm`` by default."""

    def __init__(self, backbone: Backbone, batch_size: int = 128) -> None:
        self.backbone = backbone
        self.name = backbone.name
        self.batch_size = batch_size
        self._model = None
        self._identity: BackboneIdentity | None = None

    def identity(self) -> BackboneIdentity:
        if self._identity is None:
            pooling, max_length = sentence_transformers_settings(self.backbone.path)
            self._identity = BackboneIdentity(self.name, "sentence-transformers", self.backbone.content_hash(),
                                              pooling, max_length)
        return self._identity

    def _load(self):
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.backbone.path, device=device(), trust_remote_code=False,
                                                  local_files_only=True)
            except Exception as exc:  # noqa: BLE001 - any load failure is the user's encoder
                raise _load_error(self.name, exc) from exc
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        emb = model.encode(texts, batch_size=self.batch_size,
                           show_progress_bar=len(texts) > 2000 and PROGRESS["bars"] and sys.stderr.isatty(),
                           convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(emb, dtype=np.float32)


class AutoModelEncoder:
    """Any Hugging Face model through ``AutoModel`` (encoders and causal LMs alike): the mean of
    the last hidden layer over the text's tokens (padding excluded), then L2-normalized."""

    def __init__(self, backbone: Backbone, max_length: int = 128, batch_size: int = 32) -> None:
        self.backbone = backbone
        self.name = backbone.name
        limit = folder_position_limit(backbone.path)  # never index past the model's positions
        self.max_length = max_length if limit is None else min(max_length, limit)
        self.batch_size = batch_size
        self._model = None
        self._tok = None
        self._identity: BackboneIdentity | None = None

    def identity(self) -> BackboneIdentity:
        if self._identity is None:
            self._identity = BackboneIdentity(self.name, "auto", self.backbone.content_hash(), "mean",
                                              self.max_length)
        return self._identity

    def _load(self):
        if self._model is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            try:
                folder = self.backbone.weights_folder()  # a GGUF backbone: its float32 copy
                tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
                model = AutoModel.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32,
                                                  use_safetensors=True if self.backbone.gguf_file else None)
            except Exception as exc:  # noqa: BLE001 - any load failure is the user's encoder
                raise _load_error(self.name, exc, self.backbone.copy_hint()) from exc
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            tok.padding_side = "right"
            self._tok, self._model = tok, model.to(device()).eval()
        return self._tok, self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        tok, model = self._load()
        out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
        steps = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for i in tqdm(steps, desc=f"encoding ({self.name})", unit="batch", disable=disable(len(texts) <= 2000)):
                batch = tok(texts[i : i + self.batch_size], padding=True, truncation=True,
                            max_length=self.max_length, return_tensors="pt").to(model.device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                mean = torch.nn.functional.normalize(mean.float(), dim=-1)
                out[i : i + len(mean)] = mean.cpu().numpy()
        return out


_BROKEN_CACHES: set[str] = set()  # caches found unusable in this process (warned once each)


class CachedEncoder:
    """Wraps an encoder with a SQLite cache keyed by (backbone identity, sha1 of text).

    ``write=False`` reads what the cache holds and never adds to it (nor creates it): ``serve``
    uses it, so that the completions of a long RL run do not fill the disk."""

    def __init__(self, encoder: Encoder, path: Path | None = None, write: bool = True) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self.path = path or cache_dir() / "embeddings.sqlite"
        self.write = write

    def identity(self) -> BackboneIdentity:
        return self.encoder.identity()

    def _connect(self) -> sqlite3.Connection:
        if self.path.exists() and not self.path.is_file():  # a FIFO would block SQLite's open forever
            raise OSError(f"{self.path} is not a regular file")
        if not self.write:
            return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute(
            "CREATE TABLE IF NOT EXISTS emb (enc TEXT, key TEXT, vec BLOB, PRIMARY KEY (enc, key))"
        )
        return con

    def encode(self, texts: list[str]) -> np.ndarray:
        """Cached vectors where the cache has them, the encoder's for the rest. A cache is only a
        cache: if it cannot be used (not a database, another schema, a folder or device in its
        place, no space, no permission), the command warns once and encodes without it."""
        if texts and str(self.path) not in _BROKEN_CACHES and (self.write or self.path.is_file()):
            try:
                return self._encode_cached(texts)
            except UserError:  # a UserError is a ValueError: its own message, not this one
                raise
            except (sqlite3.Error, OSError, ValueError) as exc:
                _BROKEN_CACHES.add(str(self.path))
                why = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
                warnings.warn(f"embedding cache {self.path} cannot be used ({why}); encoding without it (set "
                              "DECONFOUNDLM_CACHE to a writable folder to cache again)", DataWarning, stacklevel=2)
        return np.asarray(self.encoder.encode(texts), dtype=np.float32)

    def _encode_cached(self, texts: list[str]) -> np.ndarray:
        cache_key = self.identity().key()
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        unique = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        with self._connect() as con:
            for i in range(0, len(unique), 900):  # SQLite's bound-parameter limit
                chunk = unique[i : i + 900]
                q = "SELECT key, vec FROM emb WHERE enc=? AND key IN ({})".format(",".join("?" * len(chunk)))
                for key, blob in con.execute(q, [cache_key, *chunk]):
                    if not isinstance(blob, bytes) or not blob or len(blob) % 4:
                        raise ValueError(f"a cached vector is not float32 data ({type(blob).__name__})")
                    found[key] = np.frombuffer(blob, dtype=np.float32)
            if len({len(v) for v in found.values()}) > 1:
                raise ValueError("cached vectors of different lengths for one encoder")
            missing = [k for k in unique if k not in found]
            if missing:
                first_text = dict(zip(keys, texts, strict=True))
                vecs = self.encoder.encode([first_text[k] for k in missing])
                if not self.write:
                    found.update(zip(missing, vecs, strict=True))
                    return np.stack([found[k] for k in keys]).astype(np.float32)
                con.executemany(
                    "INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                    [(cache_key, k, v.astype(np.float32).tobytes()) for k, v in zip(missing, vecs, strict=True)],
                )
                found.update(zip(missing, vecs, strict=True))
                if found and len({len(v) for v in found.values()}) > 1:
                    raise ValueError("cached vectors do not match the encoder's dimension")
        return np.stack([found[k] for k in keys]).astype(np.float32)


class MemoizedEncoder:
    """Keeps every embedding it computed in memory (for jobs that fit many rewards on the same
    texts: the demo, the benchmark)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self._memo: dict[str, np.ndarray] = {}

    def identity(self) -> BackboneIdentity:
        return self.encoder.identity()

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            self._memo.update(zip(missing, self.encoder.encode(missing), strict=True))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts]).astype(np.float32, copy=False)


def encode_in_chunks(encoder: Encoder, texts: list[str], chunk: int = 50_000, progress: bool = True) -> np.ndarray:
    """Encode into one preallocated float32 array, chunk by chunk, with a progress bar on
    large inputs (bounded peak memory for hashing; batched cache lookups for models)."""
    from tqdm.auto import tqdm

    if len(texts) <= chunk:
        return encoder.encode(texts).astype(np.float32, copy=False)
    first = encoder.encode(texts[:chunk]).astype(np.float32, copy=False)
    out = np.empty((len(texts), first.shape[1]), dtype=np.float32)
    out[:chunk] = first
    for i in tqdm(range(chunk, len(texts), chunk), desc=f"encoding ({encoder.name})", unit="chunk",
                  disable=disable(not progress)):
        out[i : i + chunk] = encoder.encode(texts[i : i + chunk])
    return out


HASHING_DIMS = (8, 4096)  # the solver's matrices are p x p: larger hashing spaces only cost time and memory


def check_encoder_name(name: str, flag: str = "--encoder") -> str:
    """Syntax of an encoder name (cheap: nothing is loaded). ``hashing-N`` needs 8 <= N <= 4096."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{flag}: empty encoder name; use minilm, smollm2-135m, hashing or a model folder")
    if name.startswith(ONNX_PREFIX) and not name[len(ONNX_PREFIX):].strip():
        raise UserError(f"{flag} {name!r}: give a sentence-transformers folder after onnx:, e.g. onnx:./my-model")
    if name == "hashing" or name.startswith("hashing-"):
        dim = name.split("-", 1)[1] if "-" in name else "256"
        if not dim.isdigit() or not HASHING_DIMS[0] <= int(dim) <= HASHING_DIMS[1]:
            raise UserError(f"{flag} {name!r}: hashing takes a dimension from {HASHING_DIMS[0]} to "
                            f"{HASHING_DIMS[1]}, e.g. hashing-256 (or plain 'hashing')")
    return name


def get_encoder(name: str, cache: bool | str = True, max_length: int | None = None) -> Encoder:
    """A frozen encoder by name (see the module docstring). Resolving the name reads no weights;
    the model loads on the first ``encode``. ``cache``: True (read and add to the embedding cache),
    ``"read"`` (read it, never add to it) or False (no cache)."""
    check_encoder_name(name)
    if name == "hashing" or name.startswith("hashing-"):
        n = int(name.split("-", 1)[1]) if "-" in name else 256
        return HashingEncoder(n_features=n)
    if name == "minilm-onnx" or name.startswith(ONNX_PREFIX):
        from deconfoundlm.features.onnx_encoder import OnnxEncoder  # onnxruntime only when used

        source = "minilm" if name == "minilm-onnx" else name[len(ONNX_PREFIX):]
        onnx = OnnxEncoder(resolve_backbone(source), name, cache_root=cache_dir(), progress=PROGRESS)
        return CachedEncoder(onnx, write=cache is True) if cache else onnx
    backbone = resolve_backbone(name)
    if backbone.kind == "sentence-transformers":
        enc: Encoder = SentenceTransformerEncoder(backbone)
    else:
        enc = AutoModelEncoder(backbone, **({"max_length": max_length} if max_length else {}))
    return CachedEncoder(enc, write=cache is True) if cache else enc
