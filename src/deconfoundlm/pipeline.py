"""The orchestrator: one path from a user's log to a saved reward, above logs/, features/, glm/,
rewards/ and distributed/.

- :func:`prepare_log`: every input check of fit-reward, diagnose and sensitivity in one place
  (options, output, then the log's rows and family). On ``--dask`` the partitions are validated on
  the workers by the same row checks (:func:`~deconfoundlm.logs.validate.validate_log`,
  :func:`~deconfoundlm.glm.families.check_log_family`).
- :class:`Reward`: feature extractor + estimator + column roles, saved as one directory;
  :func:`fit_reward` goes data -> features -> confounder design -> reward fit; :func:`load_reward`
  gives back an object whose ``score(texts)`` returns identical rewards.
- :func:`score_file`: a table of texts scored chunk by chunk (or on a cluster) with the loop body
  shared with the cluster (:func:`~deconfoundlm.rewards.scoring.score_frame`).
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from deconfoundlm.configs import FitConfig, ScoreConfig
from deconfoundlm.errors import UserError
from deconfoundlm.features.confounders import ConfounderDesign
from deconfoundlm.features.text import Encoder, check_encoder_name, encode_in_chunks, get_encoder
from deconfoundlm.features.text_model import TEXT_MODEL_DIR, TextModelFeatures
from deconfoundlm.glm.families import check_log_family, get_family, resolve_family
from deconfoundlm.glm.folds import DIAGNOSTIC_ROWS, diagnostic_sample
from deconfoundlm.glm.targets import pack_targets
from deconfoundlm.lifecycle import is_main_process
from deconfoundlm.logdata import LogData
from deconfoundlm.logs.ab import RandomizedTests, check_like_log, load_randomized_tests
from deconfoundlm.logs.roles import ColumnRoles
from deconfoundlm.logs.tables import iter_table, table_columns, table_format
from deconfoundlm.logs.validate import (
    DataWarning,
    ObservationalLog,
    require_columns,
)
from deconfoundlm.options import label
from deconfoundlm.outputs import (
    PARQUET_DIR,
    REWARD_DIR,
    TABLE_FILE,
    TableWriter,
    atomic_directory,
    check_output,
    read_json,
    write_json,
)
from deconfoundlm.progress import disable
from deconfoundlm.rewards import RewardEstimator, diagnostics, load_estimator, make_estimator
from deconfoundlm.rewards.finetune_config import FinetuneConfig, check_finetune
from deconfoundlm.rewards.grounding import (
    CHOICES,
    ABFeatures,
    check_groundable,
    ground_reward,
    in_sample_note,
    own_tests_reward,
)
from deconfoundlm.rewards.scoring import score_frame, text_list

_pkg = "deconfoundlm"
METRICS_FILE = "metrics.json"


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in (_pkg, "torch", "scikit-learn", "numpy", "pandas", "sentence-transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


class Reward:
    """A fitted reward model: ``score(texts)`` -> r(x) (log-odds or outcome units, mean 0 over
    the training texts). It owns its feature extractor: a frozen encoder (recorded by name and
    identity) or a fine-tuned text model (saved whole in ``text_model/``). Use
    :func:`fit_reward` / :func:`load_reward` to get one."""

    def __init__(self, estimator: RewardEstimator, features: Encoder | str, roles: ColumnRoles,
                 metrics: dict[str, Any] | None = None, info: dict[str, Any] | None = None):
        self.estimator = estimator
        self._features = features if not isinstance(features, str) else None
        self._features_name = features if isinstance(features, str) else features.name
        self.roles = roles
        self.metrics = metrics or {}
        self.info = info or {}
        self.expected_identity: dict[str, Any] | None = None
        # The embedding cache: True (read and add), "read" (read only: serve), False (none).
        self.cache: bool | str = True

    def __repr__(self) -> str:
        conf = ", ".join(f"{c.column}:{c.type}" for c in self.roles.confounders) or "none"
        fam = getattr(self.estimator, "family_", None) or "not fitted"
        return (f"<deconfoundlm Reward: method={self.method}, family={fam}, encoder={self.encoder_name}"
                f"{' (fine-tuned)' if self.finetuned else ''}, text={self.roles.text!r}, "
                f"outcome={self.roles.outcome!r}, confounders: {conf}>")

    @property
    def method(self) -> str:
        return self.estimator.method

    @property
    def encoder_name(self) -> str:
        return self._features_name

    @property
    def finetuned(self) -> bool:
        return isinstance(self._features, TextModelFeatures)

    @property
    def features(self) -> Encoder:
        """The feature extractor (loaded on first use); checked against the identity the
        artifact recorded."""
        if self._features is None:
            self._features = get_encoder(self._features_name, cache=self.cache)
            self._check_identity(self._features)
        return self._features

    encoder = features  # the name used before text models existed

    def _check_identity(self, features: Encoder) -> None:
        if self.expected_identity is None:
            return
        now = features.identity()
        if not now.same_model(self.expected_identity):
            raise UserError(
                f"encoder {self._features_name!r} changed since the reward was fitted: the model recorded "
                f"{self.expected_identity.get('kind')}:{str(self.expected_identity.get('content_hash'))[:12]} "
                f"(pooling {self.expected_identity.get('pooling')}, max length {self.expected_identity.get('max_length')}), "
                f"found {now.kind}:{now.content_hash[:12]} (pooling {now.pooling}, max length {now.max_length}); "
                "refit the reward or restore that model")

    def for_workers(self) -> Reward:
        """A light copy to ship to Dask workers: a frozen encoder travels by name and identity
        (each worker loads it once), a fine-tuned text model travels whole."""
        import copy

        light = copy.copy(self)
        if not self.finetuned:
            light._features = None
        return light

    def worker_features(self, load) -> Encoder:
        """The feature extractor on a worker: ``load(name, identity)`` for a frozen encoder."""
        if self.finetuned:
            return self._features
        return load(self._features_name, self.expected_identity)

    def score(self, texts: Sequence[str], return_se: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """r(x) for each text; with ``return_se`` also its standard error (linear naive and
        deconfound rewards; see :mod:`deconfoundlm.glm.sandwich`).

        ``texts`` is a sequence of strings: a single string is refused (it would be scored
        character by character)."""
        texts = text_list(texts, "reward.score")
        if not texts:  # nothing to encode: an empty result, as the server answers []
            empty = np.zeros(0, dtype=float)
            return (empty, empty.copy()) if return_se else empty
        phi = encode_in_chunks(self.features, texts)
        r = self.estimator.reward(phi)
        return (r, self.estimator.reward_se(phi)) if return_se else r

    def setting(self, at: Mapping[str, Any]) -> pd.DataFrame:
        """A confounder setting (``{"test_week": 201410}``) checked against this reward's design."""
        design = self.estimator.design_
        if design is None:
            raise UserError(f"{label('at')}: this {self.method} reward has no confounders to set; a predicted outcome "
                            "needs a deconfound or confounder-input reward")
        return design.setting({str(k): str(v) for k, v in at.items()})

    def predict(self, texts: Sequence[str], at: Mapping[str, Any]) -> np.ndarray:
        """The predicted outcome of each text under the confounder setting ``at`` (every confounder
        of the reward set, e.g. ``{"test_week": 201410}``): a click-through rate for a binomial
        reward (per trial), a rate per unit of exposure (poisson), the outcome (gaussian)."""
        texts = text_list(texts, "reward.predict")
        setting = self.setting(at)
        if not texts:
            return np.zeros(0, dtype=float)
        return self.estimator.predict_outcome(encode_in_chunks(self.features, texts), setting)

    def pessimistic_score(self, texts: Sequence[str], k: float) -> np.ndarray:
        """r(x) - k se(x): a ranking that cannot profit from texts whose reward is uncertain."""
        if k == 0:
            return self.score(texts)
        r, se = self.score(texts, return_se=True)
        return r - k * se

    @property
    def has_se(self) -> bool:
        return getattr(self.estimator, "text_cov_", None) is not None

    def deconfounded_labels(self, log: ObservationalLog) -> np.ndarray:
        """link(y) - g^(c) for the rows of a log (raw link(y) when the model has no g)."""
        if not log.roles.confounders or self.method == "naive":
            return self.estimator.deconfounded_labels(log.outcome, pd.DataFrame(index=range(len(log))), log.trials)
        return self.estimator.deconfounded_labels(log.outcome, log.confounders, log.trials)

    def model_card(self) -> str:
        """README.md of an exported ``text_model/``: what it is, what its logit means, how to use it."""
        est, m = self.estimator, self.metrics
        fam = est.family_
        scale = {"binomial": "log-odds", "bernoulli": "log-odds", "poisson": "log rate"}.get(fam, "outcome units")
        conf = ", ".join(f"`{c.column}` ({c.type})" for c in self.roles.confounders) or "none"
        max_length = getattr(self._features, "max_length", None)
        return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [reward-model, deconfoundlm, causal-inference]
---
# Reward model ({self.method}, fine-tuned by deconfoundlm)

A one-logit sequence classifier fine-tuned from `{self._features_name}` by
[deconfoundlm](https://arxiv.org/abs/2506.00152) (DeconfoundLM, Loghmani 2025) on an observational log.

| | |
|---|---|
| method | {self.method} |
| outcome | `{self.roles.outcome}`{f" out of `{self.roles.trials}`" if self.roles.trials else ""} ({fam} family) |
| text column | `{self.roles.text}` |
| confounders (their effect g(c) was fitted jointly and is **not** in the logit) | {conf} |
| rows | {m.get("n_rows", "?")} |
| held-out deviance | {m.get("cv_deviance", "?")} |
| data fingerprint | `{self.info.get("data_fingerprint", "?")}` |
| center | {est.center_!r} |
| max length (tokens) used to fit and score | {max_length} |

**What the logit means.** `logits[:, 0]` is the text's effect on the outcome on the {scale} scale,
plus the center: the reward `deconfoundlm score` gives is `r(x) = logit - center`
(mean 0 over the training texts). Differences between texts are differences in {scale};
the center only matters for absolute values.

**Use.** With transformers: `AutoModelForSequenceClassification.from_pretrained(PATH)` and its
tokenizer (which truncates at {max_length} tokens, as in training); as a TRL reward model, pass the
folder to `GRPOTrainer(reward_funcs=PATH)`. With deconfoundlm: `deconfoundlm.load_reward(REWARD_DIR)`
on the folder above this one (it checks the weights against the recorded content hash).

**Assumptions.** The reward is causal only if every confounder of text and outcome is among the ones
above (no unobserved confounding), their effect is additive on the {scale} scale, and the texts vary
within confounder strata (overlap). See `deconfoundlm diagnose` and `deconfoundlm sensitivity`.
"""

    def save(self, directory: str | Path, force: bool = False, inputs: Sequence[str | Path | None] = ()) -> None:
        with atomic_directory(directory, force=force, kind=REWARD_DIR, inputs=inputs) as tmp:
            extra: dict[str, Any] = {"encoder": self._features_name, "roles": self.roles.to_dict(),
                                     "versions": _package_versions(), **self.info}
            if self.finetuned:
                self._features.save(tmp / TEXT_MODEL_DIR, card=self.model_card())
                extra["text_model"] = self._features.describe(tmp / TEXT_MODEL_DIR)
            else:
                extra["backbone"] = self.features.identity().to_dict()
            self.estimator.save(tmp, extra_config=extra)
            write_json(self.metrics, tmp / METRICS_FILE)


def load_reward(directory: str | Path) -> Reward:
    """Load a reward model directory written by :func:`fit_reward` / ``deconfoundlm fit-reward``.

    The directory is untrusted input: see :mod:`deconfoundlm.rewards.artifact`."""
    estimator, config = load_estimator(directory)
    if "encoder" not in config or "roles" not in config:
        raise UserError(f"{directory}: not a valid deconfoundlm reward model: config.json has no encoder and "
                        "column roles (a bare estimator; load it with RewardEstimator.load)")
    metrics_path = Path(directory) / METRICS_FILE
    metrics: dict[str, Any] = {}
    if metrics_path.is_file():
        try:
            metrics = read_json(metrics_path)
        except (OSError, ValueError):
            raise UserError(f"{directory}: not a valid deconfoundlm reward model: {METRICS_FILE} is not "
                            "valid JSON") from None
        if not isinstance(metrics, dict):
            raise UserError(f"{directory}: not a valid deconfoundlm reward model: {METRICS_FILE} must "
                            "hold a JSON object")
    info = {k: config[k] for k in ("data_fingerprint", "data") if isinstance(config.get(k), str)}
    for record in ("grounding", "tests_only"):
        if isinstance(config.get(record), dict):
            info[record] = config[record]
    roles = ColumnRoles.from_dict(config["roles"])
    if "text_model" in config:
        features = TextModelFeatures.load(Path(directory) / TEXT_MODEL_DIR, config["text_model"],
                                          n_features=estimator.n_features_in_)
        return Reward(estimator, features, roles, metrics, info)
    check_encoder_name(config["encoder"], flag=f"{directory}: encoder")
    reward = Reward(estimator, config["encoder"], roles, metrics, info)
    reward.expected_identity = config.get("backbone")
    return reward


def fit_reward(data: str | Path | pd.DataFrame, config: FitConfig | None = None, /, **options: Any) -> Reward:
    """Fit a reward model on an observational log and (if ``out``) save it: the one fit path of
    the CLI, the Python API, the demo and the benchmark. Every option and the log's rows are
    checked before any model is loaded; bad input raises :class:`~deconfoundlm.errors.UserError`.

    Parameters
    ----------
    data : str, Path or DataFrame
        The log: a CSV / Parquet / JSONL file, a DataFrame, or with ``dask`` a folder or glob of
        Parquet files.
    config : FitConfig, optional
        The options (:class:`~deconfoundlm.configs.FitConfig`): the columns (``text``, ``outcome``,
        ``trials``, ``confounders`` as "COL:TYPE", a dict or ConfounderSpec objects, ``weights``,
        ``group``), ``method``, ``estimator``, ``family``, ``encoder`` (a name, a folder or an
        encoder object), ``head``, ``cv``, ``seed``, ``out`` and ``force``, ``dask``, ``ab`` and
        ``test`` (ground the reward on randomized A/B tests; ``test`` without ``ab``: ``data``
        holds randomized tests and the reward is their own fit), ``finetune`` (True or a
        FinetuneConfig), ``diagnose`` and ``params`` (further options of the method's estimator).
    **options
        The same options as keywords; they replace the config's
        (``fit_reward(df, text="headline", outcome="clicks", confounders=["week:time"])``).

    Returns
    -------
    Reward
        ``score(texts)``, ``predict(texts, at)``, ``metrics`` and ``save``.
    """
    cfg = FitConfig.of(config, options)
    if cfg.test is not None and cfg.ab is None:
        return _fit_own_tests(data, cfg)
    log_data = LogData.of(data, cfg)
    roles = log_data.roles
    method, family, encoder, finetune = cfg.method, cfg.family, cfg.encoder, _finetune_config(cfg)
    # Options first (nothing read yet), then the method's own checks, then the log.
    inputs = log_data.check(cfg, need_confounders="method 'deconfound' needs at least one --confounder COL:TYPE"
                            if method == "deconfound" else None)
    est_params: dict[str, Any] = {"family": family, "seed": cfg.seed, "cv": cfg.cv, **(cfg.params or {})}
    if cfg.invariance_weight is not None:
        est_params["invariance_weight"] = cfg.invariance_weight
    if method == "deconfound":
        est_params["estimator"] = cfg.estimator
    if cfg.head is not None:
        est_params["head"] = cfg.head
    est = make_estimator(method, **est_params)
    if cfg.group is not None and finetune is None and not est.supports_se():
        raise UserError(f"{label('group')} (cluster-robust standard errors) applies to the linear heads of naive and "
                        f"deconfound, which have standard errors; not {label('method')} {method}"
                        + (f" {label('head')} {cfg.head}" if cfg.head not in (None, "linear") else ""))
    if est.needs_confounders and not roles.confounders:
        raise UserError(f"method {method!r} needs at least one {label('confounder')} COL:TYPE")
    if finetune is not None:
        check_finetune(finetune, method, encoder, cfg.head)
    tests = None
    if cfg.ab is not None or cfg.test is not None:
        check_groundable(method, cfg.head, finetune is not None)
        tests = read_tests(cfg.ab, cfg.test, roles, family)
    if tests is not None:
        inputs.append(None if isinstance(cfg.ab, pd.DataFrame) else cfg.ab)
    if cfg.dask is not None:
        return _fit_on_cluster(log_data, cfg, est, finetune=finetune, inputs=inputs, tests=tests)
    log, _ = log_data.read(family, cfg.cv)
    if tests is not None:
        resolved = check_log_family(log, family)
        check_tests_family(tests, log, resolved)
        check_tests_evidence(tests, resolved)
    if finetune is not None:
        from deconfoundlm.rewards.finetune import finetune_reward

        features, est, phi = finetune_reward(log, est, encoder, finetune, seed=cfg.seed)
    else:
        features = get_encoder(encoder) if isinstance(encoder, str) else encoder
        phi = encode_in_chunks(features, log.texts)
        est.fit(phi, log.outcome, confounders=log.confounders, specs=roles.confounders,
                trials=log.trials, sample_weight=log.weights, groups=log.groups, se=cfg.se)
    grounding = None if tests is None else _ground(est, phi, features, tests, cfg.cv, cfg.seed, log.texts)
    metrics = _metrics(est, cfg, len(log), finetune)
    metrics["null_deviance"] = _null_deviance(log, est.family_)
    if cfg.diagnose and roles.confounders:
        metrics["diagnostics"] = _fit_diagnostics(log, phi, est, cfg.cv, cfg.seed)
    info = {"data_fingerprint": log.fingerprint(),
            "data": str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>"}
    _record_grounding(metrics, info, grounding, tests)
    reward = Reward(est, features, roles, metrics, info=info)
    if cfg.out is not None and is_main_process():
        reward.save(cfg.out, force=cfg.force, inputs=inputs)
    return reward


def _fit_own_tests(data: str | Path | pd.DataFrame, cfg: FitConfig) -> Reward:
    """``fit-reward TESTS --test COL``: the reward of the randomized tests alone, one intercept per
    test (:func:`~deconfoundlm.rewards.grounding.own_tests_reward`; the learning curve's tests-only
    reward). Checked like a log (columns, rows, family, ``--out``) before the encoder is loaded."""
    source = LogData.of(data, cfg)
    inputs = source.check(cfg)
    tests = load_randomized_tests(data, source.roles, cfg.test, flag="")
    family = check_log_family(tests.log, cfg.family)
    check_tests_evidence(tests, family, flag="")
    features = get_encoder(cfg.encoder) if isinstance(cfg.encoder, str) else cfg.encoder
    est, record = own_tests_reward(_ab_features(tests, features), family=family, cv=cfg.cv, seed=cfg.seed)
    metrics = _metrics(est, cfg, len(tests), None)
    metrics["null_deviance"] = record.pop("null_deviance")
    metrics["tests_only"] = {"test": tests.test_column, **record}
    info = {"data_fingerprint": tests.log.fingerprint(), "data": tests.source,
            "tests_only": {"test": tests.test_column, "tests": record["tests"], "rows": record["rows"],
                           "strength": record["strength"], "test_digests": tests.test_digests()}}
    reward = Reward(est, features, ColumnRoles(text=source.roles.text, outcome=source.roles.outcome,
                                               trials=source.roles.trials, weights=source.roles.weights),
                    metrics, info=info)
    if cfg.out is not None and is_main_process():
        reward.save(cfg.out, force=cfg.force, inputs=inputs)
    return reward


def _finetune_config(cfg: FitConfig) -> FinetuneConfig | None:
    """The fine-tuning settings of ``cfg.finetune`` (True: the defaults and the config's own)."""
    if cfg.finetune is False or cfg.finetune is None:
        return None
    if cfg.finetune is not True:
        return cfg.finetune
    ft = FinetuneConfig(lora=cfg.lora)
    for name in ("epochs", "learning_rate", "batch_size", "max_length"):
        if getattr(cfg, name) is not None:
            setattr(ft, name, getattr(cfg, name))
    return ft


def describe_fit(reward: Reward, cfg: FitConfig) -> str:
    """What ``fit-reward`` did, in a few lines (the family chosen, the fit, the confounders' terms,
    the diagnostics and the grounding)."""
    m, lines = reward.metrics, []
    if cfg.family == "auto" and m["family"] == "poisson":
        lines.append(f"family: poisson (auto: {cfg.outcome!r} is a non-negative integer count without --trials; "
                     "pass --family gaussian to model it as a continuous outcome)")
    if "tests_only" in m:
        t = m["tests_only"]
        lines.append(f"fitted the reward of {t['tests']} randomized A/B tests alone ({m['family']}, {t['rows']} rows; one "
                     f"intercept per test, so only the differences within a test count; strength alpha "
                     f"{t['strength']:g} by {t['cv_folds']}-fold CV over whole tests, held-out deviance "
                     f"{m['cv_deviance']:.6g} against {m['null_deviance']:.6g} without the text) -> {cfg.out}")
        if t["strength"] >= max(row["alpha"] for row in t["cv_table"]):
            lines.append("these tests barely tell the texts apart: the strongest penalty tried won, so the reward's "
                         "differences between texts are small; more tests, or your log with these tests as "
                         f"{label('ab')}, would tell more")
    elif "finetune" in m:
        ft = m["finetune"]
        lines.append(f"fine-tuned {cfg.method} reward on {cfg.encoder} ({m['family']}, {ft['train_rows']} training + "
                     f"{ft['heldout_rows']} held-out rows, {ft['epochs_run']} epoch(s), held-out deviance "
                     f"{m['cv_deviance']:.6g}) -> {cfg.out}")
    else:
        lines.append(f"fitted {cfg.method} reward ({m['family']}, {m['n_rows']} rows, CV deviance "
                     f"{m['cv_deviance']:.6g}, alpha {m['alpha']:g}) -> {cfg.out}")
    if reward.estimator.design_ is not None:
        lines.append("confounder terms: " + "; ".join(reward.estimator.design_.terms()))
    if "invariance_weight" in m:
        lines.append(f"invariance weight {m['invariance_weight']:g} ({m['invariance_weight_from']})")
    d = m.get("diagnostics")
    if d is not None and d.get("confounder_deviance_share") is None:
        lines.append(d.get("note", "diagnostics not estimated"))
    elif d is not None:
        ent = ", ".join(f"{k} {v:.3f}" for k, v in d["entanglement_r2"].items())
        lines.append(f"confounders explain {100 * d['confounder_deviance_share']:.1f}% of outcome deviance; "
                     f"entanglement (CV R^2 from text): {ent}")
    if "grounding" in m:
        g = m["grounding"]
        why = f"; chosen by {g['choice']}" if g["choice"] in (CHOICES["min"], CHOICES["identified"]) else ""
        if g["strength"] is None:
            how = (f"kept the log's reward (rescaled by {g['log_scale']:.2f}); the tests' correction did not "
                   f"improve held-out tests{why}")
        elif g["log_scale"] == 0:
            how = (f"the tests' own fit (strength alpha {g['strength']:g}{why}): the log's reward got weight 0, "
                   "these tests do not support it")
        else:
            how = (f"log's reward x {g['log_scale']:.2f} + a correction from the tests (strength alpha "
                   f"{g['strength']:g}{why})")
        lines.append(f"grounded on {g['tests']} A/B tests ({g['rows']} rows, {g['cv_folds']}-fold CV over tests): "
                     f"{how}\ncalibration of the log's reward on these tests: {g['calibration']['verdict']}")
        if isinstance(g.get("tests_in_log"), dict) and g["tests_in_log"]["tests"]:
            lines.append(in_sample_note(g["tests_in_log"]["tests"], g["tests_in_log"]["of"]))
    return "\n".join(lines)


def read_tests(ab: str | Path | pd.DataFrame | None, test: str | None, roles: ColumnRoles, family: str = "auto",
               log: ObservationalLog | None = None) -> RandomizedTests:
    """The user's randomized A/B tests (``--ab AB --test COL``), read with the log's column roles
    and checked before any model is loaded: their outcome fits ``family`` (when known) and, with
    the validated ``log``, their texts and outcomes are of the log's kind."""
    if ab is None:
        raise UserError(f"{label('test')} names the test column of {label('ab')} AB_FILE; give {label('ab')} too")
    if test is None:
        raise UserError(f"{label('ab')} needs {label('test')} COL: the column naming each row's randomized test")
    tests = load_randomized_tests(ab, roles, test)
    if family != "auto":
        check_tests_family(tests, log, family)
    return tests


def check_tests_family(tests: RandomizedTests, log: ObservationalLog | None, family: str) -> None:
    """The tests' outcomes fit the log's family (and, given the log, are of the log's kind)."""
    r = tests.log.roles
    try:
        resolve_family(family, tests.log.outcome, tests.log.trials, column=r.outcome,
                       trials_column=r.trials or "trials")
    except UserError as exc:
        raise UserError(f"{label('ab')} {tests.source}: {exc} (the log's family is {family})") from None
    if log is not None:
        check_like_log(tests, log)


def check_tests_evidence(tests: RandomizedTests, family: str, flag: str = "--ab") -> None:
    """At least two of the tests have outcomes that can tell their texts apart under ``family``:
    a test with no success in any row (or only successes; a count of 0 in every row for poisson)
    fits its own intercept at infinity and says nothing about its texts. Such tests are left out
    of every fit (:meth:`~deconfoundlm.glm.grounding.ABRows.informative`): named in a warning,
    or a UserError (after ``flag`` and the file) when fewer than two others remain."""
    ab, fam, T = tests.log, get_family(family), tests.n_tests
    ones = np.ones(len(ab))
    w = ones if ab.weights is None else np.asarray(ab.weights, float)
    n = ones if ab.trials is None else np.asarray(ab.trials, float)
    swy = np.bincount(tests.codes, w * np.asarray(ab.outcome, float), minlength=T)
    empty = fam.at_boundary(swy, np.bincount(tests.codes, w * n, minlength=T))
    if not empty.any():
        return
    where = f"{flag} {tests.source}" if flag else tests.source
    what = "a count of 0 in every row" if fam.name == "poisson" else "no success in any row, or only successes"
    kept = T - int(empty.sum())
    if kept < 2:
        raise UserError(f"{where}: {kept} of the {T} tests with two or more texts have outcomes that tell their texts "
                        f"apart; the others have {what} ({fam.name}), which says nothing about the texts. At least 2 "
                        f"are needed: check {label('outcome')} {ab.roles.outcome!r}")
    warnings.warn(f"{where}: left out {int(empty.sum())} test(s) with {what} ({fam.name}): they say nothing about "
                  "their texts", DataWarning, stacklevel=2)


def _ground(est: RewardEstimator, phi_log: np.ndarray | None, features: Encoder, tests: RandomizedTests, cv: int,
            seed: int, log_texts: list[str]) -> dict[str, Any]:
    """Encode the tests' texts and ground the fitted reward on them (in place); ``tests_in_log``
    counts the tests holding a text among ``log_texts`` (the log's: for them the calibration is
    partly in-sample)."""
    grounding = ground_reward(est, phi_log, _ab_features(tests, features), family=est.family_, cv=cv, seed=seed)
    grounding["tests_in_log"] = {"tests": tests.tests_holding(log_texts), "of": tests.n_tests}
    return grounding


def _ab_features(tests: RandomizedTests, features: Encoder) -> ABFeatures:
    """The tests' rows with their texts encoded and a text id per row (the arms pooled by grounding)."""
    ab = tests.log
    arm = np.unique(np.asarray(ab.texts, dtype=object).astype(str), return_inverse=True)[1]
    return ABFeatures(encode_in_chunks(features, ab.texts), tests.codes, ab.outcome, ab.trials, ab.weights, arm)


def _record_grounding(metrics: dict, info: dict, grounding: dict | None, tests: RandomizedTests | None) -> None:
    if grounding is None:
        return
    metrics["grounding"] = grounding
    info["grounding"] = {"ab": tests.source, "test": tests.test_column, "ab_fingerprint": tests.log.fingerprint(),
                         "tests": grounding["tests"], "rows": grounding["rows"], "strength": grounding["strength"],
                         "log_scale": grounding["log_scale"], "calibration_slope": grounding["calibration"]["slope"],
                         "test_digests": tests.test_digests()}


def _fit_on_cluster(log_data: LogData, cfg: FitConfig, est: RewardEstimator, *, finetune, inputs,
                    tests: RandomizedTests | None = None) -> Reward:
    from deconfoundlm.distributed.fit import check_supported, fit_on_cluster

    check_supported(est, encoder=cfg.encoder, group=cfg.group, finetune=finetune)
    data, roles = log_data.source, log_data.roles
    want_sample = cfg.diagnose and bool(roles.confounders)
    with log_data.cluster() as client:
        got = fit_on_cluster(client, data, roles, est, cfg, sample_rows=DIAGNOSTIC_ROWS if want_sample else 0,
                             find_texts=None if tests is None else tests.log.texts)
    est = got.estimator
    metrics = _metrics(est, cfg, got.n_rows, finetune)
    metrics["dask"] = {"rows": got.n_rows}
    if want_sample and got.sample is not None:
        sample_log, phi = got.sample
        metrics["diagnostics"] = _fit_diagnostics(sample_log, phi, est, cfg.cv, cfg.seed, sampled=True)
    grounding = None
    if tests is not None:
        check_tests_family(tests, None, est.family_)
        check_tests_evidence(tests, est.family_)
        encoder = get_encoder(cfg.encoder) if isinstance(cfg.encoder, str) else cfg.encoder
        grounding = _ground(est, None, encoder, tests, cfg.cv, cfg.seed, sorted(got.texts_found))
    info = {"data_fingerprint": got.fingerprint, "data": str(data)}
    _record_grounding(metrics, info, grounding, tests)
    reward = Reward(est, cfg.encoder, roles, metrics, info=info)
    if cfg.out is not None:
        reward.save(cfg.out, force=cfg.force, inputs=inputs)
    return reward


def _metrics(est: RewardEstimator, cfg: FitConfig, n_rows: int, finetune) -> dict[str, Any]:
    group = cfg.group
    metrics: dict[str, Any] = {
        "method": cfg.method, "family": est.family_, "family_from": "auto" if cfg.family == "auto" else "--family",
        "n_rows": n_rows,
        "cv_deviance": est.cv_deviance_, "alpha": est.alpha_, "cv_folds": cfg.cv,
    }
    if finetune is not None:
        metrics["finetune"] = est.finetune_metrics_
    if getattr(est, "invariance_weight_", None) is not None:
        metrics["invariance_weight"] = est.invariance_weight_
        metrics["invariance_weight_from"] = "--invariance-weight" if est.invariance_weight is not None else \
            "one-standard-error rule on CV deviance"
        metrics["invariance_weight_table"] = est.weight_table_
    if getattr(est, "text_cov_", None) is not None:
        metrics["standard_errors"] = est.se_method_ + (f" by {group!r}" if group else "")
    return metrics


def _check_se(reward: Reward, model_dir: str | Path) -> None:
    """``--se`` needs a reward with standard errors (UserError naming the folder otherwise)."""
    if not reward.has_se:
        raise UserError(f"{label('se')}: {model_dir} has no standard errors (they exist for the linear heads of naive "
                        "and deconfound rewards fitted on a log alone; a reward grounded on A/B tests or fitted to "
                        "them has none)")


def _null_deviance(log: ObservationalLog, family: str) -> float:
    """Mean deviance of the intercept-only model on the log (the scale of ``cv_deviance``: a
    report's deviance explained is 1 - cv_deviance / null_deviance)."""
    fam = get_family(family)
    n = np.ones(len(log)) if log.trials is None else np.asarray(log.trials, float)
    w = np.ones(len(log)) if log.weights is None else np.asarray(log.weights, float)
    y = np.asarray(log.outcome, float)
    return fam.deviance(np.full(len(log), fam.null_eta_of(y, n, w)), y, n, w)


def _fit_diagnostics(log: ObservationalLog, phi: np.ndarray, est: RewardEstimator, cv: int, seed: int,
                     sampled: bool = False) -> dict:
    """Confounder strength and entanglement of the log (a seeded subsample on large logs;
    ``sampled``: the log is that subsample already, taken on a cluster)."""
    rows = np.arange(len(log))
    if len(rows) > DIAGNOSTIC_ROWS and not sampled:  # the same rows as on a cluster (--dask)
        rows = np.flatnonzero(diagnostic_sample(rows, len(rows), DIAGNOSTIC_ROWS, seed))
    if len(rows) < diagnostics.MIN_ROWS:
        return {"rows_used": len(rows), "confounder_deviance_share": None,
                "entanglement_r2": {c.column: None for c in log.roles.confounders},
                "note": diagnostics.too_few_rows(len(rows))}
    conf = log.confounders.iloc[rows].reset_index(drop=True)
    design = est.design_ or ConfounderDesign(log.roles.confounders).fit(log.confounders)
    psi = design.transform(conf)
    targets = pack_targets(log.outcome, log.trials, log.weights)[rows]
    return {
        "rows_used": len(rows),
        "confounder_deviance_share": diagnostics.confounder_deviance_share(est.family_, psi, targets, cv, seed),
        "entanglement_r2": diagnostics.entanglement(phi[rows].astype(np.float64), conf, log.roles.confounders,
                                                    cv, seed),
    }


SCORE_CHUNK_ROWS = 100_000  # rows read, scored and written at a time


# -- scoring files ------------------------------------------------------------------------------
def score_file(model_dir: str | Path, data: str | Path, config: ScoreConfig | None = None, /, **options: Any) -> int:
    """Write every input row and column plus a float column ``reward``; returns the row count.
    The options (:class:`~deconfoundlm.configs.ScoreConfig`, or the same as keywords): ``text``
    (the column), ``out`` and ``force``; with ``se`` also ``reward_se``; with ``at`` (a confounder
    setting, see :meth:`Reward.predict`) also ``predicted``, the predicted outcome of each text under
    that setting.

    Reads, encodes, scores and writes chunk by chunk; the output appears only when complete.
    With ``dask`` (a scheduler address or ``local[:N]``) the partitions are scored on the
    cluster and ``out`` is a folder of Parquet files (:mod:`deconfoundlm.distributed.score`).
    """
    cfg = ScoreConfig.of(config, options)
    text, out, force, se, at, chunksize = cfg.text, cfg.out, cfg.force, cfg.se, cfg.at, SCORE_CHUNK_ROWS
    inputs = [data, model_dir]
    if cfg.dask is not None:
        return _score_on_cluster(model_dir, data, cfg, inputs)
    table_format(out)
    check_output(out, force, TABLE_FILE, inputs)
    columns = table_columns(data)
    require_columns(columns, [text], str(data))
    reward = load_reward(model_dir)
    if se:
        _check_se(reward, model_dir)
    setting = None if at is None else reward.setting(at)
    for added in ("reward", *(["reward_se"] if se else []), *(["predicted"] if at is not None else [])):
        if added in columns:
            warnings.warn(f"{data}: existing column {added!r} is replaced", DataWarning, stacklevel=2)
    writer = TableWriter(out, force=force, inputs=inputs)
    n = n_missing = chunks = 0
    try:
        for df in tqdm(iter_table(data, chunksize=chunksize), desc="scoring", unit="chunk", disable=disable()):
            scored, missing = score_frame(df, text, reward.features, reward.estimator, se=se, chunk=50_000, at=setting)
            writer.write(scored)
            n, n_missing, chunks = n + len(df), n_missing + missing, chunks + 1
        if not chunks:  # a table with a header and no rows: the same header, plus the added columns, no rows
            empty = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
            writer.write(score_frame(empty, text, reward.features, reward.estimator, se=se, at=setting)[0])
    except BaseException:
        writer.abort()
        raise
    writer.close()
    if n_missing:
        warnings.warn(f"{n_missing} row(s) with a missing {text!r} are scored as the empty text", DataWarning,
                      stacklevel=2)
    if not n:
        warnings.warn(f"{data} has no rows: {out} holds its columns and no rows", DataWarning, stacklevel=2)
    return n


def _score_on_cluster(model_dir, data, cfg: ScoreConfig, inputs) -> int:
    from deconfoundlm.distributed.cluster import check_dask, dask_client
    from deconfoundlm.distributed.score import score_on_cluster

    out, force, se, dask, at = cfg.out, cfg.force, cfg.se, cfg.dask, cfg.at
    check_dask(dask)
    if Path(out).suffix.lower() in (".csv", ".jsonl", ".json", ".parquet"):
        raise UserError(f"{label('out')} {out}: with {label('dask')} the scores are a folder of Parquet files; give a folder name")
    check_output(out, force, PARQUET_DIR, inputs)
    reward = load_reward(model_dir)
    if se:
        _check_se(reward, model_dir)
    setting = None if at is None else reward.setting(at)
    with dask_client(dask) as client:
        n = score_on_cluster(client, reward, data, cfg, inputs, at=setting)
    if not n:
        warnings.warn(f"{data} has no rows: {out} holds its columns and no rows", DataWarning, stacklevel=2)
    return n
