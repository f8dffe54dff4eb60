"""``deconfoundlm diagnose``: how confounded is this log, and what would a naive reward learn?"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from deconfoundlm.configs import DiagnoseConfig
from deconfoundlm.evaluation.provenance import log_provenance
from deconfoundlm.features.text import get_encoder
from deconfoundlm.glm.targets import pack_targets
from deconfoundlm.logdata import LogData
from deconfoundlm.outputs import JSON_FILE, write_json
from deconfoundlm.rewards import diagnostics, make_estimator

DIAGNOSE_ALPHAS = (1e-4, 1e-2, 1.0)


def diagnose(data, config: DiagnoseConfig | None = None, /, **options: Any) -> dict[str, Any]:
    """Confounder strength, entanglement, overlap, naive-vs-deconfounded agreement and the
    n-grams a naive reward would learn from the confounders, for the log ``data`` and the options
    of :class:`~deconfoundlm.configs.DiagnoseConfig` (or the same as keywords: the columns,
    ``encoder``, ``family``, ``cv``, ``seed``, ``out``, ``force``, ``dask``). Writes JSON when
    ``out``. With ``dask`` both rewards are fitted on the cluster over every row and the
    cross-validated diagnostics run on a seeded sample
    (:func:`deconfoundlm.distributed.fit.fit_pair_on_cluster`)."""
    cfg = DiagnoseConfig.of(config, options)
    encoder, family, seed, cv, out = cfg.encoder, cfg.family, cfg.seed, cfg.cv, cfg.out
    log_data = LogData.of(data, cfg)
    roles = log_data.roles
    log_data.check(cfg, JSON_FILE, need_confounders="diagnose needs at least one --confounder COL:TYPE")
    if log_data.dask is not None:
        from deconfoundlm.distributed.fit import fit_pair_on_cluster

        with log_data.cluster() as client:
            pair = fit_pair_on_cluster(client, data, roles, cfg, alphas=DIAGNOSE_ALPHAS)
        sample_log, phi = pair.sample
        report = diagnose_fitted(sample_log, phi, pair.naive, pair.deconfound, cv, seed)
        report.update(rows=pair.n_rows, reward_correlation=pair.reward_correlation, rows_sampled=len(sample_log),
                      sample_note=(f"confounder strength, entanglement, overlap, rank correlation and n-grams on a "
                                   f"seeded sample of {len(sample_log)} rows; both rewards and their correlation on "
                                   f"all {pair.n_rows} rows"))
        report["warnings"] = diagnostics.plain_warnings(report)
        report["encoder"] = encoder
        report["provenance"] = log_provenance(pair.fingerprint, roles, pair.n_rows, data, encoder)
        if out is not None:
            write_json(report, out)
        return report
    log, _ = log_data.read(family, cv)
    phi = get_encoder(encoder).encode(log.texts).astype(np.float64)
    fit = dict(confounders=log.confounders, specs=roles.confounders, trials=log.trials, sample_weight=log.weights)
    # The deconfounded reward chooses its penalty by CV; the naive one, fitted only to be compared
    # with it, uses the same penalty (same regularization, half the cost). No standard errors.
    # Diagnostics compare rewards, they do not ship one: the penalty is searched on every other
    # value of fit-reward's grid (1e-4, 1e-2, 1), half the fits.
    dec = make_estimator("deconfound", family=family, seed=seed, cv=cv, alphas=DIAGNOSE_ALPHAS).fit(
        phi, log.outcome, se=False, **fit)
    naive = make_estimator("naive", family=family, seed=seed, cv=cv, alphas=(dec.alpha_,)).fit(
        phi, log.outcome, se=False, **fit)
    report = diagnose_fitted(log, phi, naive, dec, cv, seed)
    report["encoder"] = encoder
    report["provenance"] = log_provenance(log.fingerprint(), log.roles, len(log), data, encoder)
    if out is not None:
        write_json(report, out)
    return report


def diagnose_fitted(log, phi: np.ndarray, naive, dec, cv: int = 5, seed: int = 0) -> dict[str, Any]:
    """The diagnostics of a log given already-fitted naive and deconfound rewards."""
    psi = dec.design_.transform(log.confounders)
    targets = pack_targets(log.outcome, log.trials, log.weights)
    r_naive, r_dec = naive.reward(phi), dec.reward(phi)
    rank = None
    if diagnostics.correlation(r_naive, r_dec) is not None:
        rank = float(stats.spearmanr(r_naive, r_dec).statistic)
    report: dict[str, Any] = {
        "rows": len(log),
        "family": dec.family_,
        "reward_correlation": diagnostics.correlation(r_naive, r_dec),
        "reward_rank_correlation": rank if rank is not None and np.isfinite(rank) else None,
    }
    if len(log) < diagnostics.MIN_ROWS:
        report.update(confounder_deviance_share=None, overlap=None, confounded_ngrams=[],
                      entanglement_r2={c.column: None for c in log.roles.confounders},
                      note=diagnostics.too_few_rows(len(log)))
    else:
        report.update(
            confounder_deviance_share=diagnostics.confounder_deviance_share(dec.family_, psi, targets, cv, seed),
            entanglement_r2=diagnostics.entanglement(phi, log.confounders, log.roles.confounders, cv, seed),
            overlap=diagnostics.overlap(phi, psi, cv, seed),
        )
        if report["confounder_deviance_share"] < diagnostics.NGRAMS_MIN_SHARE:
            report["confounded_ngrams"] = []
            report["ngrams_note"] = (f"the confounders explain {100 * report['confounder_deviance_share']:.1f}% of "
                                     "the outcome's deviance (under 1%): no word list, it would be noise")
        else:
            report["confounded_ngrams"] = diagnostics.confounded_ngrams(log.texts, r_naive, r_dec)
    report["warnings"] = diagnostics.plain_warnings(report)
    return report


def _num(v: float | None, fmt: str = "{:.3f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def format_report(r: dict[str, Any]) -> str:
    lines = [f"rows: {r['rows']}  family: {r['family']}  encoder: {r.get('encoder', '?')}"]
    if r.get("confounder_deviance_share") is not None:
        ent = ", ".join(f"{k} {_num(v)}" for k, v in r["entanglement_r2"].items())
        lines += [
            f"confounder strength: {100 * r['confounder_deviance_share']:.1f}% of outcome deviance explained "
            "by the confounders alone (cross-validated)",
            f"entanglement (CV R^2 of each confounder from the text): {ent}",
            f"overlap: {100 * r['overlap']:.1f}% of the embedding's variance is left within confounder strata",
        ]
    if r.get("reward_correlation") is None:
        lines.append("naive vs deconfounded reward: correlation undefined (a reward is constant)")
    else:
        lines.append(f"naive vs deconfounded reward: correlation {r['reward_correlation']:.3f} "
                     f"(rank {_num(r.get('reward_rank_correlation'))})")
    if r.get("ngrams_note"):
        lines.append(f"n-grams: {r['ngrams_note']}")
    elif r["confounded_ngrams"]:
        lines.append("n-grams whose naive reward comes mostly from the confounders (effect on the link scale; "
                     "confounder part +- its standard error over texts):")
        for g in r["confounded_ngrams"][:10]:
            lines.append(f"  {g['ngram']!r:<22} n={g['count']:<5} naive {g['naive_effect']:+.3f}  "
                         f"deconfounded {g['deconfounded_effect']:+.3f}  confounder part "
                         f"{g['confounder_part']:+.3f} +- {g.get('confounder_part_se', float('nan')):.3f}")
    elif r.get("confounder_deviance_share") is not None:
        lines.append("n-grams: none whose confounder part is distinguishable from zero")
    if r.get("sample_note"):
        lines.append(f"note: {r['sample_note']}")
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)
