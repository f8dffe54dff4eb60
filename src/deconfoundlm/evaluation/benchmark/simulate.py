"""``deconfoundlm benchmark simulate``: every method against a known causal effect.

For each seed the distinct headlines are split into logging / evaluation / candidate pools;
for each scenario and log size a log is simulated (dgp.py), every method is fitted on it with
its own observational CV, and scored against f* on pools it never saw:

- recovery: Spearman correlation of the reward with f* on the evaluation pool;
- selection: mean f* of the top 10% of the candidate pool by reward, normalized so that the
  pool mean is 0 and the top 10% by f* itself is 1;
- spurious rate: share of that top 10% with the spurious feature (pool share alongside).

``oracle`` is ``deconfound`` (joint) fitted on a randomized log of the same size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from deconfoundlm.configs import SimulateOptions
from deconfoundlm.errors import UserError
from deconfoundlm.evaluation.benchmark import dgp
from deconfoundlm.features.text import MemoizedEncoder, get_encoder
from deconfoundlm.logs import upworthy
from deconfoundlm.options import label
from deconfoundlm.outputs import (
    BENCHMARK_DIR,
    atomic_directory,
    check_output,
    write_json,
    write_marker,
    write_table,
    write_text,
)
from deconfoundlm.pipeline import fit_reward
from deconfoundlm.progress import disable, say
from deconfoundlm.rewards.finetune_config import FinetuneConfig

SCENARIOS = ("none", "spurious", "entangled")  # dgp_v1's; a DGP file names its own
METHODS = {  # name -> (method, options)
    "naive": ("naive", {}),
    "confounder-input": ("confounder-input", {}),
    "odin": ("odin", {}),
    "crm": ("crm", {}),
    "deconfound": ("deconfound", {"estimator": "joint"}),
    "deconfound-po": ("deconfound", {"estimator": "partialling-out"}),
    "oracle": ("deconfound", {"estimator": "joint"}),
    # with --finetune: the backbone trained end to end
    "naive-ft": ("naive", {"finetune": True}),
    "deconfound-ft": ("deconfound", {"estimator": "joint", "finetune": True}),
}
FINETUNED = ("naive-ft", "deconfound-ft")


@dataclass
class BenchmarkConfig:
    scenarios: tuple[str, ...] = SCENARIOS
    sizes: tuple[int, ...] = (2000, 8000)
    seeds: int = 5
    family: str = "gaussian"
    encoder: str = "minilm"
    methods: tuple[str, ...] = tuple(m for m in METHODS if m not in FINETUNED)
    cv: int = 3
    top: float = 0.1
    dgp: str = "dgp_v1"
    max_texts: int | None = None  # subsample the headlines (smoke runs)
    policy_stage: bool = False  # also steer a generator by each reward (policy_stage.py)
    policy: dict = field(default_factory=dict)  # PolicyStageConfig overrides
    finetune: FinetuneConfig | None = None  # also fine-tune the backbone (naive-ft, deconfound-ft)
    invariance_weights: tuple[float, ...] = ()  # sweep: odin@w and crm@w at each fixed weight
    pessimism: tuple[float, ...] = ()  # policy stage: also DPO on deconfound ranked by r - K se


def _metrics(r_eval, f_eval, r_cand, f_cand, s_cand, top: float) -> dict[str, float]:
    k = max(1, int(round(top * len(r_cand))))
    chosen = np.argsort(-r_cand, kind="stable")[:k]
    best = np.sort(f_cand)[::-1][:k].mean()
    denom = best - f_cand.mean()
    return {
        "recovery": float(stats.spearmanr(r_eval, f_eval).statistic),
        "selection": float((f_cand[chosen].mean() - f_cand.mean()) / denom) if denom > 0 else float("nan"),
        "spurious_rate": float(s_cand[chosen].mean()),
        "spurious_pool": float(s_cand.mean()),
    }


def benchmark_config(options: SimulateOptions) -> BenchmarkConfig:
    """The benchmark's full settings from the options a user sets, checked before any work: the
    DGP's scenarios, the methods, the policy stage's generator and method."""
    from deconfoundlm.alignment.policies import BUILTIN_POLICIES
    from deconfoundlm.evaluation.benchmark.policy_stage import parse_policy_method

    dgp_config = dgp.load_config(options.dgp)
    scenarios = tuple(dgp_config["scenarios"]) if options.scenario == "all" else (options.scenario,)
    for sc in scenarios:
        dgp.scenario_config(dgp_config, sc)  # a UserError naming the DGP's scenarios
    allowed = [m for m in METHODS if options.finetune or m not in FINETUNED]
    methods = tuple(options.methods.split(",")) if options.methods else tuple(m for m in METHODS if m not in FINETUNED)
    unknown = [m for m in methods if m not in allowed]
    if unknown:
        raise UserError(f"{label('methods')}: unknown method {unknown[0]!r}; use " + ", ".join(allowed))
    policy = {k: v for k, v in (("steps", options.policy_steps), ("policy", options.policy),
                                ("method", options.policy_method), ("samples", options.policy_samples),
                                ("lora", options.policy_lora)) if v is not None}
    kind, _ = parse_policy_method(policy.get("method", "dpo"))
    for key, flag in (("steps", "--policy-steps"), ("lora", "--policy-lora")):
        if kind == "best-of" and key in policy:
            raise UserError(f"{flag} applies to {label('policy_method')} dpo or grpo, not best-of-K (nothing is trained)")
    if "policy" in policy and policy["policy"] not in BUILTIN_POLICIES and not Path(policy["policy"]).is_dir():
        raise UserError(f"{label('policy')} {policy['policy']!r}: use " + ", ".join(BUILTIN_POLICIES)
                        + " or a folder holding a causal language model")
    cfg = BenchmarkConfig(scenarios=scenarios, sizes=options.sizes, seeds=options.seeds,
                          family=options.family or dgp_config.get("family", "gaussian"), dgp=options.dgp,
                          encoder=options.encoder, methods=methods, cv=options.cv, max_texts=options.max_texts,
                          policy_stage=options.policy_stage, policy=policy,
                          invariance_weights=options.invariance_weights or ())
    if options.finetune:
        from deconfoundlm.rewards.finetune_config import check_finetune

        cfg.finetune = FinetuneConfig()
        check_finetune(cfg.finetune, "deconfound", options.encoder, None)
    if options.pessimism:
        cfg.pessimism = tuple(k for k in options.pessimism if k > 0)
    return cfg


def run_simulate_command(options: SimulateOptions) -> str:
    """``deconfoundlm benchmark simulate``: the output checked, the settings made, the benchmark
    run; returns its summary (markdown)."""
    check_output(options.out, options.force, BENCHMARK_DIR)
    run_benchmark(options.out, benchmark_config(options), force=options.force)
    return (Path(options.out) / "summary.md").read_text()


def run_benchmark(out: str | Path, cfg: BenchmarkConfig, force: bool = False) -> pd.DataFrame:
    t0 = time.time()
    config = dgp.load_config(cfg.dgp)
    packages = upworthy.load_packages()
    texts = sorted(packages["headline"].astype(str).unique())
    if cfg.max_texts is not None and cfg.max_texts < len(texts):
        texts = sorted(np.random.default_rng(0).choice(texts, cfg.max_texts, replace=False).tolist())
    feats = dgp.text_features(texts, config)
    scenario_configs = {sc: dgp.scenario_config(config, sc) for sc in cfg.scenarios}
    truth = {sc: (dgp.true_effect(feats, c), dgp.spurious(feats, c)) for sc, c in scenario_configs.items()}
    say(f"encoding {len(texts)} distinct headlines with {cfg.encoder} ...")
    enc = MemoizedEncoder(get_encoder(cfg.encoder))
    enc.encode(texts)
    if cfg.finetune is not None:
        cfg.methods = tuple(cfg.methods) + tuple(m for m in FINETUNED if m not in cfg.methods)
    for w in cfg.invariance_weights:  # fixed weights of the baselines, to find the best on the truth
        for base in ("odin", "crm"):
            METHODS[f"{base}@{w:g}"] = (base, {"invariance_weight": float(w)})
            if base in cfg.methods and f"{base}@{w:g}" not in cfg.methods:
                cfg.methods = tuple(cfg.methods) + (f"{base}@{w:g}",)

    rows, policy_rows, pcfg = [], [], None
    if cfg.policy_stage:
        from deconfoundlm.evaluation.benchmark.policy_stage import (
            POLICY_REWARDS,
            PolicyStageConfig,
            normalize,
            run_policy_stage,
        )

        missing = [m for m in POLICY_REWARDS if m not in cfg.methods]
        cfg.methods = tuple(cfg.methods) + tuple(missing)
        pcfg = PolicyStageConfig(**cfg.policy)
        lede_of = _ledes(packages)
    total = cfg.seeds * len(cfg.scenarios) * len(cfg.sizes) * len(cfg.methods)
    bar = tqdm(total=total, desc="benchmark fits", unit="fit", disable=disable())
    for seed in range(cfg.seeds):
        rng = np.random.default_rng([seed, 2026])
        perm = rng.permutation(len(texts))
        n_log, n_eval = int(config["pools"]["logging"] * len(texts)), int(config["pools"]["evaluation"] * len(texts))
        pool_log, pool_eval, pool_cand = perm[:n_log], perm[n_log : n_log + n_eval], perm[n_log + n_eval :]
        for scenario in cfg.scenarios:
            f_all, s_all = truth[scenario]
            for n in cfg.sizes:
                sim_rng = np.random.default_rng([seed, n, list(config["scenarios"]).index(scenario)])
                obs = dgp.simulate_log(feats.iloc[pool_log].reset_index(drop=True), scenario, n,
                                       cfg.family, sim_rng, config)
                rnd = dgp.simulate_log(feats.iloc[pool_log].reset_index(drop=True), scenario, n,
                                       cfg.family, np.random.default_rng([seed, n, 99]), config, randomized=True)
                fitted = {}
                for name in cfg.methods:
                    method, opts = METHODS[name]
                    log = rnd if name == "oracle" else obs
                    frame = pd.DataFrame({"text": [texts[i] for i in pool_log[log.text_index]], "y": log.outcome,
                                          "c": log.confounder})
                    if log.trials is not None:
                        frame["n"] = log.trials
                    t = time.time()
                    opts = dict(opts)
                    finetune = cfg.finetune if opts.pop("finetune", False) else None
                    estimator = opts.pop("estimator", "joint")
                    reward = fit_reward(frame, text="text", outcome="y", trials="n" if log.trials is not None else None,
                                        confounders=["c:numeric"], method=method, estimator=estimator, family=cfg.family,
                                        encoder=cfg.encoder if finetune else enc, seed=seed, cv=cfg.cv,
                                        params=opts, diagnose=False, finetune=finetune)
                    m = _metrics(reward.score([texts[i] for i in pool_eval]), f_all[pool_eval],
                                 reward.score([texts[i] for i in pool_cand]), f_all[pool_cand], s_all[pool_cand],
                                 cfg.top)
                    rows.append({"scenario": scenario, "n": n, "seed": seed, "method": name, **m,
                                 "alpha": reward.estimator.alpha_,
                                 "invariance_weight": getattr(reward.estimator, "invariance_weight_", None),
                                 "seconds": time.time() - t})
                    fitted[name] = reward
                    bar.update()
                if cfg.policy_stage:
                    log_texts = [texts[i] for i in pool_log[obs.text_index]]
                    scorers = {name: fitted[name].score for name in POLICY_REWARDS}
                    for k in cfg.pessimism:  # ranked by r - K se (pessimistic alignment)
                        scorers[f"deconfound-K{k:g}"] = (
                            lambda t, k=k, dec=fitted["deconfound"]: dec.pessimistic_score(t, k))
                    # Chat policies write for the ledes of the candidate pool's stories.
                    ledes = [lede_of[texts[i]] for i in pool_cand if lede_of.get(texts[i])]
                    prow = run_policy_stage(log_texts, scorers, scenario_configs[scenario], seed, pcfg,
                                            ledes=ledes, encoder=enc, log_ledes=[lede_of.get(t) for t in log_texts])
                    policy_rows += [{"scenario": scenario, "n": n, "seed": seed, **r} for r in normalize(prow)]
    bar.close()
    results = pd.DataFrame(rows)
    summary = summarize(results)
    text = summary_markdown(summary, cfg, time.time() - t0)
    if cfg.invariance_weights:
        text += "\n" + tuned_baselines_markdown(results)
    policy = pd.DataFrame(policy_rows)
    if len(policy):
        text += policy_markdown(policy, pcfg)
    with atomic_directory(out, force=force, kind=BENCHMARK_DIR) as tmp:
        write_marker(tmp, "deconfoundlm-benchmark")
        write_table(results, tmp / "results.csv")
        if len(policy):
            write_table(policy, tmp / "policy_results.csv")
        write_text(text, tmp / "summary.md")
        write_json({"config": cfg.__dict__, "dgp": config, "seconds": time.time() - t0}, tmp / "run.json")
        plot(summary, tmp)
    return summary


def _ledes(packages: pd.DataFrame) -> dict[str, str]:
    """Each headline's story lede (HTML stripped; the longest of its packages)."""
    from deconfoundlm.evaluation.candidates import strip_html

    lede = packages["lede"].fillna("").map(strip_html)
    frame = pd.DataFrame({"headline": packages["headline"].astype(str), "lede": lede})
    frame = frame[frame["lede"].str.len() >= 40]
    return frame.loc[frame.groupby("headline")["lede"].apply(lambda s: s.str.len().idxmax())].set_index(
        "headline")["lede"].to_dict()


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan with a single value)."""
    v = np.asarray(pd.Series(values).dropna(), dtype=float)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(half)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval over seeds per scenario x n x method x metric."""
    out = []
    for (scenario, n, method), g in results.groupby(["scenario", "n", "method"], sort=False):
        row = {"scenario": scenario, "n": n, "method": method, "seeds": len(g)}
        for metric in ("recovery", "selection", "spurious_rate"):
            row[metric], row[f"{metric}_ci"] = mean_ci(g[metric])
        row["spurious_pool"] = float(g["spurious_pool"].mean())
        out.append(row)
    return pd.DataFrame(out)


def summary_markdown(summary: pd.DataFrame, cfg: BenchmarkConfig, seconds: float) -> str:
    lines = [f"# Semi-synthetic benchmark ({cfg.dgp}, {cfg.family}, encoder {cfg.encoder})", "",
             f"{cfg.seeds} seed(s); mean and 95% t-interval half-width over seeds; {seconds:.0f} s.",
             "recovery = Spearman(reward, f*) on the evaluation pool; selection = normalized f* of the "
             f"top {cfg.top:.0%} of the candidate pool (0 = pool mean, 1 = best possible); spurious = share "
             "of that top set with the spurious feature.", ""]
    for scenario in summary["scenario"].unique():
        s = summary[summary["scenario"] == scenario]
        lines += [f"## {scenario}", "", "| n | method | recovery | selection | spurious rate (pool) |",
                  "|---:|---|---|---|---|"]
        for r in s.itertuples():
            lines.append(f"| {r.n} | {r.method} | {r.recovery:.3f} ± {r.recovery_ci:.3f} | "
                         f"{r.selection:.3f} ± {r.selection_ci:.3f} | {r.spurious_rate:.3f} ± "
                         f"{r.spurious_rate_ci:.3f} ({r.spurious_pool:.3f}) |")
        lines.append("")
    return "\n".join(lines)


def tuned_baselines_markdown(results: pd.DataFrame) -> str:
    """odin and crm at the observationally chosen weight and at the best weight on the truth
    (mean recovery over seeds: an upper bound no user can reach), against deconfound."""
    lines = ["## Baselines tuned fairly (invariance weight)", "",
             "chosen = the default fit (one-standard-error rule on CV deviance; weights chosen listed); "
             "best on truth = the fixed weight with the highest mean recovery over seeds.", "",
             "| scenario | n | method | recovery (chosen) | weights chosen | best weight on truth | recovery (best) "
             "| deconfound recovery |", "|---|---:|---|---|---|---|---|---|"]
    for (scenario, n), g in results.groupby(["scenario", "n"], sort=False):
        dec = g[g["method"] == "deconfound"]["recovery"]
        for base in ("odin", "crm"):
            chosen = g[g["method"] == base]
            sweep = g[g["method"].str.startswith(f"{base}@")]
            if not len(chosen) or not len(sweep):
                continue
            by_w = sweep.groupby("method")["recovery"].mean()
            best = by_w.idxmax()
            weights = ", ".join(f"{w:g}" for w in sorted(chosen["invariance_weight"].dropna().unique()))
            lines.append(f"| {scenario} | {n} | {base} | {chosen['recovery'].mean():.3f} | {weights} | "
                         f"{best.split('@')[1]} | {by_w[best]:.3f} | {dec.mean():.3f} |")
    return "\n".join(lines) + "\n"


def policy_markdown(policy: pd.DataFrame, pcfg=None) -> str:
    """Mean and 95% t-interval over seeds of the policy stage."""
    how = f"{pcfg.policy}, {pcfg.method}" if pcfg is not None else "policy stage"
    lines = ["", f"## Policy stage ({how}; texts per policy)", "",
             "| scenario | n | policy | mean f* | normalized f* (base 0, oracle 1) | spurious rate | entangled rate | "
             "fluency | on-topic | distinct-2 | cut off |", "|---|---:|---|---|---|---|---|---|---|---|---:|"]

    def ci(v):
        mean, half = mean_ci(v)
        return f"{mean:.3f} ± {half:.3f}"

    for (scenario, n, name), g in policy.groupby(["scenario", "n", "policy"], sort=False):
        kept = g["candidates"] if "candidates" in g and g["candidates"].notna().any() else g["samples"]
        cut = f"{int(g['cut_off'].sum())} of {int(g['cut_off'].sum() + kept.sum())}" if "cut_off" in g else "-"
        extra = " | ".join(ci(g[c]) if c in g and g[c].notna().any() else "-"
                           for c in ("entangled_rate", "fluency", "on_topic", "distinct_2"))
        lines.append(f"| {scenario} | {n} | {name} | {ci(g['f_mean'])} | {ci(g['f_normalized'])} | "
                     f"{ci(g['spurious_rate'])} | {extra} | {cut} |")
    lines += ["", "fluency: mean per-token log-likelihood under the base policy; on-topic: cosine of text and "
              "story lede (chat policies); cut off: replies the token limit cut off (dropped and redrawn) of all "
              "drawn (best-of-K: the shared candidates).", "",
              "Paired differences over seeds (same log, same seed; mean and 95% t-interval):", "",
              "| scenario | n | difference | mean f* | spurious rate | entangled rate | seeds |",
              "|---|---:|---|---|---|---|---:|"]
    for (scenario, n), g in policy.groupby(["scenario", "n"], sort=False):
        wide = g.pivot_table(index="seed", columns="policy", values=["f_mean", "spurious_rate", "entangled_rate"])
        pols = set(g["policy"])
        for other in [p for p in ("naive", "odin", *sorted(p for p in pols if p.startswith("deconfound-K")))
                      if p in pols]:
            if "deconfound" not in pols:
                continue
            sign = -1 if other.startswith("deconfound-K") else 1
            a, b = ("deconfound", other) if sign > 0 else (other, "deconfound")
            df_ = (wide["f_mean"][a] - wide["f_mean"][b]).dropna()
            ds_ = (wide["spurious_rate"][a] - wide["spurious_rate"][b]).dropna()
            de_ = (wide["entangled_rate"][a] - wide["entangled_rate"][b]).dropna() if "entangled_rate" in wide \
                else pd.Series(dtype=float)
            lines.append(f"| {scenario} | {n} | {a} - {b} | {ci(df_)} | {ci(ds_)} | {ci(de_) if len(de_) else '-'} "
                         f"| {len(df_)} |")
    return "\n".join(lines) + "\n"


def plot(summary: pd.DataFrame, directory: Path) -> list[Path]:
    """One PNG per scenario: methods side by side per log size, with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for scenario in summary["scenario"].unique():
        s = summary[summary["scenario"] == scenario]
        methods, sizes = list(dict.fromkeys(s["method"])), sorted(s["n"].unique())
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        width = 0.8 / len(methods)
        for ax, metric in zip(axes, ("recovery", "selection", "spurious_rate"), strict=True):
            for k, method in enumerate(methods):
                m = s[s["method"] == method].set_index("n").reindex(sizes)
                ax.bar(np.arange(len(sizes)) + k * width, m[metric], width, yerr=m[f"{metric}_ci"],
                       capsize=2, label=method)
            ax.set_xticks(np.arange(len(sizes)) + 0.4 - width / 2, [f"n={n}" for n in sizes])
            ax.set_title(metric.replace("_", " "))
            ax.axhline(0, color="black", lw=0.5)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"scenario: {scenario}")
        fig.tight_layout()
        path = directory / f"{scenario}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
