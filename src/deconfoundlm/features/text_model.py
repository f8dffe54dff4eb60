"""A fine-tuned text model as the reward's feature: f_theta(x), the one logit of an
``AutoModelForSequenceClassification``.

The reward directory holds it as ``text_model/``, a standard Hugging Face folder (config,
safetensors, tokenizer): ``AutoModelForSequenceClassification.from_pretrained(DIR / "text_model")``
gives r(x) + center without deconfoundlm (the center is in ``config.json``). Loading it back is
validated like any untrusted input: one label, safetensors weights only, never
``trust_remote_code``, and a content hash that must match the one the artifact recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deconfoundlm.checks import require_regular_folder
from deconfoundlm.errors import UserError
from deconfoundlm.features.backbones import Backbone, BackboneIdentity, device, position_limit
from deconfoundlm.outputs import UnreadableJSON, read_json
from deconfoundlm.progress import disable

TEXT_MODEL_DIR = "text_model"


class TextModelFeatures:
    """f_theta(x) for a list of texts, as an (n, 1) float32 array (batched, no gradients)."""

    def __init__(self, model, tokenizer, name: str, max_length: int, batch_size: int = 64) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        self.batch_size = batch_size
        self._hash: str | None = None

    def identity(self) -> BackboneIdentity:
        return BackboneIdentity(self.name, "text_model", self._hash or "in-memory", "model", self.max_length)

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch
        from tqdm.auto import tqdm

        model = self.model.eval()
        dev = next(model.parameters()).device
        out = np.empty((len(texts), 1), dtype=np.float32)
        steps = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for i in tqdm(steps, desc="scoring (text model)", unit="batch", disable=disable(len(texts) <= 2000)):
                batch = self.tokenizer(texts[i : i + self.batch_size], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(dev)
                out[i : i + self.batch_size, 0] = model(**batch).logits[:, 0].float().cpu().numpy()
        return out

    def save(self, folder: Path, card: str | None = None) -> None:
        """A standard Hugging Face folder (safetensors weights, config, tokenizer, and the model
        card ``card`` as README.md). Its one logit is labelled "reward", and the tokenizer truncates
        at the length used to fit and score, so plain transformers gives the scores
        ``deconfoundlm score`` gives."""
        self.model.config.id2label, self.model.config.label2id = {0: "reward"}, {"reward": 0}
        self.tokenizer.model_max_length = self.max_length
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        if card is not None:
            (Path(folder) / "README.md").write_text(card, encoding="utf-8")
        self._hash = Backbone(self.name, str(folder), "auto").content_hash()

    def describe(self, folder: Path) -> dict[str, Any]:
        """What ``config.json`` records of the saved text model."""
        return {"base": self.name, "max_length": self.max_length,
                "content_hash": Backbone(self.name, str(folder), "auto").content_hash(),
                "architecture": type(self.model).__name__}

    @classmethod
    def load(cls, folder: Path, recorded: Any, n_features: int = 1) -> TextModelFeatures:
        """Load ``text_model/`` of a reward directory, checking it against ``recorded``."""
        def bad(why: str) -> UserError:
            return UserError(f"{folder.parent}: not a valid deconfoundlm reward model: {TEXT_MODEL_DIR}/ {why}")

        if not isinstance(recorded, dict) or not isinstance(recorded.get("content_hash"), str) \
                or not isinstance(recorded.get("max_length"), int) or not isinstance(recorded.get("base"), str) \
                or not 1 <= recorded["max_length"] <= 1_000_000:
            raise bad("is described wrongly in config.json (base, max_length, content_hash)")
        if n_features != 1:
            raise bad("goes with a one-feature head (n_features_in must be 1)")
        if not folder.is_dir():
            raise bad("is missing")
        require_regular_folder(folder, f"{folder.parent}: {TEXT_MODEL_DIR}/: ")
        try:
            config = read_json(folder / "config.json")
        except (OSError, UnreadableJSON):
            raise bad("has no valid config.json") from None
        if not isinstance(config, dict):
            raise bad("has no valid config.json")
        limit = position_limit(config)
        if limit is not None and recorded["max_length"] > limit:
            raise bad(f"is described with max_length {recorded['max_length']}, beyond the model's {limit} positions")
        labels = config.get("num_labels", len(config.get("id2label") or {}) or None)
        if labels != 1:
            raise bad(f"has a head with {labels} labels; a reward model has one")
        if not list(folder.glob("*.safetensors")):
            raise bad("has no safetensors weights")
        found = Backbone(recorded["base"], str(folder), "auto").content_hash()
        if found != recorded["content_hash"]:
            raise bad(f"changed since the reward was fitted (content hash {found[:12]}, recorded "
                      f"{recorded['content_hash'][:12]})")
        model, tok = load_sequence_classifier(folder, recorded["base"])
        feats = cls(model, tok, recorded["base"], recorded["max_length"])
        feats._hash = found
        return feats


def load_sequence_classifier(folder: Path, name: str):
    """(model, tokenizer) of a saved one-label sequence classifier; safetensors only."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, use_safetensors=True, trust_remote_code=False, local_files_only=True, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or hostile folder is the user's input
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{folder.parent}: not a valid deconfoundlm reward model: {TEXT_MODEL_DIR}/ could not "
                        f"be loaded ({first})") from None
    if model.config.num_labels != 1:
        raise UserError(f"{folder.parent}: not a valid deconfoundlm reward model: {TEXT_MODEL_DIR}/ has "
                        f"{model.config.num_labels} labels; a reward model has one")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return model.to(device()).eval(), tok
