"""The settings of ``fit-reward --finetune`` and their checks (no torch: the checks run before any work)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from deconfoundlm.errors import UserError
from deconfoundlm.options import label

FINETUNE_METHODS = ("naive", "deconfound")


@dataclass
class FinetuneConfig:
    """Settings of ``fit-reward --finetune``."""

    epochs: int = 3
    learning_rate: float | None = None  # default: 5e-5 (full fine-tuning), 5e-4 (LoRA)
    batch_size: int = 32
    max_length: int = 64  # tokens per text (headlines and subject lines are short)
    lora: bool = False  # train LoRA adapters (peft) and merge them into the exported model
    heldout: float = 0.2  # share of the log held out for early stopping (seeded)
    patience: int = 1  # epochs without improvement of the held-out deviance before stopping
    alpha_conf: float = 1e-4  # ridge on g, relative to the null model's curvature
    conf_learning_rate: float = 1e-2  # Adam rate of b and g (warm-started at the confounder-only fit)

    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else (5e-4 if self.lora else 5e-5)


def check_finetune(cfg: FinetuneConfig, method: str, encoder: Any, head: str | None) -> None:
    """Every --finetune setting before any work."""
    if method not in FINETUNE_METHODS:
        raise UserError(f"{label('finetune')} supports {label('method')} {' or '.join(FINETUNE_METHODS)}, not {method!r}")
    if not isinstance(encoder, str):
        raise UserError(f"{label('finetune')} needs an encoder name or model folder, not an encoder object")
    if encoder == "hashing" or encoder.startswith("hashing-"):
        raise UserError(f"{label('finetune')} needs a transformer backbone; {label('encoder')} {encoder!r} has nothing to train "
                        "(use minilm, smollm2-135m or a model folder)")
    if head not in (None, "linear"):
        raise UserError(f"{label('finetune')} trains a linear head on the backbone; {label('head')} mlp does not apply")
    for flag, value, low in (("--epochs", cfg.epochs, 1), ("--batch-size", cfg.batch_size, 1),
                             ("--max-length", cfg.max_length, 4), ("patience", cfg.patience, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{flag} {value!r}: must be an integer of at least {low}")
    lr = cfg.lr()
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise UserError(f"{label('learning_rate')} {cfg.learning_rate!r}: must be a finite number above 0")
    if not 0 < cfg.heldout < 1:
        raise UserError(f"heldout {cfg.heldout!r}: must be between 0 and 1")
