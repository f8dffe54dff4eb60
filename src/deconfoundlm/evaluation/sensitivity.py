"""``deconfoundlm sensitivity``: how strong would an unnamed confounder have to be?

The reward index r(x) is cross-fitted (each row scored by a deconfounded reward fitted without
its fold) and treated as a scalar treatment; the confounder design psi(c) is the control set; the
outcome is on the link scale (the smoothed empirical link of ``Family.empirical_link``). A
partially linear double-ML fit (DoubleML's ``DoubleMLPLR``, cross-fitted ridge nuisances) gives
theta, the outcome's change per unit of reward, and DoubleML's omitted-variable sensitivity
analysis (Chernozhukov et al. 2022) gives:

- the robustness value RV: an unobserved confounder explaining RV of the residual variation of
  both the outcome and the reward index would explain the effect away (theta = 0); RVa the same
  for the confidence interval;
- bounds on theta for a confounder of given strength (``cf_y``, ``cf_d``: partial R^2 with the
  outcome and with the reward index);
- benchmarks: the strength of each named confounder (what the bounds would be if an unnamed one
  were as strong as it).

Sample weights are not used (DoubleML's PLR has none); this is said when they are given.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from deconfoundlm.configs import SensitivityConfig
from deconfoundlm.errors import UserError
from deconfoundlm.evaluation.provenance import log_provenance
from deconfoundlm.features.confounders import ConfounderDesign
from deconfoundlm.features.text import MemoizedEncoder, get_encoder
from deconfoundlm.glm.families import get_family
from deconfoundlm.glm.folds import HashFolds
from deconfoundlm.logdata import LogData
from deconfoundlm.logs.validate import (
    DataWarning,
    ObservationalLog,
)
from deconfoundlm.outputs import JSON_FILE, write_json
from deconfoundlm.pipeline import fit_reward

MAX_DESIGN_COLUMNS = 2000


def cross_fitted_reward(log: ObservationalLog, encoder, family: str, cv: int, seed: int) -> np.ndarray:
    """r(x) for every row from a deconfounded reward fitted on the other folds."""
    frame = log.frame.reset_index(drop=True)
    roles = log.roles
    out = np.zeros(len(frame))
    for train, test in HashFolds(cv, seed).split(frame):
        reward = fit_reward(frame.iloc[train], text=roles.text, outcome=roles.outcome, trials=roles.trials,
                            confounders=list(roles.confounders), method="deconfound", family=family,
                            encoder=encoder, seed=seed, cv=min(cv, max(2, len(train) // 20)), diagnose=False)
        out[test] = reward.score(frame[roles.text].astype(str).iloc[test].tolist())
    return out


def _bounds(plr) -> dict[str, float]:
    p = plr.sensitivity_params
    return {"theta_lower": float(p["theta"]["lower"][0]), "theta_upper": float(p["theta"]["upper"][0]),
            "ci_lower": float(p["ci"]["lower"][0]), "ci_upper": float(p["ci"]["upper"][0])}


def analyse(log: ObservationalLog, r_index: np.ndarray, family: str, cv: int = 5, seed: int = 0,
            cf_y: float = 0.03, cf_d: float = 0.03) -> dict[str, Any]:
    """DoubleML's PLR of the link-scale outcome on the reward index, controls psi(c), and its
    sensitivity analysis with benchmarks for each named confounder."""
    import doubleml as dml
    from sklearn.linear_model import RidgeCV

    r_index = np.asarray(r_index, dtype=float)
    distinct = len(np.unique(r_index))
    if not np.isfinite(r_index).all() or distinct < 3 or float(np.std(r_index)) < 1e-8:
        raise UserError(f"the reward index is (nearly) constant across the {len(r_index)} rows ({distinct} distinct "
                        "value(s)): every row has the same text, or the reward learned nothing; there is no "
                        "treatment variation to analyse")
    design = ConfounderDesign(log.roles.confounders).fit(log.confounders)
    psi = design.transform(log.confounders)
    if psi.shape[1] > MAX_DESIGN_COLUMNS:
        raise UserError(f"the confounder design has {psi.shape[1]} columns; the sensitivity analysis takes at most "
                        f"{MAX_DESIGN_COLUMNS} (pool rare categorical levels or drop a wide confounder)")
    owners = design.column_owners()
    names = [f"x{j}" for j in range(psi.shape[1])]
    n = np.ones(len(log)) if log.trials is None else log.trials
    df = pd.DataFrame(psi.toarray(), columns=names)
    df["const"] = 1.0  # keeps a control when a benchmark drops every named confounder
    df["y"] = get_family(family).empirical_link(log.outcome, n)
    df["d"] = r_index
    data = dml.DoubleMLData(df, y_col="y", d_cols="d", x_cols=[*names, "const"])
    learner = RidgeCV(alphas=np.logspace(-3, 3, 13))
    np.random.seed(seed)  # DoubleML draws its folds from numpy's global generator
    plr = dml.DoubleMLPLR(data, ml_l=learner, ml_m=learner, n_folds=cv)
    plr.fit()
    benchmarks = {}
    for spec in log.roles.confounders:
        cols = [nm for nm, o in zip(names, owners, strict=True) if o == spec.column]
        b = plr.sensitivity_benchmark(benchmarking_set=cols)
        strength = {"cf_y": float(np.clip(b["cf_y"].iloc[0], 0, 0.999)),
                    "cf_d": float(np.clip(b["cf_d"].iloc[0], 0, 0.999)),
                    "rho": float(np.clip(b["rho"].iloc[0], -1, 1))}
        plr.sensitivity_analysis(cf_y=strength["cf_y"], cf_d=strength["cf_d"], rho=abs(strength["rho"]))
        benchmarks[spec.column] = {**strength, **_bounds(plr)}
    plr.sensitivity_analysis(cf_y=cf_y, cf_d=cf_d, rho=1.0)
    p = plr.sensitivity_params
    theta, se = float(plr.coef[0]), float(plr.se[0])
    report = {
        "rows": len(log), "family": family, "outcome_scale": "link (smoothed empirical link of the outcome)",
        "treatment": "cross-fitted deconfounded reward index", "controls": design.terms(),
        "theta": theta, "se": se, "ci": [theta - 1.96 * se, theta + 1.96 * se],
        "rv": float(p["rv"][0]), "rva": float(p["rva"][0]),
        "scenario": {"cf_y": cf_y, "cf_d": cf_d, "rho": 1.0, **_bounds(plr)},
        "benchmarks": benchmarks,
    }
    report["summary"] = plain_words(report)
    return report


def plain_words(r: dict[str, Any]) -> list[str]:
    lines = [
        f"One unit more reward goes with {r['theta']:+.3f} on the outcome's link scale (95% CI "
        f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]), adjusting for the named confounders (double ML).",
        f"Robustness value {100 * r['rv']:.1f}%: a confounder that was not named would have to explain "
        f"{100 * r['rv']:.1f}% of the residual variation of both the outcome and the reward to explain this "
        f"effect away ({100 * r['rva']:.1f}% to make it not significant at 5%).",
        f"A confounder explaining {100 * r['scenario']['cf_y']:.0f}% of each would leave the effect "
        f"{_between(r['scenario']['theta_lower'], r['scenario']['theta_upper'])}.",
    ]
    for name, b in r["benchmarks"].items():
        lines.append(
            f"A confounder as strong as {name!r} (partial R^2 {100 * b['cf_y']:.1f}% with the outcome, "
            f"{100 * b['cf_d']:.1f}% with the reward) would leave it {_between(b['theta_lower'], b['theta_upper'])} "
            f"(95% bounds [{b['ci_lower']:+.3f}, {b['ci_upper']:+.3f}]).")
    return lines


def _between(lower: float, upper: float) -> str:
    """An interval in words; one that collapses at the shown precision is said as one value."""
    if f"{lower:+.3f}" == f"{upper:+.3f}":
        return (f"at {lower:+.3f} (unchanged: a confounder this weak, with almost no partial R^2 with the outcome "
                "or the reward, cannot move it)")
    return f"between {lower:+.3f} and {upper:+.3f}"


def sensitivity(data, config: SensitivityConfig | None = None, /, **options: Any) -> dict[str, Any]:
    """The sensitivity analysis of a log (see the module) with the options of
    :class:`~deconfoundlm.configs.SensitivityConfig` (or the same as keywords: the columns,
    ``encoder``, ``family``, ``cv``, ``seed``, the scenario ``cf_y`` and ``cf_d``, ``out``,
    ``force``); writes JSON when ``out``."""
    cfg = SensitivityConfig.of(config, options)
    encoder, seed, cv, out = cfg.encoder, cfg.seed, cfg.cv, cfg.out
    log_data = LogData.of(data, cfg)
    log_data.check(cfg, JSON_FILE, need_confounders="sensitivity needs at least one --confounder COL:TYPE (the named "
                   "confounders are the controls and the benchmarks)")
    log, fam = log_data.read(cfg.family, cv)
    if cfg.weights is not None:
        warnings.warn("--weights are not used by the sensitivity analysis (DoubleML's partially linear "
                      "model has no sample weights)", DataWarning, stacklevel=2)
    enc = MemoizedEncoder(get_encoder(encoder))
    r_index = cross_fitted_reward(log, enc, fam, cv, seed)
    report = analyse(log, r_index, fam, cv, seed, cfg.cf_y, cfg.cf_d)
    report["encoder"] = encoder
    report["provenance"] = log_provenance(log.fingerprint(), log.roles, len(log), data, encoder)
    if out is not None:
        write_json(report, out)
    return report
