"""``deconfoundlm report``: a self-contained HTML page (images embedded, no network) from a
demo output directory (or a benchmark output directory)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from deconfoundlm.checks import require_regular_file
from deconfoundlm.errors import UserError
from deconfoundlm.options import label
from deconfoundlm.outputs import HTML_FILE, UnreadableJSON, check_output, read_json

DEMO_FILES = ("results.csv", "timeseries.csv", "reward_by_week.csv", "diagnostics.json", "samples.csv")

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:.9em}
.warn{background:#fff4e5;border-left:4px solid #f0a030;padding:.5em 1em;margin:.5em 0}"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _img_file(path: Path) -> str:
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def _table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    return df.to_html(index=False, float_format=lambda x: floatfmt.format(x), border=0, escape=True)


def _week_axis(weeks: pd.Series) -> pd.Series:
    from deconfoundlm.logs.values import time_values

    return pd.to_datetime(time_values(weeks.astype(int)), unit="D")


DEMO_COLUMNS = {
    "results.csv": ("method", "accuracy", "ci_low", "ci_high"),
    "timeseries.csv": ("test_week", "ctr"),
    "reward_by_week.csv": ("test_week", "naive", "deconfound"),
    "samples.csv": ("policy", "text", "naive_reward", "deconfound_reward"),
    "learning_curve.csv": ("tests", "all", "curve", "accuracy", "ci_low", "ci_high", "splits"),
}
NUMERIC_COLUMNS = ("accuracy", "ci_low", "ci_high", "test_week", "ctr", "naive", "deconfound",
                   "naive_reward", "deconfound_reward", "difference", "splits_won", "splits", "split_min", "split_max",
                   "pairs_per_split", "tests_per_split", "packages", "digits", "you", "question", "words",
                   "impressions", "ab_rank", "tests")
LABEL_COLUMNS = ("method", "baseline", "policy", "curve")  # names a table or plot is keyed by: never empty
TEXT_CELLS = ("text", "headline", "candidate", "lede")  # shown as text; an empty cell is ""
NUMERIC_PREFIXES = ("share_",)  # timeseries.csv: share of headlines with each surface feature


def _invalid(d: Path, why: str) -> UserError:
    return UserError(f"{d}: not a valid demo output: {why}")


def _read_csv(d: Path, name: str, allow_empty: bool = False, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """A CSV of a demo output with the given columns (default: DEMO_COLUMNS[name]); numeric
    columns must hold finite numbers."""
    columns = DEMO_COLUMNS[name] if columns is None else columns
    require_regular_file(d / name)
    try:
        df = pd.read_csv(d / name)
    except pd.errors.EmptyDataError:
        raise _invalid(d, f"{name} is empty") from None
    except UserError:  # a UserError is a ValueError: its own message, not this one
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise _invalid(d, f"{name} cannot be read as CSV ({str(exc).splitlines()[0][:100]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise _invalid(d, f"{name} has no column {missing[0]!r}")
    if not len(df) and not allow_empty:
        raise _invalid(d, f"{name} has no rows")
    for c in [c for c in df.columns if c in LABEL_COLUMNS]:
        if df[c].isna().any():
            raise _invalid(d, f"{name}: column {c!r} has an empty cell")
        df[c] = df[c].astype(str)
    for c in [c for c in df.columns if c in TEXT_CELLS]:
        df[c] = df[c].fillna("").astype(str)
    numeric = [c for c in df.columns if c in NUMERIC_COLUMNS or str(c).startswith(NUMERIC_PREFIXES)]
    for c in numeric:
        if len(df):
            values = pd.to_numeric(df[c], errors="coerce")
            if values.isna().any() or not np.isfinite(values.to_numpy(float)).all():
                raise _invalid(d, f"{name}: column {c!r} must hold finite numbers")
            df[c] = values
    return df


def _check_diagnostics(diag, fail: Callable[[str], UserError], name: str = "diagnostics.json") -> dict:
    """A diagnostics object (``diagnose --out`` or a demo's), checked field by field."""
    if not isinstance(diag, dict):
        raise fail(f"{name} must hold a JSON object")

    for key in ("confounder_deviance_share", "overlap", "reward_correlation"):
        if not _number(diag.get(key)):
            raise fail(f"{name}: {key!r} must be a finite number")
    ent = diag.get("entanglement_r2")
    if not isinstance(ent, dict) or not all(_number(v) for v in ent.values()):
        raise fail(f"{name}: 'entanglement_r2' must map confounders to numbers")
    warns = diag.get("warnings", [])
    if not isinstance(warns, list) or not all(isinstance(w, str) for w in warns):
        raise fail(f"{name}: 'warnings' must be a list of strings")
    grams = diag.get("confounded_ngrams", [])
    if not isinstance(grams, list) or not all(isinstance(g, dict) for g in grams):
        raise fail(f"{name}: 'confounded_ngrams' must be a list of objects")
    for g in grams:
        if not isinstance(g.get("ngram"), str) or not all(_number(g.get(k)) for k in g if k != "ngram"):
            raise fail(f"{name}: each of 'confounded_ngrams' needs an 'ngram' string and numbers")
    return diag


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def read_demo_inputs(d: Path):
    """The demo files a report is made from, each checked (untrusted input: a folder anybody
    may have edited). Anything wrong: ``DIR: not a valid demo output: <why>``."""

    try:
        diag = read_json(d / "diagnostics.json")
    except (OSError, UnreadableJSON):
        raise _invalid(d, "diagnostics.json is not valid JSON") from None
    return (_read_csv(d, "results.csv"), _read_csv(d, "timeseries.csv"), _read_csv(d, "reward_by_week.csv"),
            _check_diagnostics(diag, lambda why: _invalid(d, why)), _read_csv(d, "samples.csv", allow_empty=True))


DIFF_COLUMNS = ("method", "baseline", "difference", "ci_low", "ci_high", "splits_won", "splits")


def _read_counts(d: Path) -> dict:
    """counts.json of a demo (training / held-out tests per split); {} when absent or malformed."""

    try:
        counts = read_json(d / "counts.json") if (d / "counts.json").is_file() else {}
    except (OSError, UnreadableJSON):
        raise _invalid(d, "counts.json is not valid JSON") from None
    if not isinstance(counts, dict):
        raise _invalid(d, "counts.json must hold a JSON object")
    return {k: v for k, v in counts.items() if _number(v)}


def _demo_summary(results: pd.DataFrame, diffs: pd.DataFrame, counts: dict, corr: dict) -> str:
    """The headline of the demo in a few sentences, and any result that runs against the story."""
    acc = dict(zip(results["method"], results["accuracy"], strict=True))
    parts = []
    if {"naive", "deconfound"} <= acc.keys():
        line = (f"On held-out randomized A/B pairs, the deconfounded reward ranks {acc['deconfound']:.1%} of pairs "
                f"correctly against {acc['naive']:.1%} for the naive reward")
        row = diffs[diffs["method"] == "deconfound"] if len(diffs) else diffs
        if len(row):
            r = row.iloc[0]
            line += (f" (difference {100 * r['difference']:+.1f} points, 95% CI [{100 * r['ci_low']:+.1f}, "
                     f"{100 * r['ci_high']:+.1f}], higher in {int(r['splits_won'])} of {int(r['splits'])} splits)")
        if "experimental" in acc:
            line += f"; a reward fitted on the randomized variation itself reaches {acc['experimental']:.1%}"
        parts.append(line + ".")
    if {"held_out_tests_per_split", "training_tests_per_split"} <= counts.keys():
        parts.append(f"Each of {int(counts.get('splits', 0))} splits fits on {int(counts['training_tests_per_split'])} "
                     f"tests and evaluates on held-out tests ({int(round(counts['held_out_tests_per_split']))} of them "
                     "with a significant pair, on average); chance is 50%.")
    against = []
    if {"naive", "deconfound"} <= acc.keys() and acc["deconfound"] <= acc["naive"]:
        against.append("the deconfounded reward is not more accurate than the naive one here")
    row = diffs[diffs["method"] == "deconfound"] if len(diffs) else diffs
    if len(row) and row.iloc[0]["ci_low"] <= 0 < row.iloc[0]["difference"]:
        against.append("the deconfounded reward's gain over the naive one is within the noise (its 95% CI "
                       "includes 0)")
    if {"naive", "confounder-input"} <= acc.keys() and acc["confounder-input"] < acc["naive"]:
        against.append("giving the week to the model as an input (confounder-input) does worse than ignoring it: "
                       "adjusting needs the confounder's part to be left out of the reward, not just modeled")
    if {"experimental", "deconfound"} <= acc.keys() and acc["deconfound"] > acc["experimental"]:
        against.append("the observational deconfounded reward beats the experimental reference on this run")
    if all(np.isfinite(list(corr.values()))) and abs(corr["deconfound"]) >= abs(corr["naive"]):
        against.append("the deconfounded reward follows the weekly CTR at least as closely as the naive one")
    html_parts = "<h2>Summary</h2><p>" + " ".join(html.escape(p) for p in parts) + "</p>"
    if against:
        html_parts += ("<p><b>Against the story, or surprising:</b> " + "; ".join(html.escape(a) for a in against) + ".</p>")
    return html_parts


def _words_block(diag: dict) -> str:
    """The words whose naive reward comes from the confounders (diagnose's n-grams)."""
    if diag.get("ngrams_note"):
        return f"<p class='note'>Words: {html.escape(str(diag['ngrams_note']))}.</p>"
    if not diag.get("confounded_ngrams"):
        return "<p class='note'>No word's confounder part is distinguishable from zero.</p>"
    words = pd.DataFrame(diag["confounded_ngrams"]).head(12)
    if "confounder_part_se" in words and "confounder_part" in words:
        words["95% CI of the confounder part"] = [
            f"[{p - 1.96 * s:+.3f}, {p + 1.96 * s:+.3f}]"
            for p, s in zip(words["confounder_part"], words["confounder_part_se"], strict=True)]
    return ("<p>Words whose naive reward comes mostly from the confounder (effect on the reward's scale; only "
            "words whose confounder part is distinguishable from zero, with its 95% CI over texts given the "
            "fitted rewards):</p>" + _table(words))


def demo_sections(d: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, ts, rw, diag, samples = read_demo_inputs(d)
    for col in ("accuracy", "ci_low", "ci_high"):
        if not results[col].between(0, 1).all():
            raise _invalid(d, f"results.csv: column {col!r} must hold accuracies from 0 to 1")
    if not ((results["ci_low"] <= results["accuracy"]) & (results["accuracy"] <= results["ci_high"])).all():
        raise _invalid(d, "results.csv: every accuracy must lie within its CI (ci_low <= accuracy <= ci_high)")
    diffs = _read_csv(d, "differences.csv", allow_empty=True, columns=DIFF_COLUMNS) \
        if (d / "differences.csv").is_file() else pd.DataFrame(columns=DIFF_COLUMNS)
    counts = _read_counts(d)
    both = rw.merge(ts[["test_week", "ctr"]], on="test_week")
    corr = {c: both[c].corr(both["ctr"]) for c in ("naive", "deconfound")}
    out = [_demo_summary(results, diffs, counts, corr)]

    fig, ax = plt.subplots(figsize=(9, 3))
    ax.plot(_week_axis(ts["test_week"]), 100 * ts["ctr"], color="#2a6")
    ax.set_ylabel("CTR (%)")
    ax.set_title("Outcome over time: mean package CTR per week")
    out.append("<h2>1. The confounding in the log</h2><p>Click-through rates moved a lot over time: in the "
               f"observational log, the week alone explains {diag['confounder_deviance_share']:.0%} of the "
               "outcome's deviance (cross-validated), whatever the headline said.</p>" + _png(fig))

    feats = [c for c in ts.columns if c.startswith("share_")]
    fig, ax = plt.subplots(figsize=(9, 3))
    for c in feats:
        ax.plot(_week_axis(ts["test_week"]), 100 * ts[c].rolling(4, min_periods=1).mean(), label=c[6:])
    ax.set_ylabel("% of headlines (4-week mean)")
    ax.set_title("Headline-feature drift over time")
    ax.legend(fontsize=8)
    out.append("<p>At the same time, the style of headlines drifted: wording is entangled with time.</p>" + _png(fig))

    ent = ", ".join(f"{k}: {v:.3f}" for k, v in diag["entanglement_r2"].items())
    rows = pd.DataFrame([
        ["confounder strength (share of outcome deviance explained by week alone, CV)", f"{diag['confounder_deviance_share']:.1%}"],
        ["entanglement (CV R^2 of week from the headline embedding)", ent],
        ["overlap (embedding variance left within weeks)", f"{diag['overlap']:.1%}"],
        ["correlation of naive and deconfounded rewards", f"{diag['reward_correlation']:.3f}"],
    ], columns=["diagnostic", "value"])
    block = "<h2>2. Diagnostics</h2>" + _table(rows)
    block += "".join(f'<div class="warn">{html.escape(w)}</div>' for w in diag.get("warnings", []))
    out.append(block + _words_block(diag))

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
    ax = axes[0]
    for col, color in (("naive", "#d55"), ("deconfound", "#26a")):
        ax.plot(_week_axis(rw["test_week"]), rw[col], label=col, color=color)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("mean reward (log-odds)")
    ax.set_title("Reward against week: naive vs deconfounded")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.legend()
    ax = axes[1]
    for col, color in (("naive", "#d55"), ("deconfound", "#26a")):
        ax.scatter(100 * both["ctr"], both[col], s=10, alpha=0.6, color=color,
                   label=f"{col} (r = {corr[col]:.2f})")
    ax.set_xlabel("weekly CTR (%)")
    ax.set_ylabel("weekly mean reward")
    ax.set_title("Does the reward follow the week's CTR?")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.append("<h2>3. What a naive reward learns</h2><p>Mean reward of the headlines published each week. "
               "A reward that follows the weekly outcome level has learned part of the confounder: the "
               f"correlation of the weekly mean reward with the weekly CTR is {corr['naive']:.2f} for the "
               f"naive reward and {corr['deconfound']:.2f} for the deconfounded one (right: one dot per "
               "week).</p>" + _png(fig))

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.errorbar(results["method"], results["accuracy"],
                yerr=[results["accuracy"] - results["ci_low"], results["ci_high"] - results["accuracy"]],
                fmt="o", capsize=4)
    ax.axhline(0.5, color="grey", lw=0.5, ls="--")
    ax.set_ylabel("pairwise accuracy")
    ax.set_title("Held-out randomized A/B pairs")
    shown = results.copy()
    for c in ("pairs_per_split", "tests_per_split"):
        if c in shown:
            shown[c] = shown[c].round().astype(int)
    shown = shown.rename(columns={"pairs_per_split": "pairs per split (mean)", "tests_per_split":
                                  "held-out tests with pairs (mean)", "split_min": "worst split",
                                  "split_max": "best split", "ci_low": "95% CI low", "ci_high": "95% CI high"})
    block = ("<h2>4. Does it hold up against randomized A/B tests?</h2><p>Each reward ranks pairs of "
             "headlines that were randomized against each other in held-out tests with a significant "
             "CTR difference (|z| > 1.96). 95% CIs: cluster bootstrap over tests.</p>" + _table(shown) + _png(fig))
    if len(diffs):
        block += ("<p>Paired differences from the naive reward (the same pairs and the same resampled tests "
                  "for both rewards; splits won: splits where the reward's accuracy is higher):</p>"
                  + _table(diffs.assign(splits_won=[f"{int(w)} of {int(n)}" for w, n in
                                                    zip(diffs["splits_won"], diffs["splits"], strict=True)])
                           .drop(columns=["baseline", "splits"]).rename(columns={
                               "method": "reward", "difference": "minus naive", "ci_low": "95% CI low",
                               "ci_high": "95% CI high", "splits_won": "splits won"})))
    out.append(block)

    if (d / "learning_curve.csv").is_file():
        out.append(learning_curve_section(d))
    if (d / "sensitivity.json").is_file():
        out.append(sensitivity_section(d))
    if (d / "candidates.csv").is_file():
        out.append(candidates_section(d))
    if (d / "policy_study.csv").is_file():
        out.append(policy_study_section(d))
    if not len(samples):  # the toy generator's section only where the run trained it (--align-steps)
        return out
    block = ("<h2>8. Training end to end: a toy generator</h2><p>tiny-headlines (a 2.6M-parameter model "
             "trained on the archive's headlines: a toy, its text is not fluent) before and after "
             "DPO on the observational log ranked by each reward; every sample scored by both rewards "
             "(log-odds, mean 0 over the log's headlines). It shows the alignment step running end to end; "
             "section 6 shows what the rewards prefer among fluent headlines.</p>")
    if len(samples):
        means = samples.groupby("policy", sort=False)[["naive_reward", "deconfound_reward"]].mean().reset_index()
        means.insert(1, "samples", samples.groupby("policy", sort=False).size().to_numpy())
        block += _table(means) + _table(samples.groupby("policy", sort=False).head(6))
    out.append(block)
    return out


CANDIDATE_COLUMNS = ("test_id", "lede", "candidate", "naive_reward", "deconfound_reward", "naive_pick",
                     "deconfound_pick", "digits", "you", "question", "words")
REAL_COLUMNS = ("test_id", "headline", "ctr", "impressions", "ab_rank", "naive_reward", "deconfound_reward")


def learning_curve_section(d: Path, number: str = "4b. ") -> str:
    """"What is the log worth?": accuracy against the number of A/B tests (ab_curve); ``number``
    heads the section (the demo's fourth section, or the whole of a ``benchmark ab-curve`` report)."""
    from deconfoundlm.evaluation.ab_curve import CURVES, curve_figure, log_worth

    curve = _read_csv(d, "learning_curve.csv")
    if not curve["curve"].isin(CURVES).all():
        raise _invalid(d, "learning_curve.csv: column 'curve' must name one of " + ", ".join(CURVES))
    if curve["all"].dtype != bool:
        raise _invalid(d, "learning_curve.csv: column 'all' must hold True/False")
    for col in ("accuracy", "ci_low", "ci_high"):
        if not curve[col].between(0, 1).all():
            raise _invalid(d, f"learning_curve.csv: column {col!r} must hold accuracies from 0 to 1")
    if not (curve["tests"] >= 1).all():
        raise _invalid(d, "learning_curve.csv: column 'tests' must hold positive numbers of tests")
    worth = log_worth(curve)
    judged = _held_out_pairs(d)
    fig = curve_figure(curve, worth)
    shown = curve.assign(tests=[f"all ({t})" if a else str(t) for t, a in zip(curve["tests"], curve["all"],
                                                                             strict=True)]).drop(columns="all")
    return (f"<h2>{html.escape(number)}What is the log worth in A/B tests?</h2><p>N counts the randomized tests "
            "that compare two or more texts. A reward fitted on N such tests alone "
            "(<code>fit-reward TESTS --test COL</code>: one intercept per test), the log's deconfounded reward, and "
            "the log's reward grounded on the same N tests (<code>fit-reward LOG --ab TESTS --test COL</code>), "
            "scored on the significant pairs of held-out tests. Mean over splits with a 95% t-interval over "
            f"splits.{judged} The log is worth {html.escape(worth['says'])}.</p>" + _png(fig) + _table(shown))


def _held_out_pairs(d: Path) -> str:
    """" Held-out pairs per split: ... (the pair test)." from an ab-curve's learning_curve.json
    (absent in a demo's folder, or malformed: nothing)."""
    try:
        facts = read_json(d / "learning_curve.json") if (d / "learning_curve.json").is_file() else {}
    except (OSError, UnreadableJSON):
        raise _invalid(d, "learning_curve.json is not valid JSON") from None
    pairs, test = (facts.get("held_out_pairs"), facts.get("pair_test")) if isinstance(facts, dict) else (None, None)
    if not (isinstance(pairs, list) and pairs and all(isinstance(n, int) and not isinstance(n, bool) for n in pairs)
            and isinstance(test, str)):
        return ""
    return (f" Significant held-out pairs per split: {', '.join(map(str, pairs))} "
            f"({html.escape(test[:100])}).")


def read_sensitivity(path: Path, fail: Callable[[str], UserError]) -> dict:
    """A ``sensitivity --out`` result (or a demo's sensitivity.json), checked."""

    try:
        sens = read_json(path)
    except (OSError, UnreadableJSON):
        raise fail(f"{path.name} is not valid JSON") from None
    if not isinstance(sens, dict) or not isinstance(sens.get("summary"), list) \
            or not all(isinstance(x, str) for x in sens["summary"]) or not isinstance(sens.get("benchmarks"), dict):
        raise fail(f"{path.name} has no summary (a list of sentences) and benchmarks")
    return sens


def _sensitivity_block(sens: dict) -> str:
    rows = [{"scenario": f"as strong as {name!r}", "partial R^2 with outcome": b.get("cf_y"),
             "partial R^2 with reward": b.get("cf_d"), "effect lower": b.get("theta_lower"),
             "effect upper": b.get("theta_upper")} for name, b in sens["benchmarks"].items()
            if isinstance(b, dict) and all(v is None or _number(v) for v in b.values())]
    return ("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in sens["summary"]) + "</ul>"
            + (_table(pd.DataFrame(rows)) if rows else ""))


def sensitivity_section(d: Path) -> str:
    """How strong an unnamed confounder would have to be (DoubleML), in plain words."""
    sens = read_sensitivity(d / "sensitivity.json", lambda why: _invalid(d, why))
    return ("<h2>5. What if a confounder was not named?</h2><p>The cross-fitted deconfounded reward of the "
            "observational log (split 0) as a treatment, the week as the control, the outcome on the log-odds "
            "scale: a partially linear double-ML fit and its omitted-variable sensitivity analysis "
            "(DoubleML).</p>" + _sensitivity_block(sens))


def candidates_section(d: Path) -> str:
    """Section 5: SmolLM2 candidates for held-out stories, the pick of each reward, and the
    story's real headlines with their A/B result."""
    from deconfoundlm.evaluation.candidates import pick_summary

    cand = _read_csv(d, "candidates.csv", allow_empty=True, columns=CANDIDATE_COLUMNS)
    real = _read_csv(d, "real_headlines.csv", allow_empty=True, columns=REAL_COLUMNS) if (d / "real_headlines.csv").is_file() \
        else pd.DataFrame(columns=REAL_COLUMNS)
    block = ("<h2>6. Fluent candidates: what each reward picks</h2><p>For held-out stories, SmolLM2-135M-Instruct "
             "was given the story's opening (lede) and wrote several candidate headlines (sampled, seeded). Each "
             "reward scored every candidate and picked its best. The real headlines of the same story, with their "
             "randomized A/B result (CTR, rank within the test), are shown for comparison. Every candidate is in "
             "<code>candidates.csv</code>.</p>")
    if not len(cand):
        return block + "<p class='note'>No candidates were written in this run.</p>"
    for c in ("naive_pick", "deconfound_pick"):
        cand[c] = cand[c].astype(str).str.lower().isin(["true", "1"])
    stories = cand["test_id"].nunique()
    picks = []
    for test_id, g in cand.groupby("test_id", sort=False):
        n_pick = g[g["naive_pick"]]["candidate"].iloc[0] if g["naive_pick"].any() else ""
        d_pick = g[g["deconfound_pick"]]["candidate"].iloc[0] if g["deconfound_pick"].any() else ""
        r = real[real["test_id"] == test_id].sort_values("ab_rank")
        best = f"{r['headline'].iloc[0]} (CTR {100 * r['ctr'].iloc[0]:.2f}%)" if len(r) else ""
        picks.append({"story (lede)": str(g["lede"].iloc[0])[:160], "naive pick": n_pick,
                      "deconfounded pick": d_pick, "same pick": n_pick == d_pick, "A/B winner (real)": best})
    picks = pd.DataFrame(picks)
    disagree = int((~picks["same pick"]).sum())
    block += (f"<p>{stories} stories, {len(cand)} candidates: the two rewards pick different headlines for "
              f"{disagree} of {stories} stories.</p>")
    block += _table(picks.head(12))
    block += ("<p>Surface features of the picks against all candidates (share of headlines with digits, "
              "&ldquo;you&rdquo;, a question mark; mean words):</p>" + _table(pick_summary(cand)))
    if len(real):
        shown = real[real["test_id"].isin(cand["test_id"].unique()[:6])]
        block += ("<p>The real headlines of the first stories, with their A/B result and both rewards "
                  "(ab_rank 1 = highest CTR in the randomized test):</p>")
        block += _table(shown[["test_id", "headline", "ctr", "impressions", "ab_rank", "naive_reward",
                               "deconfound_reward"]], floatfmt="{:.4f}")
    return block


STUDY_COLUMNS = ("policy", "stories", "headlines", "judge", "gain_vs_base", "gain_ci_low", "gain_ci_high",
                 "win_rate_vs_naive", "win_ci_low", "win_ci_high", "fluency", "on_topic", "digits", "you", "question",
                 "words", "distinct_2")
STUDY_EXAMPLE_COLUMNS = ("test_id", "lede")


def _numeric_or_empty(d: Path, name: str, df: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Columns of numbers where an empty cell means 'not measured' (a base policy has no win rate)."""
    for c in columns:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = values.isna() & df[c].notna() | np.isinf(values.to_numpy(float))
        if bad.any():
            raise _invalid(d, f"{name}: column {c!r} must hold numbers")
        df[c] = values
    return df


def policy_study_section(d: Path, number: str = "7") -> str:
    """The Upworthy policy study: who writes better headlines, judged by an experimental reward
    fitted on tests the policies never saw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _read_csv(d, "policy_study.csv", columns=STUDY_COLUMNS)
    table = _numeric_or_empty(d, "policy_study.csv", table, STUDY_COLUMNS[1:])
    examples = _read_csv(d, "policy_study_examples.csv", allow_empty=True, columns=STUDY_EXAMPLE_COLUMNS) \
        if (d / "policy_study_examples.csv").is_file() else pd.DataFrame()
    try:
        facts = read_json(d / "policy_study.json")
    except (OSError, UnreadableJSON):
        raise _invalid(d, "policy_study.json is not valid JSON") from None
    judge = facts.get("judge") if isinstance(facts, dict) else None
    if not isinstance(judge, dict) or not all(isinstance(judge.get(k), (int, float)) or judge.get(k) is None
                                              for k in ("heldout_accuracy", "heldout_pairs", "tests")):
        raise _invalid(d, "policy_study.json has no judge (heldout_accuracy, heldout_pairs, tests)")
    acc = judge.get("heldout_accuracy")
    block = (f"<h2>{number}. Who writes better headlines?</h2><p>SmolLM2-135M-Instruct writes headlines for the "
             "ledes of story tests it never saw, as it is (base), with each reward picking the best of its K "
             "candidates, and (where run) after LoRA-DPO with each reward. A <b>judge</b> scores every headline: "
             "an experimental reward fitted only on the randomized within-test variation of separate judge tests "
             f"({judge.get('tests')} tests; pairwise accuracy "
             f"{'-' if acc is None else f'{acc:.3f}'} on {judge.get('heldout_pairs')} significant pairs of "
             "held-out judge tests). Gain: the judge's log-odds of a click, relative to the base model, mean over "
             "stories with a story-bootstrap 95% CI; win rate: share of stories where the policy beats the "
             "naive-reward policy of the same kind. The stories' own A/B-tested headlines are shown as a "
             "reference.</p>")
    shown = table[["policy", "stories", "headlines", "gain_vs_base", "gain_ci_low", "gain_ci_high",
                   "win_rate_vs_naive", "fluency", "on_topic", "digits", "you", "question", "words", "distinct_2"]]
    block += _table(shown)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(table) + 1))
    y = np.arange(len(table))[::-1]
    lo = (table["gain_vs_base"] - table["gain_ci_low"]).fillna(0).clip(lower=0)
    hi = (table["gain_ci_high"] - table["gain_vs_base"]).fillna(0).clip(lower=0)
    ax.errorbar(table["gain_vs_base"], y, xerr=[lo, hi], fmt="o", capsize=3)
    ax.set_yticks(y, table["policy"].astype(str))
    ax.axvline(0, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("judge score gain over the base model (log-odds of a click)")
    block += _png(fig)
    if len(examples):
        block += ("<p>Five stories: every policy's first headline with its judge score in brackets, next to the "
                  "story's real A/B winner.</p>" + _table(examples))
    return block


def _summary_block(d: Path, heading: str) -> str:
    """A benchmark's summary.md under ``heading``, as preformatted text."""
    require_regular_file(d / "summary.md")
    try:
        summary = (d / "summary.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise UserError(f"{d}: not a valid benchmark output: summary.md cannot be read as text") from None
    return f"<h2>{html.escape(heading)}</h2><pre>" + html.escape(summary) + "</pre>"


def benchmark_sections(d: Path) -> list[str]:
    out = [_summary_block(d, "Semi-synthetic benchmark")]
    for p in sorted(d.glob("*.png")):
        if p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n":
            out.append(_img_file(p))
    return out


# -- a reward directory ----------------------------------------------------------------------------
def _show(v, fmt: str = "{:.4g}") -> str:
    """A value of an untrusted metrics file as text: finite numbers formatted, strings escaped."""
    if _number(v):
        return str(v) if isinstance(v, int) else fmt.format(v)
    return html.escape(str(v))[:200] if isinstance(v, str) else "-"


def _curve_figure(curves: list[dict], family: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = {"binomial": "log-odds", "bernoulli": "log-odds", "poisson": "log rate"}.get(family, "outcome units")
    fig, axes = plt.subplots(len(curves), 1, figsize=(9, 2.6 * len(curves)), squeeze=False)
    for ax, c in zip(axes[:, 0], curves, strict=True):
        if c["kind"] == "levels":
            shown = list(zip(c["x"], c["effect"], strict=True))[:40]
            ax.bar([str(x)[:20] for x, _ in shown], [e for _, e in shown], color="#26a")
            ax.tick_params(axis="x", labelrotation=45 if len(shown) > 7 else 0, labelsize=8)
        else:
            x = pd.to_datetime(np.asarray(c["x"]), unit="D") if c["term"] == "trend" else c["x"]
            ax.plot(x, c["effect"], color="#26a")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylabel(f"g(c), {scale}")
        ax.set_title(f"{c['column']}: {c['term']}")
    fig.tight_layout()
    return _png(fig)


def read_evaluation(path: Path, fail: Callable[[str], UserError]) -> dict:
    """An ``evaluate --out`` result, checked."""

    try:
        ev = read_json(path)
    except (OSError, UnreadableJSON):
        raise fail(f"{path.name} is not valid JSON") from None
    ok = isinstance(ev, dict) and isinstance(ev.get("rewards"), list) and ev["rewards"] and all(
        isinstance(r, dict) and all(_number(r.get(k)) for k in ("accuracy", "ci_low", "ci_high"))
        for r in ev["rewards"]) and isinstance(ev.get("differences", []), list) and all(
        isinstance(r, dict) and all(_number(r.get(k)) for k in ("difference", "ci_low", "ci_high"))
        for r in ev.get("differences", [])) and all(_number(ev.get(k)) for k in ("pairs", "tests"))
    if not ok:
        raise fail(f"{path.name} is not an `evaluate --out` result (rewards with accuracy and CI, pairs, tests)")
    return ev


def reward_sections(d: Path, reward, diagnostics: dict | None, sensitivity: dict | None,
                    evaluation: dict | None) -> list[str]:
    """The report of one fitted reward: its fit, g(c), diagnostics, sensitivity and A/B evaluation."""
    m, est = reward.metrics, reward.estimator
    design = est.design_
    null, cv_dev = m.get("null_deviance"), m.get("cv_deviance")
    explained = 1 - cv_dev / null if _number(null) and _number(cv_dev) and null > 0 else None
    roles = reward.roles
    rows = [
        ["method", reward.method], ["family", est.family_],
        ["outcome", roles.outcome + (f" out of {roles.trials}" if roles.trials else "")], ["text column", roles.text],
        ["encoder", reward.encoder_name + (" (fine-tuned, saved in text_model/)" if reward.finetuned else "")],
        ["rows", _show(m.get("n_rows"))],
        ["confounder terms", "; ".join(design.terms()) if design is not None else "none"],
        ["penalty (alpha, chosen by CV)", _show(m.get("alpha"))],
        ["CV folds", _show(m.get("cv_folds"))], ["CV deviance (mean per row or trial)", _show(cv_dev)],
        ["deviance of the intercept-only model", _show(null)],
        ["deviance explained (CV)", "-" if explained is None else f"{explained:.2%}"],
        ["standard errors", _show(m.get("standard_errors"))],
        ["data fingerprint", _show(reward.info.get("data_fingerprint"))],
    ]
    if "invariance_weight" in m:
        rows.append(["invariance weight", _show(m.get("invariance_weight"))])
    t = reward.info.get("tests_only")
    if isinstance(t, dict):  # validated with the config (rewards/artifact.py)
        rows += [["fitted on randomized A/B tests alone (fit-reward --test)",
                  f"{t['tests']} tests, {t['rows']} rows (test column {t['test']}): one intercept per test, so only the "
                  "differences between texts within a test count"],
                 ["text term's strength (alpha, CV over tests)", _show(t["strength"])]]
    g = reward.info.get("grounding")
    if isinstance(g, dict):  # validated with the config (rewards/artifact.py)
        mg = m.get("grounding") if isinstance(m.get("grounding"), dict) else {}
        verdict = mg.get("calibration", {}).get("verdict") if isinstance(mg.get("calibration"), dict) else None
        choice = mg.get("choice")
        rows += [["grounded on A/B tests (fit-reward --ab)", f"{g['tests']} tests, {g['rows']} rows of {g['ab']} "
                  f"(test column {g['test']}, fingerprint {g['ab_fingerprint']})"],
                 ["the log's reward in the grounded one (s)", _show(g["log_scale"])],
                 ["correction strength (alpha, CV over tests)", "none" if g["strength"] is None else _show(g["strength"])],
                 ["calibration slope of the log's reward on these tests", _show(g["calibration_slope"])]]
        if isinstance(choice, str):
            rows.append(["how the strength was chosen", choice])
        if isinstance(verdict, str):
            rows.append(["what the tests say", verdict])
        from deconfoundlm.rewards.grounding import in_sample_note

        seen = mg.get("tests_in_log")
        if isinstance(seen, dict) and _number(seen.get("tests")) and _number(seen.get("of")) and seen["tests"] > 0:
            rows.append(["tests holding a text of the log", in_sample_note(int(seen["tests"]), int(seen["of"]))])
    out = ["<h2>1. The fit</h2>" + _table(pd.DataFrame(rows, columns=["", "value"]))
           + "<p class='note'>The reward r(x) is the text's effect on the link scale, mean 0 over the training "
           "texts; the confounders' effect g(c) below is part of the fit and not of the reward.</p>"]

    curves = est.confounder_curves()
    if curves:
        spans = ", ".join(f"{html.escape(c['column'])} ({html.escape(c['term'])}): "
                          f"{max(c['effect']) - min(c['effect']):.3f}" for c in curves)
        out.append("<h2>2. What the confounders do</h2><p>The fitted g(c), term by term (each centered at its "
                   f"mean). Range of each term (highest minus lowest): {spans}. A naive reward would credit part "
                   "of these swings to the texts published at those times or places.</p>"
                   + _curve_figure(curves, est.family_))
    elif isinstance(reward.info.get("tests_only"), dict):
        out.append("<h2>2. What the confounders do</h2><p class='note'>This reward was fitted on randomized A/B "
                   "tests alone: within a test the confounders are balanced, and what a test's rows share (its "
                   "week, its placement, its audience) each test's own intercept absorbs, so it has no confounder "
                   "term.</p>")
    else:
        out.append("<h2>2. What the confounders do</h2><p class='note'>This reward has no additive confounder "
                   "term (method " + html.escape(reward.method) + ").</p>")

    block = "<h2>3. Diagnostics</h2>"
    fit_diag = m.get("diagnostics") if isinstance(m.get("diagnostics"), dict) else {}
    rows = []
    if _number(fit_diag.get("confounder_deviance_share")):
        rows.append(["confounder strength (share of outcome deviance the confounders explain, CV)",
                     f"{fit_diag['confounder_deviance_share']:.1%}"])
    ent = fit_diag.get("entanglement_r2")
    if isinstance(ent, dict) and ent:
        rows.append(["entanglement (CV R^2 of each confounder from the text)",
                     ", ".join(f"{html.escape(str(k))}: {_show(v, '{:.3f}')}" for k, v in ent.items())])
    if diagnostics is not None:
        rows += [["overlap (text variance left within confounder strata)", f"{diagnostics['overlap']:.1%}"],
                 ["correlation of naive and deconfounded rewards", f"{diagnostics['reward_correlation']:.3f}"]]
    block += _table(pd.DataFrame(rows, columns=["diagnostic", "value"])) if rows else \
        "<p class='note'>No diagnostics were estimated at fit time.</p>"
    if diagnostics is not None:
        block += "".join(f'<div class="warn">{html.escape(w)}</div>' for w in diagnostics.get("warnings", []))
        block += _words_block(diagnostics)
    elif isinstance(reward.info.get("tests_only"), dict):
        block += ("<p class='note'>The diagnostics of confounders describe a log; for this reward's randomized "
                  "tests, the check is its accuracy against other randomized tests (<code>deconfoundlm evaluate</code>, "
                  "passed here with <code>--evaluation</code>).</p>")
    else:
        block += ("<p class='note'>For the words whose naive reward comes from the confounders, run "
                  "<code>deconfoundlm diagnose ... --out diag.json</code> and pass <code>--diagnostics "
                  "diag.json</code>.</p>")
    out.append(block)

    if sensitivity is not None:
        out.append(f"<h2>{len(out) + 1}. What if a confounder was not named?</h2><p>DoubleML's omitted-variable sensitivity "
                   "analysis of the cross-fitted reward (<code>deconfoundlm sensitivity</code>).</p>"
                   + _sensitivity_block(sensitivity))
    if evaluation is not None:
        table = pd.DataFrame([{"reward": str(r.get("model_dir", ""))[-60:], "accuracy": r["accuracy"],
                               "ci_low": r["ci_low"], "ci_high": r["ci_high"]} for r in evaluation["rewards"]])
        block = (f"<h2>{len(out) + 1}. Against randomized A/B tests</h2><p>Pairwise accuracy on "
                 f"{int(evaluation['pairs'])} pairs of different texts from "
                 f"{_show(evaluation.get('tests_with_pairs'))} of {int(evaluation['tests'])} tests "
                 f"({html.escape(str(evaluation.get('test', '')))}); 95% CI: cluster bootstrap over tests "
                 "(<code>deconfoundlm evaluate</code>). 0.5 is chance.</p>" + _table(table))
        if evaluation.get("differences"):
            diffs = pd.DataFrame([{"reward": str(r.get("model_dir", ""))[-60:],
                                   "minus": str(r.get("baseline", ""))[-60:], "difference": r["difference"],
                                   "ci_low": r["ci_low"], "ci_high": r["ci_high"]} for r in evaluation["differences"]])
            block += "<p>Paired differences (the same resampled tests for both rewards):</p>" + _table(diffs)
        fitted = [f"{str(r.get('model_dir', ''))[-60:]} ({r['fitted_on_tests']} of the tests)"
                  for r in evaluation["rewards"] if _number(r.get("fitted_on_tests")) and r["fitted_on_tests"] > 0]
        if fitted:
            block += (f"<p class='warn'>Fitted on some of these A/B tests: {html.escape(', '.join(fitted))}. Their "
                      "accuracy on those tests is in-sample (how well they fit them), not a check.</p>")
        out.append(block)
    return out


def _is_reward_dir(d: Path) -> bool:
    return (d / "config.json").is_file() and (d / "model.safetensors").is_file()


def write_report(directory: str | Path, out: str | Path | None = None, force: bool = False, *,
                 diagnostics: str | Path | None = None, sensitivity: str | Path | None = None,
                 evaluation: str | Path | None = None) -> Path:
    """A self-contained HTML report of a demo output, a benchmark output, a policy study or a
    reward directory (with a reward: optional ``diagnose``, ``sensitivity`` and ``evaluate``
    JSON results to include). Returns the path written; default ``DIR/report.html``, for a reward
    directory ``DIR-report.html`` beside it (nothing is written into a reward's folder)."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{d}: no such directory; give a reward folder (fit-reward {label('out')}) or a demo or "
                        "benchmark output folder")
    extras = {"--diagnostics": diagnostics, "--sensitivity": sensitivity, "--evaluation": evaluation}
    if _is_reward_dir(d):
        return _write_reward_report(d, out, force, extras)
    given = [flag for flag, v in extras.items() if v is not None]
    if given:
        raise UserError(f"{given[0]} applies to the report of a reward folder (fit-reward {label('out')}), and {d} is not one")
    return _write_output_report(d, out, force)


def _write_reward_report(d: Path, out, force: bool, extras: dict) -> Path:
    from deconfoundlm.evaluation.provenance import check_evaluation, check_log_result
    from deconfoundlm.outputs import write_text
    from deconfoundlm.pipeline import load_reward

    out = Path(out) if out is not None else d.parent / f"{d.resolve().name}-report.html"
    files = {flag: Path(v) for flag, v in extras.items() if v is not None}
    for flag, path in files.items():
        if not path.is_file():
            raise UserError(f"{flag} {path}: no such file")
    check_output(out, force, HTML_FILE, [d, *files.values()])
    reward = load_reward(d)  # validated like every other load (untrusted folder)

    def fail_for(flag: str, path: Path) -> Callable[[str], UserError]:
        return lambda why: UserError(f"{flag} {path}: {why}")

    diag = sens = ev = None
    if "--diagnostics" in files:

        p = files["--diagnostics"]
        try:
            raw = read_json(p)
        except (OSError, UnreadableJSON):
            raise UserError(f"{label('diagnostics')} {p}: not valid JSON") from None
        diag = _check_diagnostics(raw, fail_for("--diagnostics", p), p.name)
    if "--sensitivity" in files:
        sens = read_sensitivity(files["--sensitivity"], fail_for("--sensitivity", files["--sensitivity"]))
    if "--evaluation" in files:
        ev = read_evaluation(files["--evaluation"], fail_for("--evaluation", files["--evaluation"]))
    # each result must come from this reward's data (or, for evaluate, have scored this reward)
    notes = [note for note in (
        diag is not None and check_log_result(diag, reward, d, "--diagnostics", files["--diagnostics"]),
        sens is not None and check_log_result(sens, reward, d, "--sensitivity", files["--sensitivity"]),
        ev is not None and check_evaluation(ev, d, "--evaluation", files["--evaluation"])) if note]
    title = f"deconfoundlm reward: {reward.method} ({reward.estimator.family_}) of {reward.roles.outcome!r}"
    body = [f"<p class='warn'>Not checked: {html.escape(n)}.</p>" for n in notes] + reward_sections(d, reward, diag,
                                                                                                   sens, ev)
    write_text(_page(title, body, "Method: DeconfoundLM (Loghmani 2025, arXiv 2506.00152). Reward folder: "
                     + html.escape(str(d))), out)
    return out


def _page(title: str, body: list[str], note: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='note'>{note}</p>" + "\n".join(body) + "</body></html>")


def _write_output_report(directory: Path, out: str | Path | None = None, force: bool = False) -> Path:
    d = Path(directory)
    out = Path(out) if out is not None else d / "report.html"
    study = (d / "policy_study.csv").is_file() and not (d / "timeseries.csv").exists()
    benchmark = (d / "summary.md").is_file() and (d / "results.csv").is_file() and not (d / "timeseries.csv").exists()
    study_inputs = [d / "policy_study.csv", d / "policy_study_examples.csv", d / "policy_study.json"]
    inputs = study_inputs if study else [d / "summary.md", d / "results.csv", d / "learning_curve.csv",
                                         d / "learning_curve.json", *sorted(d.glob("*.png"))] if benchmark \
        else [d / f for f in (*DEMO_FILES, "candidates.csv", "real_headlines.csv", "sensitivity.json",
                              "differences.csv", "counts.json")] + study_inputs
    if not benchmark and not study:
        missing = [f for f in DEMO_FILES if not (d / f).is_file()]
        if missing:
            raise UserError(f"{d}: not a reward folder (no config.json and model.safetensors), nor a demo output "
                            f"(no {missing[0]}), nor a benchmark output (no summary.md); give the folder that "
                            "fit-reward, demo or benchmark wrote")
    check_output(out, force, HTML_FILE, inputs)  # before the work, and never over an input
    data = "Data: The Upworthy Research Archive (Matias et al. 2021, CC BY 4.0)."
    if study:
        body, title = [policy_study_section(d, "1")], "deconfoundlm: who writes better Upworthy headlines?"
    elif benchmark and (d / "learning_curve.csv").is_file():  # benchmark ab-curve: the user's own log and tests
        body = [_summary_block(d, "The run"), learning_curve_section(d, "")]
        title, data = "deconfoundlm: what is your log worth in A/B tests?", "Data: the log and A/B tests of the command."
    elif benchmark:
        body, title = benchmark_sections(d), "deconfoundlm benchmark"
    else:
        body, title = demo_sections(d), "deconfoundlm: deconfounded rewards on the Upworthy archive"
    from deconfoundlm.outputs import write_text

    write_text(_page(title, body, f"{data} Method: DeconfoundLM (Loghmani 2025, arXiv 2506.00152)."), out)
    return out
