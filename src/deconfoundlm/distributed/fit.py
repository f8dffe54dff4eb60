"""Fitting, diagnosing and scoring on a Dask cluster (``--dask``).

The fit is the in-memory fit's own solver (:mod:`deconfoundlm.glm.path`) reading
blocks that live on the workers: same folds, same penalty path, same model. What differs is only
where the rows are: each pass over the data is a task per partition and a tree of sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deconfoundlm.configs import DiagnoseConfig, FitConfig
from deconfoundlm.errors import UserError
from deconfoundlm.features.confounders import ConfounderDesign
from deconfoundlm.glm.folds import DIAGNOSTIC_ROWS
from deconfoundlm.glm.path import MAX_DENSE_CONF
from deconfoundlm.logs.roles import ColumnRoles
from deconfoundlm.options import label
from deconfoundlm.rewards.base import RewardEstimator


@dataclass
class ClusterFit:
    """What a fit on the cluster returns to :func:`~deconfoundlm.pipeline.fit_reward`."""

    estimator: RewardEstimator
    n_rows: int
    fingerprint: str
    sample: Any  # (ObservationalLog, phi) of a seeded sample for the diagnostics, or None
    texts_found: set[str] | None = None  # which of the texts asked about (fit_on_cluster's find_texts) the log holds


def check_supported(est: RewardEstimator, *, encoder: Any, group: str | None, finetune: Any) -> None:
    """The options --dask does not take, each refused with the reason (before any work)."""
    if not isinstance(encoder, str):
        raise UserError(f"{label('dask')} needs the encoder by name or path (workers load it themselves)")
    if finetune is not None:
        raise UserError(f"{label('finetune')} does not run on {label('dask')}: fine-tune on one machine or with accelerate launch, "
                        "then score on the cluster")
    if group is not None:
        raise UserError(f"{label('group')} does not run on {label('dask')} yet: cluster-robust standard errors need each cluster's "
                        f"rows together; fit without {label('group')} or on one machine")
    if not est.supports_blocks():
        raise UserError(f"{label('dask')} fits the linear naive and deconfound (joint) rewards; not {label('method')} {est.method}"
                        + (f" {label('head')} {est.head}" if getattr(est, "head", "linear") != "linear" else "")
                        + (f" {label('estimator')} {est.estimator}" if getattr(est, "estimator", "joint") != "joint" else ""))


def _encoder_info(encoder: str) -> tuple[dict, int]:
    """The encoder's identity (recorded, and checked on every worker) and its width."""
    from deconfoundlm.features.text import get_encoder

    enc = get_encoder(encoder)
    return enc.identity().to_dict(), int(enc.encode(["deconfoundlm"]).shape[1])


def _load(client: Any, data: str | Path, roles: ColumnRoles, cv: int, family: str) -> tuple[Any, str]:
    """The validated log on the cluster and its family (auto resolved on the whole log)."""
    from deconfoundlm.checks import check_folds
    from deconfoundlm.distributed.logs import load_distributed_log

    log = load_distributed_log(client, data, roles)
    check_folds(cv, len(log))
    return log, log.resolve_family(family)


def _design(log: Any, roles: ColumnRoles, est: RewardEstimator) -> ConfounderDesign:
    """The confounder design fitted on every row (from the partitions' merged summaries), exactly
    as in memory."""
    design = log.fit_design(ConfounderDesign(roles.confounders, **est.design_options()))
    if design.width() > MAX_DENSE_CONF:
        raise UserError(f"the confounder design has {design.width()} columns; {label('dask')} fits designs of up to "
                        f"{MAX_DENSE_CONF} (fewer levels, e.g. a coarser categorical, or fit on one machine)")
    return design


def fit_on_cluster(client: Any, data: str | Path, roles: ColumnRoles, est: RewardEstimator, cfg: FitConfig, *,
                   sample_rows: int = DIAGNOSTIC_ROWS, find_texts: list[str] | None = None) -> ClusterFit:
    """Validate, encode and fit on the cluster (``cfg``: the encoder, family, folds, seed and
    whether to estimate standard errors);
    returns the fitted estimator, a sample for the diagnostics (``sample_rows`` rows at most;
    0: none) and which of ``find_texts`` (e.g. the A/B tests' texts) the log holds."""
    encoder, cv, seed = cfg.encoder, cfg.cv, cfg.seed
    log, fam = _load(client, data, roles, cv, cfg.family)
    design = _design(log, roles, est) if est.method == "deconfound" else None
    identity, width = _encoder_info(encoder)
    found = None if find_texts is None else log.texts_among(find_texts)  # before blocks() releases the rows
    blocks = log.blocks(design, encoder, identity, cv, seed, width, sample_rows=sample_rows)
    est.fit_blocks(blocks, family=fam, design=design, se=cfg.se)
    blocks.close()
    sample = log.sample(blocks)
    return ClusterFit(est, len(log), log.fingerprint(), sample, found)


@dataclass
class ClusterPair:
    """Both rewards of ``diagnose --dask``, fitted on every row of the cluster's log."""

    naive: RewardEstimator
    deconfound: RewardEstimator
    n_rows: int
    reward_correlation: float | None  # over every row
    sample: Any  # (ObservationalLog, phi) of a seeded sample, or None
    fingerprint: str = ""  # the log's data fingerprint (as in memory)


def fit_pair_on_cluster(client: Any, data: str | Path, roles: ColumnRoles, cfg: DiagnoseConfig,
                        alphas: tuple[float, ...]) -> ClusterPair:
    """The deconfounded reward (penalty by CV) and the naive one at the same penalty, fitted on
    every row (``cfg``: the encoder, family, folds and seed); their correlation over every row; a
    seeded sample for the cross-validated diagnostics
    (:func:`deconfoundlm.evaluation.diagnose.diagnose`)."""
    encoder, family, cv, seed = cfg.encoder, cfg.family, cfg.cv, cfg.seed
    from deconfoundlm.rewards import make_estimator

    log, fam = _load(client, data, roles, cv, family)
    dec = make_estimator("deconfound", family=family, seed=seed, cv=cv, alphas=alphas)
    design = _design(log, roles, dec)
    identity, width = _encoder_info(encoder)
    blocks = log.blocks(design, encoder, identity, cv, seed, width, sample_rows=DIAGNOSTIC_ROWS)
    dec.fit_blocks(blocks, family=fam, design=design, se=False)
    naive = make_estimator("naive", family=family, seed=seed, cv=cv, alphas=(dec.alpha_,))
    naive.fit_blocks(blocks, family=fam, design=design, se=False)
    sums = blocks.map_reduce(_reward_moments, naive.glm_, naive.center_, dec.glm_, dec.center_)
    n = float(sums["n"][0])
    cov = sums["ab"][0] / n - sums["a"][0] * sums["b"][0] / n**2
    var_a = sums["aa"][0] / n - (sums["a"][0] / n) ** 2
    var_b = sums["bb"][0] / n - (sums["b"][0] / n) ** 2
    corr = float(cov / np.sqrt(var_a * var_b)) if var_a > 0 and var_b > 0 else None
    blocks.close()
    return ClusterPair(naive, dec, len(log), corr if corr is None or np.isfinite(corr) else None, log.sample(blocks),
                       log.fingerprint())


def _reward_moments(block, naive_glm, naive_center: float, dec_glm, dec_center: float) -> dict[str, np.ndarray]:
    a = naive_glm.text_effect(block.phi) - naive_center
    b = dec_glm.text_effect(block.phi) - dec_center
    return {"n": np.array([float(len(a))]), "a": np.array([a.sum()]), "b": np.array([b.sum()]),
            "aa": np.array([a @ a]), "bb": np.array([b @ b]), "ab": np.array([a @ b])}
