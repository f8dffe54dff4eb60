"""The user-facing reward: encoder + estimator + column roles, saved as one directory.

``fit_reward(...)`` goes data -> encode -> confounder design -> reward fit; ``load_reward(dir)``
gives back an object whose ``score(texts)`` returns identical rewards.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deconfoundlm.checks import check_folds, check_seed
from deconfoundlm.errors import UserError
from deconfoundlm.evaluation import diagnostics
from deconfoundlm.features.text import Encoder, check_encoder_name, encode_in_chunks, get_encoder
from deconfoundlm.logs.roles import ColumnRoles, ConfounderSpec
from deconfoundlm.logs.validate import ObservationalLog, load_log, validate_log
from deconfoundlm.outputs import REWARD_DIR, atomic_directory, check_output, read_json, write_json
from deconfoundlm.rewards import RewardEstimator, load_estimator, make_estimator
from deconfoundlm.rewards.families import FAMILIES, resolve_family
from deconfoundlm.rewards.glm import pack_targets

_pkg = "deconfoundlm"
METRICS_FILE = "metrics.json"
DIAGNOSTIC_ROWS = 50_000


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in (_pkg, "torch", "scikit-learn", "numpy", "pandas", "sentence-transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def parse_confounders(confounders: Iterable[str | ConfounderSpec] | Mapping[str, str] | None) -> tuple[ConfounderSpec, ...]:
    """Accept ``["week:time"]``, ``{"week": "time"}`` or ConfounderSpec objects."""
    if confounders is None:
        return ()
    if isinstance(confounders, Mapping):
        return tuple(ConfounderSpec(c, t) for c, t in confounders.items())
    return tuple(c if isinstance(c, ConfounderSpec) else ConfounderSpec.parse(c) for c in confounders)


class Reward:
    """A fitted reward model: ``score(texts)`` -> r(x) (log-odds or outcome units, mean 0 over
    the training texts). Use :func:`fit_reward` / :func:`load_reward` to get one."""

    def __init__(self, estimator: RewardEstimator, encoder: str, roles: ColumnRoles,
                 metrics: dict[str, Any] | None = None, info: dict[str, Any] | None = None):
        self.estimator = estimator
        self.encoder_name = encoder
        self.roles = roles
        self.metrics = metrics or {}
        self.info = info or {}
        self._encoder: Encoder | None = None

    @property
    def method(self) -> str:
        return self.estimator.method

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = get_encoder(self.encoder_name)
        return self._encoder

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.estimator.score(encode_in_chunks(self.encoder, [str(t) for t in texts]))

    def deconfounded_labels(self, log: ObservationalLog) -> np.ndarray:
        """link(y) - g^(c) for the rows of a log (raw link(y) when the model has no g)."""
        if not log.roles.confounders or self.method == "naive":
            return self.estimator.deconfounded_labels(log.outcome, pd.DataFrame(index=range(len(log))), log.trials)
        return self.estimator.deconfounded_labels(log.outcome, log.confounders, log.trials)

    def save(self, directory: str | Path, force: bool = False, inputs: Sequence[str | Path | None] = ()) -> None:
        with atomic_directory(directory, force=force, kind=REWARD_DIR, inputs=inputs) as tmp:
            self.estimator.save(tmp, extra_config={
                "encoder": self.encoder_name,
                "roles": self.roles.to_dict(),
                "versions": _package_versions(),
                **self.info,
            })
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
    check_encoder_name(config["encoder"], flag=f"{directory}: encoder")
    return Reward(estimator, config["encoder"], ColumnRoles.from_dict(config["roles"]), metrics, info)


def fit_reward(
    data: str | Path | pd.DataFrame,
    *,
    text: str,
    outcome: str,
    trials: str | None = None,
    confounders: Iterable[str | ConfounderSpec] | Mapping[str, str] | None = None,
    weights: str | None = None,
    method: str = "deconfound",
    estimator: str = "joint",
    family: str = "auto",
    encoder: str = "minilm",
    head: str | None = None,
    seed: int = 0,
    cv: int = 5,
    out: str | Path | None = None,
    force: bool = False,
    diagnose: bool = True,
) -> Reward:
    """Fit a reward model on an observational log and (if ``out``) save it.

    ``data`` is a CSV / Parquet / JSONL path or a DataFrame. ``confounders`` are ``COL:TYPE``
    strings (TYPE: categorical, numeric, time). Returns a :class:`Reward`.
    """
    check_seed(seed)
    check_encoder_name(encoder)
    roles = ColumnRoles(text=text, outcome=outcome, trials=trials, weights=weights,
                        confounders=parse_confounders(confounders))
    if out is not None:  # fail before any work, not after
        check_output(out, force, REWARD_DIR, inputs=[None if isinstance(data, pd.DataFrame) else data])
    if method == "deconfound" and not roles.confounders:
        raise UserError("method 'deconfound' needs at least one --confounder COL:TYPE")
    if family not in ("auto", *FAMILIES):
        raise UserError(f"--family {family!r}: use auto or one of " + ", ".join(FAMILIES))
    log = validate_log(data, roles) if isinstance(data, pd.DataFrame) else load_log(data, roles)
    check_folds(cv, len(log))
    resolve_family(family, log.outcome, log.trials, column=outcome)
    params: dict[str, Any] = {"family": family, "seed": seed, "cv": cv}
    if method == "deconfound":
        params["estimator"] = estimator
    elif estimator != "joint":
        raise UserError(f"--estimator applies to --method deconfound only, not {method!r}")
    if head is not None:
        params["head"] = head
    est = make_estimator(method, **params)
    if est.needs_confounders and not roles.confounders:
        raise UserError(f"method {method!r} needs at least one --confounder COL:TYPE")
    enc = get_encoder(encoder)
    phi = encode_in_chunks(enc, log.texts)
    est.fit(phi, log.outcome, confounders=log.confounders, specs=roles.confounders,
            trials=log.trials, sample_weight=log.weights)
    metrics: dict[str, Any] = {
        "method": method, "family": est.family_, "n_rows": len(log),
        "cv_deviance": est.cv_deviance_, "alpha": est.alpha_, "cv_folds": cv,
    }
    if diagnose and roles.confounders:
        # On large logs the diagnostics use a seeded subsample of rows (they are summaries).
        rows = np.arange(len(log))
        if len(rows) > DIAGNOSTIC_ROWS:
            rows = np.sort(np.random.default_rng(seed).choice(len(log), DIAGNOSTIC_ROWS, replace=False))
        conf = log.confounders.iloc[rows].reset_index(drop=True)
        psi = est.design_.transform(conf)
        targets = pack_targets(log.outcome, log.trials, log.weights)[rows]
        if len(rows) < diagnostics.MIN_ROWS:
            metrics["diagnostics"] = {"rows_used": len(rows), "confounder_deviance_share": None,
                                      "entanglement_r2": {c.column: None for c in roles.confounders},
                                      "note": diagnostics.too_few_rows(len(rows))}
        else:
            metrics["diagnostics"] = {
                "rows_used": len(rows),
                "confounder_deviance_share": diagnostics.confounder_deviance_share(est.family_, psi, targets, cv, seed),
                "entanglement_r2": diagnostics.entanglement(phi[rows].astype(np.float64), conf, roles.confounders,
                                                            cv, seed),
            }
    reward = Reward(est, enc.name, roles, metrics,
                    info={"data_fingerprint": log.fingerprint(),
                          "data": str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>"})
    if out is not None:
        reward.save(out, force=force, inputs=[None if isinstance(data, pd.DataFrame) else data])
    return reward
