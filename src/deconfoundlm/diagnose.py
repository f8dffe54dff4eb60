"""``deconfoundlm diagnose``: how confounded is this log, and what would a naive reward learn?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from deconfoundlm import diagnostics
from deconfoundlm._io import check_output, write_json
from deconfoundlm.data import ColumnRoles, load_log, validate_log
from deconfoundlm.encoders import get_encoder
from deconfoundlm.errors import UserError
from deconfoundlm.glm import pack_targets
from deconfoundlm.pipeline import parse_confounders
from deconfoundlm.rewards import make_estimator


def diagnose(data, *, text: str, outcome: str, trials: str | None = None, confounders=None,
             weights: str | None = None, encoder: str = "minilm", seed: int = 0, cv: int = 5,
             out: str | Path | None = None, force: bool = False) -> dict[str, Any]:
    """Confounder strength, entanglement, overlap, naive-vs-deconfounded agreement and the
    n-grams a naive reward would learn from the confounders. Writes JSON when ``out``."""
    import pandas as pd

    if out is not None:
        check_output(out, force)
    roles = ColumnRoles(text=text, outcome=outcome, trials=trials, weights=weights,
                        confounders=parse_confounders(confounders))
    if not roles.confounders:
        raise UserError("diagnose needs at least one --confounder COL:TYPE")
    log = validate_log(data, roles) if isinstance(data, pd.DataFrame) else load_log(data, roles)
    phi = get_encoder(encoder).encode(log.texts).astype(np.float64)
    fit = dict(confounders=log.confounders, specs=roles.confounders, trials=log.trials, sample_weight=log.weights)
    naive = make_estimator("naive", seed=seed, cv=cv).fit(phi, log.outcome, **fit)
    dec = make_estimator("deconfound", seed=seed, cv=cv).fit(phi, log.outcome, **fit)
    report = diagnose_fitted(log, phi, naive, dec, cv, seed)
    report["encoder"] = encoder
    if out is not None:
        write_json(report, out)
    return report


def diagnose_fitted(log, phi: np.ndarray, naive, dec, cv: int = 5, seed: int = 0) -> dict[str, Any]:
    """The diagnostics of a log given already-fitted naive and deconfound rewards."""
    psi = dec.design_.transform(log.confounders)
    targets = pack_targets(log.outcome, log.trials, log.weights)
    r_naive, r_dec = naive.score(phi), dec.score(phi)
    report: dict[str, Any] = {
        "rows": len(log),
        "family": dec.family_,
        "confounder_deviance_share": diagnostics.confounder_deviance_share(dec.family_, psi, targets, cv, seed),
        "entanglement_r2": diagnostics.entanglement(phi, log.confounders, log.roles.confounders, cv, seed),
        "overlap": diagnostics.overlap(phi, psi, cv, seed),
        "reward_correlation": float(np.corrcoef(r_naive, r_dec)[0, 1]),
        "reward_rank_correlation": float(stats.spearmanr(r_naive, r_dec).statistic),
        "confounded_ngrams": diagnostics.confounded_ngrams(log.texts, r_naive, r_dec),
    }
    report["warnings"] = diagnostics.plain_warnings(report)
    return report


def format_report(r: dict[str, Any]) -> str:
    ent = ", ".join(f"{k} {v:.3f}" for k, v in r["entanglement_r2"].items())
    lines = [
        f"rows: {r['rows']}  family: {r['family']}  encoder: {r.get('encoder', '?')}",
        f"confounder strength: {100 * r['confounder_deviance_share']:.1f}% of outcome deviance explained "
        "by the confounders alone (cross-validated)",
        f"entanglement (CV R^2 of each confounder from the text): {ent}",
        f"overlap: {100 * r['overlap']:.1f}% of the embedding's variance is left within confounder strata",
        f"naive vs deconfounded reward: correlation {r['reward_correlation']:.3f} "
        f"(rank {r['reward_rank_correlation']:.3f})",
    ]
    if r["confounded_ngrams"]:
        lines.append("n-grams whose naive reward comes mostly from the confounders (effect, log-odds/units):")
        for g in r["confounded_ngrams"][:10]:
            lines.append(f"  {g['ngram']!r:<22} n={g['count']:<5} naive {g['naive_effect']:+.3f}  "
                         f"deconfounded {g['deconfounded_effect']:+.3f}")
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)
