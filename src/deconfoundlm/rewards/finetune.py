"""DeconfoundLM end to end: a transformer reward trained jointly with the confounder term.

    eta = b + f_theta(x) + g(psi(c)) (+ offset),   loss = the family's deviance (weights honoured)

``f_theta`` is an ``AutoModelForSequenceClassification`` with one label on the chosen backbone
(its architecture's own pooling: [CLS] + pooler for BERT-style encoders, the last token for
causal LMs; its head starts at zero). ``g`` is the confounder design of the linear estimators
(one-hot / splines) with a nearly-zero ridge (it is adjusted for, not shrunk); ``b`` is the
intercept. ``--method naive`` drops ``g``; ``--estimator partialling-out`` drops it too and
instead adds the cross-fitted offset g^(c) of a confounder-only fit (Robinson / double ML).

Model selection uses no experimental data: a seeded held-out part of the log (``heldout``),
evaluated every epoch; training stops when its deviance stops improving and the best epoch is
kept (transformers' ``Trainer`` with ``EarlyStoppingCallback``). Training runs wherever
``Trainer`` runs: CPU, one GPU, or several processes/GPUs under ``accelerate launch``.

After training, the reward is f_theta(x) minus its mean over the training texts; the fitted
b and g are kept as a linear head on that one feature, so deconfounded labels, saving and
loading go through the same estimator classes as the frozen rewards.
"""

from __future__ import annotations

import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from deconfoundlm.errors import DataWarning, UserError
from deconfoundlm.features.backbones import (
    Backbone,
    plain_model,
    position_limit,
    quiet_gguf_loading,
    resolve_backbone,
)
from deconfoundlm.features.confounders import ConfounderDesign
from deconfoundlm.features.text_model import TextModelFeatures
from deconfoundlm.glm.crossfit import confounder_offset
from deconfoundlm.glm.families import get_family, resolve_family
from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.glm.targets import OFFSET, OUTCOME, pack_targets, unpack
from deconfoundlm.logs.validate import ObservationalLog
from deconfoundlm.options import label
from deconfoundlm.rewards.base import RewardEstimator
from deconfoundlm.rewards.finetune_config import FinetuneConfig


class DeconfoundedTextModel(nn.Module):
    """eta = b + f_theta(x) + psi . beta + offset, and the family's loss on it."""

    def __init__(self, text_model: nn.Module, d_conf: int, family: str, bias: float, curvature: float,
                 alpha_conf: float) -> None:
        super().__init__()
        self.text_model = text_model
        self.family = family
        self.bias = nn.Parameter(torch.tensor([float(bias)]))
        self.conf = nn.Parameter(torch.zeros(d_conf))
        self.curvature = curvature
        self.alpha_conf = alpha_conf

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, psi=None, y=None, n=None,
                w=None, offset=None):
        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        f = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **kw).logits[:, 0].float()
        eta = self.bias + f
        if self.conf.numel():
            eta = eta + psi.float() @ self.conf
        if offset is not None:
            eta = eta + offset.float()
        out = {"logits": eta}
        if y is not None:
            loss = get_family(self.family).loss(eta, y.float(), n.float(), w.float())
            out["loss"] = loss + self.curvature * self.alpha_conf * (self.conf**2).sum()
        return out


def _scale_head(model: nn.Module, factor: float) -> None:
    """Multiply the last one-output linear layer (the classification head) by ``factor``: 0 starts
    f_theta at 0; a unit carries a gaussian outcome's unit back into the model's output."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1]
    if heads:
        with torch.no_grad():
            heads[-1].weight.mul_(factor)
            if heads[-1].bias is not None:
                heads[-1].bias.mul_(factor)


def load_backbone_classifier(backbone: Backbone):
    """(AutoModelForSequenceClassification with one label, tokenizer) for a backbone, never with
    ``trust_remote_code``. GGUF weights are dequantized into a plain float32 model."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kw = {"gguf_file": backbone.gguf_file} if backbone.gguf_file else {}
    try:
        with quiet_gguf_loading():
            tok = AutoTokenizer.from_pretrained(backbone.path, trust_remote_code=False, **kw)
            model = AutoModelForSequenceClassification.from_pretrained(
                backbone.path, num_labels=1, trust_remote_code=False, dtype=torch.float32, **kw)
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's backbone
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{label('encoder')} {backbone.name!r}: could not load it as a sequence classifier ({first})") from exc
    model = plain_model(model, AutoModelForSequenceClassification)  # GGUF: a plain copy the trainer accepts
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    model.config.pad_token_id = tok.pad_token_id
    model.config.problem_type = "regression"
    return model, tok


def _lora(model: nn.Module) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="SEQ_CLS")
    return get_peft_model(model, cfg)


def _dataset(tok, texts: list[str], psi: np.ndarray, targets: np.ndarray, max_length: int):
    from datasets import Dataset

    enc = tok(texts, truncation=True, max_length=max_length)
    data = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    t = unpack(targets)
    data.update(psi=psi.astype(np.float32).tolist(), y=t.outcome.tolist(), n=t.trials.tolist(), w=t.weight.tolist(),
                offset=t.offset.tolist())
    return Dataset.from_dict(data)


@contextmanager
def _shared_workdir():
    """A temporary folder for the trainer's checkpoints, the same on every process of an
    ``accelerate launch`` run (the main process makes it and shares its name), removed after."""
    import shutil

    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()
    name = [tempfile.mkdtemp(prefix="deconfoundlm-finetune-") if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(name)
    try:
        yield name[0]
    finally:
        state.wait_for_everyone()
        if state.is_main_process:
            shutil.rmtree(name[0], ignore_errors=True)


def finetune_reward(log: ObservationalLog, est: RewardEstimator, encoder: str, cfg: FinetuneConfig,
                    seed: int = 0) -> tuple[TextModelFeatures, RewardEstimator, np.ndarray]:
    """Train f_theta (+ g) on ``log``; returns the text model as a feature, the estimator
    (family, design, intercept, g, center) fitted around it, and f_theta of the log's texts
    (n x 1), so that nobody scores them twice."""
    from transformers import (
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    backbone = resolve_backbone(encoder)
    family = resolve_family(est.family, log.outcome, log.trials)
    specs = tuple(log.roles.confounders)
    design = ConfounderDesign(specs, min_count=getattr(est, "min_count", 5)).fit(log.confounders) if specs else None
    psi_sparse = design.transform(log.confounders) if design is not None else None
    raw = pack_targets(log.outcome, log.trials, log.weights)
    # A gaussian outcome is trained in its own unit (its SD): a head that starts at 0 and moves
    # with a backbone's learning rate reaches the same reward in seconds as in milliseconds. The
    # text model's head is multiplied by the unit after training, b and g here.
    unit = get_family(family).unit_of(log.outcome)
    targets = raw.copy()
    targets[:, OUTCOME] /= unit
    partialling_out = est.method == "deconfound" and getattr(est, "estimator", "joint") == "partialling-out"
    if partialling_out:  # the cross-fitted offset g^(c) from a confounder-only fit
        targets[:, OFFSET] = confounder_offset(family, psi_sparse, targets, est.cv, seed)
    joint = est.method == "deconfound" and not partialling_out
    psi = psi_sparse.toarray() if (joint and psi_sparse is not None) else np.zeros((len(log), 0))

    set_seed(seed)
    model, tok = load_backbone_classifier(backbone)
    limit = position_limit(model.config.to_dict())
    if limit is not None and cfg.max_length > limit:
        warnings.warn(f"--max-length {cfg.max_length} is beyond {backbone.name}'s {limit} positions: texts are "
                      f"truncated at {limit} tokens", DataWarning, stacklevel=2)
        cfg.max_length = limit
    _scale_head(model, 0.0)
    if cfg.lora:
        model = _lora(model)
    # Warm start of b and g: the confounder-only fit (f starts at 0). They then move with their
    # own, larger learning rate: a backbone's rate would take thousands of steps to fit g.
    start = AdditiveGLM(family, n_text=0, alpha_conf=cfg.alpha_conf, seed=seed).fit_arrays(
        np.zeros((len(log), 0)), psi_sparse if joint else None, targets)
    wrapper = DeconfoundedTextModel(model, psi.shape[1], family, start.coefs_.bias,
                                    get_family(family).curvature_of(*unpack(targets)[:3]), cfg.alpha_conf)
    if joint and psi.shape[1]:
        with torch.no_grad():
            wrapper.conf.copy_(torch.from_numpy(start.conf_coef()).float())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(log))
    n_eval = max(1, int(round(cfg.heldout * len(log))))
    ev, tr = np.sort(order[:n_eval]), np.sort(order[n_eval:])
    texts = log.texts
    train_ds = _dataset(tok, [texts[i] for i in tr], psi[tr], targets[tr], cfg.max_length)
    eval_ds = _dataset(tok, [texts[i] for i in ev], psi[ev], targets[ev], cfg.max_length)
    with _shared_workdir() as work:
        args = TrainingArguments(
            output_dir=work, num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=max(cfg.batch_size, 64), learning_rate=cfg.lr(), weight_decay=0.0,
            lr_scheduler_type="linear", warmup_steps=0.06, eval_strategy="epoch", save_strategy="epoch",
            load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
            save_total_limit=1, label_names=["y"], remove_unused_columns=False, report_to=[], seed=seed,
            data_seed=seed, logging_strategy="epoch", use_cpu=not torch.cuda.is_available(),
            prediction_loss_only=True, disable_tqdm=None, save_only_model=True,
            dataloader_num_workers=0)
        head_params = [wrapper.bias, wrapper.conf]
        text_params = [p for p in wrapper.text_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([{"params": text_params, "lr": cfg.lr()},
                                       {"params": head_params, "lr": cfg.conf_learning_rate}], weight_decay=0.0)
        trainer = Trainer(model=wrapper, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          data_collator=DataCollatorWithPadding(tok), optimizers=(optimizer, None),
                          callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience)])
        trainer.remove_callback(PrinterCallback)  # no log dicts on stdout; the metrics keep them
        trainer.train()
        wrapper = trainer.accelerator.unwrap_model(trainer.model)
        history = [h for h in trainer.state.log_history if "eval_loss" in h]
    text_model = wrapper.text_model
    if cfg.lora:
        text_model = text_model.merge_and_unload()
    text_model = text_model.cpu().eval()
    if unit != 1.0:
        _scale_head(text_model, unit)  # f_theta in the outcome's unit: the exported model's logit is the reward
    features = TextModelFeatures(text_model, tok, backbone.name, cfg.max_length)
    f = features.encode(texts).astype(np.float64)
    bias = float(wrapper.bias.detach().cpu()) * unit
    conf = wrapper.conf.detach().cpu().double().numpy() * unit
    if partialling_out and design is not None:  # attach g^(c) with f^ as offset (deconfounded labels)
        t = raw.copy()
        t[:, OFFSET] = f[:, 0]
        conf_only = AdditiveGLM(family, n_text=0, seed=seed).fit_arrays(np.zeros((len(t), 0)), psi_sparse, t)
        bias, conf = conf_only.coefs_.bias, conf_only.conf_coef()
    est.family_ = family
    est.design_ = design if est.method == "deconfound" else None
    est.n_features_in_ = 1
    est.glm_ = AdditiveGLM.from_coefficients(family, weight=np.ones(1), bias=bias,
                                             conf_coef=conf if est.design_ is not None else None, seed=seed)
    est.center_ = float(f.mean())
    est.alpha_ = None
    eta_ev = est.glm_.predict(np.column_stack([f[ev], psi_sparse[ev].toarray()]) if est.design_ is not None
                              else f[ev]) + raw[ev, OFFSET] * (not partialling_out)
    est.cv_deviance_ = get_family(family).deviance(eta_ev, *unpack(raw[ev])[:3])
    est.finetune_metrics_ = {
        **asdict(cfg), "learning_rate": cfg.lr(), "backbone": backbone.name, "train_rows": len(tr),
        "heldout_rows": len(ev), "epochs_run": len(history), "heldout_deviance": est.cv_deviance_,
        "heldout_loss_by_epoch": [float(h["eval_loss"]) for h in history],
    }
    if not (est.glm_.is_finite() and np.isfinite(est.center_) and np.isfinite(f).all()):
        raise UserError(f"fine-tuning did not reach finite weights; lower {label('learning_rate')}")
    est.finetune_metrics_["reward_sd"] = float(np.std(f))
    warn_if_flat(float(np.std(f)), raw, family, cfg)
    return features, est, f.astype(np.float32)


FLAT_SHARE = 0.01  # a reward whose spread is under 1% of the outcome's (link scale) has learned ~nothing


def warn_if_flat(reward_sd: float, targets: np.ndarray, family: str, cfg: FinetuneConfig) -> None:
    """Warn when a fine-tuned reward barely varies across the training texts: GRPO's group
    normalisation (and any best-of-K pick) would turn that noise into full-size preferences."""
    spread = float(np.std(get_family(family).empirical_link(*unpack(targets)[:2])))
    if reward_sd < FLAT_SHARE * spread:
        scale = "log-odds" if family in ("binomial", "bernoulli") else "on the link scale"
        warnings.warn(
            f"the fine-tuned reward barely varies across texts (standard deviation {reward_sd:.2g} {scale}, "
            f"{reward_sd / spread:.2%} of the outcome's spread): it has learned almost nothing, and GRPO's group "
            f"normalisation would turn this noise into full-size advantages; train longer (--epochs, now "
            f"{cfg.epochs}), raise --learning-rate, give more rows, or fit on a frozen encoder (drop --finetune)",
            DataWarning, stacklevel=2)
