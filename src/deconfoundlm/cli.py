"""Command-line interface. Bad input: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from deconfoundlm.checks import MAX_SEED
from deconfoundlm.errors import DataWarning, UserError

PROG = "deconfoundlm"
MAX_BENCHMARK_ROWS = 1_000_000
MAX_SAMPLES = 100_000  # generate: texts sampled per prompt (--n times --best-of)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        raise UserError(f"{self.prog}: {message}")


def _at_least(low: int):
    """An argparse type: an integer no smaller than ``low`` (bad values: one-line error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _bounded(low: int, high: int):
    """An argparse type: an integer in [low, high] (the bound is said in the error)."""
    base = _at_least(low)

    def parse(text: str) -> int:
        value = base(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {value:,}")
        return value

    return parse


def _finite_float(condition: Callable[[float], bool], says: str):
    """An argparse type: a finite number meeting ``condition`` (bad values: one-line error)."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or not condition(value):
            raise argparse.ArgumentTypeError(f"must be {says}, got {text}")
        return value

    return parse


def _sizes(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated numbers of tests (2 to 10,000,000), or "none"."""
    if text.strip().lower() == "none":
        return ()
    parse = _bounded(2, 10_000_000)
    try:
        return tuple(sorted({parse(part.strip()) for part in text.split(",")}))
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


_seed = _bounded(0, MAX_SEED)
_positive_float = _finite_float(lambda v: v > 0, "a finite number above 0")
_non_negative_float = _finite_float(lambda v: v >= 0, "a finite number of at least 0")
_partial_r2 = _finite_float(lambda v: 0 <= v < 1, "a partial R^2 from 0 to below 1")


def _dask_address(text: str) -> str:
    """An argparse type: the syntax of a --dask value (nothing is contacted yet)."""
    from deconfoundlm.distributed.cluster import check_dask

    try:
        return check_dask(text, flag="")
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None


def _add_dask(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--dask", metavar="ADDRESS|local[:N[:MEMORY]]", type=_dask_address,
                   help=f"{what} on a Dask cluster: a scheduler address (tcp://HOST:8786) or local[:N[:MEMORY]] "
                        "(start N worker processes here, each limited to MEMORY, e.g. local:2:3.5GB); DATA may "
                        "then be a directory or glob of Parquet files")


def _add_seed_json_out(p: argparse.ArgumentParser, what: str, seed_of: str = "") -> None:
    """--seed, --out FILE.json and --force of the commands that write one JSON result."""
    p.add_argument("--seed", type=_seed, default=0, help=f"random seed{' ' + seed_of if seed_of else ''}, 0 to "
                   "2**32-1 (default 0)")
    p.add_argument("--out", metavar="FILE.json", help=f"write {what} as JSON here")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")


def _add_encoder_family(p: argparse.ArgumentParser) -> None:
    """--encoder and --family as fit-reward reads them (diagnose, sensitivity)."""
    p.add_argument("--encoder", default="minilm", metavar="NAME_OR_PATH",
                   help="text backbone (default minilm); see fit-reward --encoder")
    p.add_argument("--family", default="auto", choices=["auto", "gaussian", "bernoulli", "binomial", "poisson"],
                   help="outcome family (default auto, as in fit-reward)")


def _add_roles(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--text", required=required, help="column with the texts")
    p.add_argument("--outcome", required=required, help="column with the outcome (successes with --trials)")
    p.add_argument("--trials", help="column with the number of trials (e.g. impressions; binomial), or the "
                   "exposure with --family poisson")
    p.add_argument("--confounder", action="append", default=[], metavar="COL:TYPE",
                   help="a known confounder; TYPE is categorical, numeric, time (trend; + weekday + hour when the values have a time of day), hour (cyclic) or weekday (repeatable)")
    p.add_argument("--weights", help="column with sample weights")


def _cmd_fit_reward(a: argparse.Namespace) -> int:
    from deconfoundlm.pipeline import fit_reward

    finetune = _finetune_config(a)
    params = {}
    if a.invariance_weight is not None:
        if a.method not in ("odin", "crm"):
            raise UserError(f"--invariance-weight applies to --method odin or crm, not {a.method!r}")
        params["invariance_weight"] = a.invariance_weight
    reward = fit_reward(
        _data_path(a.data), text=a.text, outcome=a.outcome, trials=a.trials, confounders=a.confounder,
        weights=a.weights, group=a.group, method=a.method, estimator=a.estimator, family=a.family,
        encoder=a.encoder, head=a.head, seed=a.seed, cv=a.cv, out=a.out, force=a.force, finetune=finetune,
        params=params, dask=a.dask, ab=None if a.ab is None else _data_path(a.ab), test=a.test,
    )
    m = reward.metrics
    if a.family == "auto" and m["family"] == "poisson":
        print(f"family: poisson (auto: {a.outcome!r} is a non-negative integer count without --trials; "
              "pass --family gaussian to model it as a continuous outcome)")
    if finetune is not None:
        ft = m["finetune"]
        print(f"fine-tuned {a.method} reward on {a.encoder} ({m['family']}, {ft['train_rows']} training + "
              f"{ft['heldout_rows']} held-out rows, {ft['epochs_run']} epoch(s), held-out deviance "
              f"{m['cv_deviance']:.6g}) -> {a.out}")
    else:
        print(f"fitted {a.method} reward ({m['family']}, {m['n_rows']} rows, CV deviance "
              f"{m['cv_deviance']:.6g}, alpha {m['alpha']:g}) -> {a.out}")
    design = reward.estimator.design_
    if design is not None:
        print("confounder terms: " + "; ".join(design.terms()))
    if "invariance_weight" in m:
        print(f"invariance weight {m['invariance_weight']:g} ({m['invariance_weight_from']})")
    if "diagnostics" in m:
        d = m["diagnostics"]
        if d.get("confounder_deviance_share") is None:
            print(d.get("note", "diagnostics not estimated"))
        else:
            ent = ", ".join(f"{k} {v:.3f}" for k, v in d["entanglement_r2"].items())
            print(f"confounders explain {100 * d['confounder_deviance_share']:.1f}% of outcome deviance; "
                  f"entanglement (CV R^2 from text): {ent}")
    if "grounding" in m:
        print(format_grounding(m["grounding"]))
    return 0


def format_grounding(g: dict) -> str:
    """What ``fit-reward --ab`` did, in three lines."""
    how = ("kept the log's reward (rescaled by " + f"{g['log_scale']:.2f}); the tests' correction did not "
           "improve held-out tests" if g["strength"] is None else
           f"log's reward x {g['log_scale']:.2f} + a correction from the tests (strength alpha {g['strength']:g})")
    return (f"grounded on {g['tests']} A/B tests ({g['rows']} rows, {g['cv_folds']}-fold CV over tests): {how}\n"
            f"calibration of the log's reward on these tests: {g['calibration']['verdict']}")


def _finetune_config(a: argparse.Namespace):
    """The --finetune settings, or None; fine-tuning flags without --finetune are an error."""
    given = [f for f, v in (("--lora", a.lora), ("--epochs", a.epochs), ("--learning-rate", a.learning_rate),
                            ("--batch-size", a.batch_size), ("--max-length", a.max_length)) if v not in (None, False)]
    if not a.finetune:
        if given:
            raise UserError(f"{given[0]} applies to --finetune only")
        return None
    from deconfoundlm.rewards.finetune import FinetuneConfig

    cfg = FinetuneConfig(lora=a.lora)
    for name in ("epochs", "learning_rate", "batch_size", "max_length"):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    return cfg


def _cmd_score(a: argparse.Namespace) -> int:
    from deconfoundlm.pipeline import score_file

    at = None
    if a.at:
        at = {}
        for item in a.at:
            col, eq, value = item.partition("=")
            if not eq or not col.strip() or not value.strip():
                raise UserError(f"--at {item!r}: expected COL=VALUE, e.g. --at test_week=201410")
            if col.strip() in at:
                raise UserError(f"--at {col.strip()}: given twice")
            at[col.strip()] = value.strip()
    n = score_file(a.model_dir, a.data, text=a.text, out=a.out, force=a.force, se=a.se, dask=a.dask, at=at)
    print(f"scored {n} rows -> {a.out}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from deconfoundlm.evaluation.demo import DemoConfig, format_table, run_demo
    from deconfoundlm.outputs import DEMO_DIR, check_output

    check_output(a.out, a.force, DEMO_DIR)
    cfg = DemoConfig(encoder=a.encoder, splits=a.splits, seed=a.seed)
    if a.align_steps is not None:
        cfg.align_steps = a.align_steps
    if a.finetune:
        from deconfoundlm.rewards.finetune import FinetuneConfig, check_finetune

        cfg.finetune = FinetuneConfig()
        check_finetune(cfg.finetune, "deconfound", a.encoder, None)
    if a.quick:  # a reduced run: 400 tests, 2 splits, fewer folds, a few DPO steps
        cfg.max_tests, cfg.splits, cfg.cv, cfg.cv_experimental, cfg.bootstrap = 400, min(a.splits, 2), 3, 2, 200
        cfg.align_steps, cfg.samples = (4 if a.align_steps is None else a.align_steps), 8
        cfg.candidates.stories, cfg.candidates.k, cfg.candidates.max_new_tokens = 3, 3, 16
        cfg.curve_sizes = (50, 100)
    if a.curve_sizes is not None:
        cfg.curve_sizes = a.curve_sizes
    if a.stories is not None:
        cfg.candidates.stories = a.stories
    if a.policy_study:
        from deconfoundlm.evaluation.benchmark.upworthy_study import StudyConfig, check_study_config

        cfg.policy_study = StudyConfig(encoder=a.encoder, seed=a.seed)
        if a.quick:
            cfg.policy_study.max_tests, cfg.policy_study.stories, cfg.policy_study.k = 400, 3, 2
            cfg.policy_study.cv, cfg.policy_study.bootstrap = 3, 200
        check_study_config(cfg.policy_study)
    table = run_demo(a.out, cfg, force=a.force)
    print("\nPairwise accuracy on held-out randomized A/B pairs (Upworthy, |z| > 1.96):")
    print(format_table(table))
    print(f"\nwritten to {a.out}/ (results.csv, results.json, diagnostics.json, samples.csv, ...)")
    print(f"report: {Path(a.out).resolve() / 'report.html'}")
    return 0


def _policy_options(a: argparse.Namespace) -> dict:
    """The policy stage's options (checked before any fit or model load)."""
    from deconfoundlm.alignment.policies import BUILTIN_POLICIES
    from deconfoundlm.evaluation.benchmark.policy_stage import parse_policy_method

    given = {"steps": a.policy_steps, "policy": a.policy, "method": a.policy_method, "samples": a.policy_samples,
             "lora": a.policy_lora}
    given = {k: v for k, v in given.items() if v is not None}
    if given and not a.policy_stage:
        flag = {"steps": "--policy-steps", "policy": "--policy", "method": "--policy-method",
                "samples": "--policy-samples", "lora": "--policy-lora"}[next(iter(given))]
        raise UserError(f"{flag} applies to the policy stage: add --policy-stage")
    kind, _ = parse_policy_method(given.get("method", "dpo"))
    for key, flag in (("steps", "--policy-steps"), ("lora", "--policy-lora")):
        if kind == "best-of" and key in given:
            raise UserError(f"{flag} applies to --policy-method dpo or grpo, not best-of-K (nothing is trained)")
    if "policy" in given and given["policy"] not in BUILTIN_POLICIES and not Path(given["policy"]).is_dir():
        raise UserError(f"--policy {given['policy']!r}: use " + ", ".join(BUILTIN_POLICIES)
                        + " or a folder holding a causal language model")
    return given


def _cmd_benchmark_upworthy(a: argparse.Namespace) -> int:
    from deconfoundlm.evaluation.benchmark.upworthy_study import (
        StudyConfig,
        run_and_write,
        study_markdown,
    )

    cfg = StudyConfig(encoder=a.encoder, seed=a.seed, stories=a.stories, k=a.k, dpo_steps=a.dpo_steps,
                      dpo_batch=a.dpo_batch, samples=a.samples, max_tests=a.max_tests)
    command = "deconfoundlm " + " ".join(shlex.quote(x) for x in sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] \
        else None
    table = run_and_write(a.out, cfg, force=a.force, command=command)
    from deconfoundlm.outputs import read_json

    print(study_markdown(table, read_json(Path(a.out) / "policy_study.json")))
    print(f"written to {a.out}/ (policy_study.csv, policy_study_stories.csv, policy_study_examples.csv, report.html)")
    return 0


def _cmd_benchmark_ab_curve(a: argparse.Namespace) -> int:
    from deconfoundlm.evaluation.ab_curve import SIZES, format_curve
    from deconfoundlm.evaluation.benchmark.ab_curve import CurveConfig, run_curve_benchmark

    cfg = CurveConfig(sizes=SIZES if a.sizes is None else a.sizes, splits=a.splits, heldout=a.heldout,
                      alpha=0.05 if a.alpha is None else a.alpha, encoder=a.encoder, family=a.family, cv=a.cv,
                      seed=a.seed)
    command = "deconfoundlm " + " ".join(shlex.quote(x) for x in sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] \
        else None
    table, worth = run_curve_benchmark(_data_path(a.data), _data_path(a.ab), text=a.text, outcome=a.outcome,
                                       trials=a.trials, weights=a.weights, confounders=a.confounder, test=a.test,
                                       cfg=cfg, out=a.out, force=a.force, command=command)
    print(format_curve(table, worth))
    print(f"written to {a.out}/ (learning_curve.csv, learning_curve_per_split.csv, learning_curve.png, report.html)")
    return 0


def _cmd_benchmark_simulate(a: argparse.Namespace) -> int:
    from deconfoundlm.evaluation.benchmark.dgp import load_config, scenario_config
    from deconfoundlm.evaluation.benchmark.simulate import (
        FINETUNED,
        METHODS,
        BenchmarkConfig,
        run_benchmark,
    )
    from deconfoundlm.outputs import BENCHMARK_DIR, check_output

    check_output(a.out, a.force, BENCHMARK_DIR)
    dgp_config = load_config(a.dgp)
    scenarios = tuple(dgp_config["scenarios"]) if a.scenario == "all" else (a.scenario,)
    for sc in scenarios:
        scenario_config(dgp_config, sc)  # a UserError naming the DGP's scenarios
    family = a.family or dgp_config.get("family", "gaussian")
    try:
        sizes = tuple(int(x) for x in a.n.split(","))
    except ValueError:
        raise UserError(f"--n {a.n!r}: expected comma-separated integers, e.g. 2000,8000") from None
    if any(n < 100 or n > MAX_BENCHMARK_ROWS for n in sizes):
        raise UserError(f"--n {a.n!r}: each log size must be from 100 to {MAX_BENCHMARK_ROWS:,}")
    allowed = [m for m in METHODS if a.finetune or m not in FINETUNED]
    methods = tuple(a.methods.split(",")) if a.methods else tuple(m for m in METHODS if m not in FINETUNED)
    unknown = [m for m in methods if m not in allowed]
    if unknown:
        raise UserError(f"--methods: unknown method {unknown[0]!r}; use " + ", ".join(allowed))
    cfg = BenchmarkConfig(scenarios=scenarios, sizes=sizes, seeds=a.seeds, family=family, dgp=a.dgp,
                          encoder=a.encoder, methods=methods, cv=a.cv, max_texts=a.max_texts,
                          policy_stage=a.policy_stage, policy=_policy_options(a))
    if a.finetune:
        from deconfoundlm.rewards.finetune import FinetuneConfig, check_finetune

        cfg.finetune = FinetuneConfig()
        check_finetune(cfg.finetune, "deconfound", a.encoder, None)
    if a.pessimism:
        try:
            ks = tuple(float(x) for x in a.pessimism.split(","))
        except ValueError:
            raise UserError(f"--pessimism {a.pessimism!r}: expected comma-separated numbers") from None
        import math

        if any(not math.isfinite(k) or k < 0 for k in ks):
            raise UserError(f"--pessimism {a.pessimism!r}: each K must be finite and at least 0")
        if not a.policy_stage:
            raise UserError("--pessimism applies to the policy stage: add --policy-stage")
        cfg.pessimism = tuple(k for k in ks if k > 0)
    if a.invariance_weights:
        try:
            weights = tuple(float(x) for x in a.invariance_weights.split(","))
        except ValueError:
            raise UserError(f"--invariance-weights {a.invariance_weights!r}: expected comma-separated numbers") from None
        import math

        if any(not math.isfinite(w) or not 0 < w <= 1e6 for w in weights):
            raise UserError(f"--invariance-weights {a.invariance_weights!r}: each weight must be above 0 and at "
                            "most 1e6")
        cfg.invariance_weights = weights
    run_benchmark(a.out, cfg, force=a.force)
    print((Path(a.out) / "summary.md").read_text())
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from deconfoundlm.evaluation.evaluate import evaluate, format_evaluation

    report = evaluate(a.model_dirs, _data_path(a.data), text=a.text, test=a.test, outcome=a.outcome, trials=a.trials,
                      winner=a.winner, alpha=a.alpha, bootstrap=a.bootstrap, seed=a.seed, out=a.out, force=a.force)
    print(format_evaluation(report))
    if a.out:
        print(f"written to {a.out}")
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from deconfoundlm.evaluation.report import write_report

    out = write_report(a.dir, a.out, force=a.force, diagnostics=a.diagnostics, sensitivity=a.sensitivity,
                       evaluation=a.evaluation)
    print(f"report: {Path(out).resolve()}")
    return 0


def _cmd_diagnose(a: argparse.Namespace) -> int:
    from deconfoundlm.evaluation.diagnose import diagnose, format_report

    report = diagnose(_data_path(a.data), text=a.text, outcome=a.outcome, trials=a.trials,
                      confounders=a.confounder, weights=a.weights, encoder=a.encoder, family=a.family, seed=a.seed,
                      cv=a.cv, out=a.out, force=a.force, dask=a.dask)
    print(format_report(report))
    if a.out:
        print(f"written to {a.out}")
    return 0


def _cmd_sensitivity(a: argparse.Namespace) -> int:
    from deconfoundlm.evaluation.sensitivity import sensitivity

    report = sensitivity(_data_path(a.data), text=a.text, outcome=a.outcome, trials=a.trials,
                         confounders=a.confounder, weights=a.weights, encoder=a.encoder, family=a.family,
                         seed=a.seed, cv=a.cv, cf_y=a.cf_y, cf_d=a.cf_d, out=a.out, force=a.force)
    print("\n".join(report["summary"]))
    if a.out:
        print(f"written to {a.out}")
    return 0


def _cmd_align(a: argparse.Namespace) -> int:
    from deconfoundlm.alignment.align import AlignConfig, align

    cfg = AlignConfig(method=a.method, policy=a.policy, seed=a.seed, pairs_from=a.pairs_from, lora=a.lora,
                      pessimism=a.pessimism)
    if a.steps is not None:
        cfg.steps = a.steps
    if a.beta is not None:
        cfg.beta = a.beta
    out = align(_data_path(a.data), a.reward, a.out, cfg, text=a.text, prompt=a.prompt,
                prompt_text=a.prompt_text, force=a.force, verbose=a.verbose)
    print(f"aligned {a.policy} with {a.method} on {a.reward} -> {out}")
    return 0


def _cmd_generate(a: argparse.Namespace) -> int:
    from deconfoundlm.alignment.generate import generate

    if a.n * a.best_of > MAX_SAMPLES:
        raise UserError(f"--n {a.n} x --best-of {a.best_of}: at most {MAX_SAMPLES:,} samples per prompt")
    df = generate(a.policy, a.n, a.out, prompt_text=a.prompt_text, prompts_file=a.prompts,
                  prompt_column=a.prompt, best_of=a.best_of, reward_dir=a.reward,
                  max_new_tokens=a.max_new_tokens, seed=a.seed, force=a.force, pessimism=a.pessimism)
    print(f"generated {len(df)} text(s) -> {a.out}")
    for t in df["text"].head(5):
        print(f"  {t}")
    return 0


def _cmd_serve(a: argparse.Namespace) -> int:
    from deconfoundlm.serving.server import ServeConfig, serve

    _SIGTERM["armed"] = False  # uvicorn drains the requests in flight on SIGTERM, then serve returns 0
    cfg = ServeConfig(host=a.host, port=a.port, token_file=a.token_file, max_batch=a.max_batch,
                      max_body_mb=a.max_body_mb, max_wait_ms=a.max_wait_ms, body_timeout_s=a.body_timeout)
    return serve(a.model_dir, cfg, announce=lambda line: print(line, flush=True))


def _data_path(data: str) -> str:
    """DATA may be the name of the bundled data set: ``upworthy``."""
    if data == "upworthy":
        from deconfoundlm.logs.upworthy import packages_path

        return str(packages_path())
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Deconfounded reward models and generator alignment "
                     "from observational logs (DeconfoundLM).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("fit-reward", help="fit a reward model on a log (CSV/Parquet/JSONL)")
    p.add_argument("data", help="the log: .csv, .parquet or .jsonl")
    _add_roles(p)
    p.add_argument("--method", default="deconfound", choices=_methods(), help="reward method (default: deconfound)")
    p.add_argument("--estimator", default="joint", choices=["joint", "partialling-out"],
                   help="deconfound estimator (default: joint)")
    p.add_argument("--family", default="auto", choices=["auto", "gaussian", "bernoulli", "binomial", "poisson"],
                   help="outcome family; auto: binomial with --trials, bernoulli for 0/1, poisson for another "
                        "non-negative integer count, else gaussian")
    p.add_argument("--encoder", default="minilm", metavar="NAME_OR_PATH",
                   help="text backbone: minilm (default), smollm2-135m, hashing[-DIM], a local model folder "
                        "or a Hugging Face model id in the local cache")
    p.add_argument("--head", choices=["linear", "mlp"], help="text head (default: the method's own)")
    p.add_argument("--invariance-weight", type=_finite_float(lambda v: 0 < v <= 1e6, "above 0 and at most 1e6"),
                   metavar="F",
                   help="odin/crm: weight of the invariance terms (default: chosen from 0.01..100 by the "
                        "one-standard-error rule on CV deviance)")
    p.add_argument("--group", metavar="COL", help="cluster column (an A/B test, an author): standard errors "
                   "of the reward are cluster-robust")
    ab = p.add_argument_group("your randomized A/B tests (grounding; --method deconfound, linear head)")
    ab.add_argument("--ab", metavar="AB_FILE", help="randomized A/B tests with the log's text/outcome/trials/weights "
                    "columns plus --test: the log's reward is corrected by their within-test evidence (strength "
                    "chosen by cross-validation over whole tests) and calibrated against them")
    ab.add_argument("--test", metavar="COL", help="with --ab: the column naming each row's test")
    ft = p.add_argument_group("end-to-end fine-tuning (DeconfoundLM with a trainable backbone)")
    ft.add_argument("--finetune", action="store_true",
                    help="train the backbone with the reward head and the confounder term; the model "
                         "directory then holds text_model/, a standard Hugging Face reward model")
    ft.add_argument("--lora", action="store_true", help="train LoRA adapters (peft), merged on save")
    ft.add_argument("--epochs", type=_bounded(1, 1000), help="at most this many epochs (default 3; early "
                    "stopping on a held-out 20%% of the log)")
    ft.add_argument("--learning-rate", type=_positive_float, help="default 5e-5 (5e-4 with --lora)")
    ft.add_argument("--batch-size", type=_bounded(1, 65_536), help="texts per step and device (default 32)")
    ft.add_argument("--max-length", type=_bounded(4, 8192), help="tokens per text (default 64)")
    p.add_argument("--cv", type=_bounded(2, 1000), default=5, help="cross-validation folds for the penalty (default 5)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    _add_dask(p, "read, encode and fit")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_cmd_fit_reward)

    p = sub.add_parser("score", help="score texts with a saved reward model")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--text", required=True, help="column with the texts")
    p.add_argument("--se", action="store_true", help="add reward_se, the standard error of each reward "
                   "(linear naive and deconfound rewards; sandwich from the fitted GLM)")
    p.add_argument("--at", action="append", default=[], metavar="COL=VALUE",
                   help="also write 'predicted': each text's predicted outcome (binomial: per trial, e.g. CTR; "
                        "poisson: per unit of exposure) with the confounders set to these values, e.g. "
                        "--at test_week=201410 (repeat for each confounder; deconfound and confounder-input rewards)")
    _add_dask(p, "score")
    p.add_argument("--out", required=True, help="output file (.csv, .parquet, .jsonl); with --dask a folder of "
                   "Parquet files (the input's columns plus reward)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("demo", help="the main job: observational vs experimental check on Upworthy")
    p.add_argument("--out", default="demo-output", help="output directory (default demo-output)")
    p.add_argument("--encoder", default="minilm", metavar="NAME_OR_PATH",
                   help="text backbone (default minilm); see fit-reward --encoder")
    p.add_argument("--splits", type=_bounded(1, 100), default=5, help="seeded train/held-out splits (default 5)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    p.add_argument("--quick", action="store_true", help="reduced run (400 tests, 2 splits) for tests")
    p.add_argument("--curve-sizes", type=_sizes, metavar="N,N,...|none",
                   help="numbers of A/B tests of the learning curve (\"what is the log worth?\"; all the training "
                        "tests are added); default 50,100,200,400,800,1600 (--quick: 50,100); none: skip it")
    p.add_argument("--stories", type=_bounded(0, 1000),
                   help="held-out stories SmolLM2 writes 8 candidate headlines for, each reward picking one "
                        "(default 24; 0 skips the section)")
    p.add_argument("--align-steps", type=_bounded(0, 100_000),
                   help="DPO steps of the tiny-headlines toy section per reward (default 0: skipped; --quick: 4)")
    p.add_argument("--policy-study", action="store_true",
                   help="also run the policy study (SmolLM2 best-of-8 with each reward for 48 story tests, judged "
                        "by an experimental reward of separate tests; see `benchmark upworthy`; ~12 min on 2 CPUs)")
    p.add_argument("--finetune", action="store_true",
                   help="also fine-tune the --encoder backbone end to end (naive, deconfound and experimental "
                        "rows; slow on a CPU)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("evaluate", help="pairwise accuracy of rewards on your own randomized A/B tests",
                       description="For each pair of different texts within a test whose outcomes differ "
                       "significantly (or a declared winner), does the reward rank them like the test? Accuracy "
                       "with a cluster-bootstrap 95%% CI over tests; with several reward folders, each one's paired "
                       "difference from the first.")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help="reward folder(s) from fit-reward")
    p.add_argument("data", metavar="DATA", help="the A/B log: .csv, .parquet, .jsonl, or 'upworthy'")
    p.add_argument("--text", required=True, help="column with the texts")
    p.add_argument("--test", required=True, metavar="COL",
                   help="column with the test id: rows of one test were randomized against each other")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--outcome", metavar="COL",
                   help="outcome column: successes with --trials (two-proportion z-test, a row per arm); "
                        "without --trials, one row per recipient (Welch's t-test) or a count per arm (Poisson)")
    g.add_argument("--winner", metavar="COL", help="true/false column marking the row that won its test")
    p.add_argument("--trials", metavar="COL", help="column with the trials of --outcome (e.g. impressions)")
    p.add_argument("--alpha", type=_finite_float(lambda v: 0 < v < 1, "above 0 and below 1"),
                   help="significance level of a pair's test (default 0.05)")
    p.add_argument("--bootstrap", type=_bounded(100, 100_000), default=1000,
                   help="cluster-bootstrap resamples (default 1000)")
    _add_seed_json_out(p, "the evaluation", "of the bootstrap")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("report", help="a self-contained HTML report of a reward folder or a demo/benchmark output")
    p.add_argument("dir", metavar="DIR", help="a reward folder (fit-reward --out: the fit, the confounders' effect "
                   "g(c), diagnostics) or the output folder of `demo`, `benchmark simulate` or `benchmark upworthy`")
    p.add_argument("--diagnostics", metavar="FILE.json",
                   help="reward report: include `diagnose --out` (overlap, the words a naive reward gets wrong)")
    p.add_argument("--sensitivity", metavar="FILE.json", help="reward report: include `sensitivity --out`")
    p.add_argument("--evaluation", metavar="FILE.json", help="reward report: include `evaluate --out`")
    p.add_argument("--out", metavar="FILE.html",
                   help="HTML file (default DIR/report.html; for a reward folder DIR-report.html beside it)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("diagnose", help="how confounded is a log? strength, entanglement, overlap")
    p.add_argument("data", help="the log: .csv, .parquet, .jsonl, or 'upworthy'")
    _add_roles(p)
    _add_encoder_family(p)
    p.add_argument("--cv", type=_bounded(2, 1000), default=5, help="cross-validation folds (default 5)")
    _add_dask(p, "fit both rewards")
    _add_seed_json_out(p, "the diagnostics")
    p.set_defaults(func=_cmd_diagnose)

    p = sub.add_parser("sensitivity", help="how strong would an unnamed confounder have to be? (DoubleML)")
    p.add_argument("data", help="the log: .csv, .parquet, .jsonl, or 'upworthy'")
    _add_roles(p)
    _add_encoder_family(p)
    p.add_argument("--cv", type=_bounded(2, 100), default=5, help="folds for cross-fitting (default 5)")
    p.add_argument("--cf-y", type=_partial_r2, default=0.03,
                   help="scenario: partial R^2 of the unnamed confounder with the outcome (default 0.03)")
    p.add_argument("--cf-d", type=_partial_r2, default=0.03,
                   help="scenario: partial R^2 of the unnamed confounder with the reward (default 0.03)")
    _add_seed_json_out(p, "the analysis")
    p.set_defaults(func=_cmd_sensitivity)

    p = sub.add_parser("align", help="tune a generator to a reward with TRL (sft, dpo, grpo)")
    p.add_argument("data", metavar="DATA", help="the log (.csv/.parquet/.jsonl) or 'upworthy' (bundled)")
    p.add_argument("--reward", required=True, metavar="MODEL_DIR", help="a reward model from fit-reward")
    p.add_argument("--method", required=True, choices=["sft", "dpo", "grpo"])
    p.add_argument("--policy", required=True, metavar="NAME_OR_PATH",
                   help="tiny-headlines, smollm2-135m, a local model directory or a Hugging Face id")
    p.add_argument("--text", help="text column (default: the reward model's)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt", metavar="COL", help="prompt column (DPO pairs are matched within a prompt)")
    g.add_argument("--prompt-text", metavar="STR", help="one prompt for every example")
    p.add_argument("--pairs-from", default="reward", choices=["reward", "labels"],
                   help="rank rows by the reward (default) or by deconfounded labels")
    p.add_argument("--steps", type=_bounded(1, 1_000_000), help="optimizer steps (default 100)")
    p.add_argument("--beta", type=_positive_float, help="DPO beta / GRPO KL weight, above 0 (default 0.1)")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft), merged on save")
    p.add_argument("--pessimism", type=_non_negative_float, default=0.0, metavar="K",
                   help="rank (sft, dpo) or reward (grpo) by r(x) - K se(x) (default 0)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--verbose", action="store_true",
                   help="print the trainer's per-step logs (always saved to OUT/train_log.json)")
    p.set_defaults(func=_cmd_align)

    p = sub.add_parser("generate", help="sample texts from a policy (optionally best-of-K)")
    p.add_argument("policy", metavar="POLICY", help="tiny-headlines, smollm2-135m, or a model directory")
    p.add_argument("--n", type=_bounded(1, MAX_SAMPLES), required=True,
                   help=f"texts per prompt (at most {MAX_SAMPLES:,} with --best-of)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt-text", metavar="STR", help="one prompt (plain models: a prefix)")
    g.add_argument("--prompts", metavar="FILE", help="a table of prompts: its only column, or the one --prompt COL names")
    p.add_argument("--prompt", metavar="COL", help="prompt column of --prompts (needed when the file has more than one column)")
    p.add_argument("--best-of", type=_bounded(1, MAX_SAMPLES), default=1, metavar="K",
                   help="keep the best of K samples by --reward")
    p.add_argument("--reward", metavar="MODEL_DIR", help="score the texts with this reward model")
    p.add_argument("--pessimism", type=_non_negative_float, default=0.0, metavar="K",
                   help="with --best-of: keep the sample with the highest r(x) - K se(x) (default 0)")
    p.add_argument("--max-new-tokens", type=_bounded(1, 4096), default=32)
    p.add_argument("--seed", type=_seed, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    p.add_argument("--out", required=True, help="output file (.csv, .parquet, .jsonl)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("serve", help="serve a reward over HTTP for RL trainers (TRL, OpenRLHF --remote_rm_url)",
                       description="POST /score {\"texts\": [...]} -> {\"rewards\": [...]}; POST /get_reward "
                       "(OpenRLHF's remote reward protocol: the query without its prompt is scored); GET /health; "
                       "GET /info. Loopback only unless --host says otherwise, and then only with --token-file.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a reward folder from fit-reward")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; any other needs --token-file)")
    p.add_argument("--port", type=_bounded(1, 65535), default=8000, help="port (default 8000)")
    p.add_argument("--token-file", metavar="FILE",
                   help="file whose first line is the bearer token requests must carry (Authorization: Bearer ...)")
    p.add_argument("--max-batch", type=_bounded(1, 100_000), default=256,
                   help="most texts per request and per scoring batch (default 256)")
    p.add_argument("--max-body-mb", type=_finite_float(lambda v: 0 < v <= 1024, "above 0 and at most 1024"),
                   default=1.0, help="largest request body in MB (default 1)")
    p.add_argument("--max-wait-ms", type=_finite_float(lambda v: 0 <= v <= 1000, "from 0 to 1000"), default=5.0,
                   help="how long a batch waits for more requests, in ms (default 5)")
    p.add_argument("--body-timeout", type=_finite_float(lambda v: 0 < v <= 3600, "above 0 and at most 3600"),
                   default=30.0, metavar="SECONDS",
                   help="a request body not complete within this many seconds gets a 408 (default 30)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("benchmark", help="benchmarks with ground truth")
    bsub = p.add_subparsers(dest="benchmark", required=True, parser_class=_Parser)
    p = bsub.add_parser("simulate", help="semi-synthetic benchmark: known causal effect, controlled confounding")
    p.add_argument("--dgp", default="dgp_v1", metavar="NAME_OR_FILE",
                   help="the data-generating process: dgp_v1 (default), dgp_v2 (adds the 'misleading' scenario) "
                        "or a JSON file in the schema of docs/method.md")
    p.add_argument("--scenario", default="all",
                   help="a scenario of the DGP (dgp_v1: none, spurious, entangled; dgp_v2 also misleading) or all")
    p.add_argument("--n", default="2000,8000", help="log sizes, comma-separated (default 2000,8000)")
    p.add_argument("--seeds", type=_bounded(1, 1000), default=5, help="number of seeds (default 5)")
    p.add_argument("--family", choices=["gaussian", "binomial"],
                   help="outcome family (default: the DGP's 'family', else gaussian)")
    p.add_argument("--encoder", default="minilm", metavar="NAME_OR_PATH",
                   help="text backbone (default minilm); see fit-reward --encoder")
    p.add_argument("--methods", help="comma-separated subset of methods (default: all)")
    p.add_argument("--cv", type=_at_least(2), default=3, help="CV folds each method uses for its own penalty (default 3)")
    p.add_argument("--max-texts", type=_at_least(100), help="subsample the headline pool (smoke runs)")
    p.add_argument("--policy-stage", action="store_true",
                   help="also steer a generator with the naive, odin, deconfound and oracle rewards "
                        "(--policy, --policy-method) and measure the true effect of its texts")
    p.add_argument("--policy-steps", type=_at_least(1),
                   help="DPO / GRPO steps per reward in the policy stage (default 60)")
    p.add_argument("--policy-lora", action=argparse.BooleanOptionalAction, default=None,
                   help="policy stage: train LoRA adapters (merged back) rather than every weight (default: LoRA "
                        "for every policy but tiny-headlines)")
    p.add_argument("--policy", metavar="NAME_OR_PATH",
                   help="policy stage generator: tiny-headlines (default), smollm2-135m (prompted with story ledes) "
                        "or a local causal LM folder")
    p.add_argument("--policy-method", metavar="METHOD",
                   help="policy stage: dpo (default: DPO-tune on the log ranked by each reward), grpo (GRPO-tune "
                        "online, each sample scored by the reward) or best-of-K (e.g. best-of-8: K base samples "
                        "per prompt, each reward picks one)")
    p.add_argument("--policy-samples", type=_bounded(8, 100_000),
                   help="policy stage: texts (prompts) per policy (default 256; 32 for a chat policy such as "
                        "smollm2-135m)")
    p.add_argument("--finetune", action="store_true",
                   help="also fine-tune the --encoder backbone end to end (methods naive-ft, deconfound-ft)")
    p.add_argument("--pessimism", metavar="LIST",
                   help="policy stage: also steer by the deconfounded reward ranked by r - K se for each K "
                        "(e.g. 1,2); K = 0 is the deconfound policy")
    p.add_argument("--invariance-weights", metavar="LIST",
                   help="also fit odin and crm at each fixed invariance weight (e.g. 0.01,0.1,1,10,100) and "
                        "report the weight chosen observationally against the best one on the truth")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_cmd_benchmark_simulate)

    p = bsub.add_parser("upworthy", help="policy study on real A/B data: who writes better Upworthy headlines?")
    p.add_argument("--stories", type=_bounded(2, 5000), default=48,
                   help="story tests SmolLM2 writes headlines for (default 48)")
    p.add_argument("--k", type=_bounded(2, 64), default=8, help="best-of-K candidates per story (default 8)")
    p.add_argument("--dpo-steps", type=_bounded(0, 100_000), default=0,
                   help="LoRA-DPO steps per reward (default 0: best-of-K only; 7 s per step of 4 pairs measured on 2 CPUs)")
    p.add_argument("--dpo-batch", type=_bounded(1, 1024), default=4, help="preference pairs per DPO step (default 4)")
    p.add_argument("--samples", type=_bounded(1, 64), default=4,
                   help="headlines per story from each DPO-tuned policy (default 4)")
    p.add_argument("--encoder", default="minilm", metavar="NAME_OR_PATH",
                   help="text backbone of the rewards and the judge (default minilm)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    p.add_argument("--max-tests", type=_at_least(100), help="subsample the archive's tests (smoke runs)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_cmd_benchmark_upworthy)

    p = bsub.add_parser("ab-curve", help="what is your log worth in A/B tests? a learning curve on your log + tests",
                        description="Per seeded split of your A/B tests into training and held-out tests: pairwise "
                        "accuracy on the held-out tests' significant pairs of a reward fitted on N training tests "
                        "alone, of the log's deconfounded reward, and of the log's reward grounded on the same N "
                        "tests (fit-reward --ab), for each N; and the number of tests the log is worth.")
    p.add_argument("data", metavar="LOG", help="the observational log: .csv, .parquet, .jsonl, or 'upworthy'")
    p.add_argument("ab", metavar="AB_FILE", help="randomized A/B tests with the log's columns plus --test")
    _add_roles(p)
    p.add_argument("--test", required=True, metavar="COL", help="column naming each row's test in AB_FILE")
    p.add_argument("--sizes", type=_sizes, metavar="N,N,...",
                   help="numbers of training tests (all are added); default 50,100,200,400,800,1600")
    p.add_argument("--splits", type=_bounded(2, 100), default=5, help="seeded splits of the tests (default 5)")
    p.add_argument("--heldout", type=_finite_float(lambda v: 0.05 <= v <= 0.9, "a share from 0.05 to 0.9"),
                   default=0.3, help="share of the tests held out per split (default 0.3)")
    p.add_argument("--alpha", type=_finite_float(lambda v: 0 < v < 1, "above 0 and below 1"),
                   help="significance level of a held-out pair (default 0.05)")
    _add_encoder_family(p)
    p.add_argument("--cv", type=_bounded(2, 1000), default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_cmd_benchmark_ab_curve)

    for register in _EXTRA_COMMANDS:
        register(sub)
    _add_quiet(sub)
    return parser


def _add_quiet(sub: argparse._SubParsersAction) -> None:
    """``--quiet`` on every command: no progress bars, no stage lines (results and errors stay)."""
    for p in sub.choices.values():
        nested = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            _add_quiet(nested[0])
        else:
            p.add_argument("--quiet", action="store_true", help="no progress bars or stage lines")


_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def _methods() -> list[str]:
    from deconfoundlm.rewards.names import METHOD_NAMES

    return list(METHOD_NAMES)


def _version() -> str:
    from deconfoundlm import __version__

    return __version__


def _quiet_libraries() -> None:
    """transformers' loading bars and info logs would come before our one error line. The
    environment says so to transformers when a command imports it (no command pays for importing
    it to say so); one already imported (a call from Python code) is told directly."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _on_sigterm(signum, frame) -> None:
    """A Python-level handler must exist for the wakeup fd to see the signal; the work is done
    by the watchdog thread (see :func:`_install_sigterm`)."""


_SIGTERM = {"installed": False, "armed": True}


def _stop_descendants(timeout: float = 10) -> None:
    """Terminate every process this one started (Dask nannies and workers, data loaders)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with dask.distributed
        return
    kids = psutil.Process().children(recursive=True)
    for k in kids:
        try:
            k.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(kids, timeout=timeout)
    for k in alive:
        try:
            k.kill()
        except psutil.Error:
            pass


def _install_sigterm() -> None:
    """SIGTERM stops the command at once, wherever its main thread is (a Python signal handler
    would only run between Python instructions, and a wait inside a library, such as a Dask
    future, may never return): a watchdog thread, woken through the signal's wakeup fd, stops the
    processes the command started (Dask nannies and workers), removes the partial outputs,
    prints one line and exits 143. ``serve`` disarms it: uvicorn drains the requests in flight."""
    import signal
    import threading

    if _SIGTERM["installed"] or threading.current_thread() is not threading.main_thread():
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread of the main interpreter
        return
    _SIGTERM["installed"] = True

    def watch() -> None:
        while True:
            got = os.read(read_fd, 64)
            if signal.SIGTERM not in got or not _SIGTERM["armed"]:
                continue
            from deconfoundlm.outputs import abandon_partial_outputs, committed_outputs

            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            _stop_descendants(timeout=5)
            abandon_partial_outputs()
            written = committed_outputs()
            if written:  # e.g. while a Dask cluster shuts down after the reward folder is in place
                names = ", ".join(str(p) for p in written)
                print(f"{PROG}: stopped (SIGTERM) after writing {names}", file=sys.stderr, flush=True)
            else:
                print(f"{PROG}: terminated (SIGTERM); nothing was written", file=sys.stderr, flush=True)
            os._exit(143)

    threading.Thread(target=watch, name="deconfoundlm-sigterm", daemon=True).start()


def _ignore_late_sigterm() -> None:
    """The command is done and its outputs are in place: a SIGTERM from now on (while libraries
    shut down, e.g. a Dask cluster) is ignored, so the process ends with the command's exit code.
    Python resets its own handlers at exit, but not an ignored signal."""
    import signal
    import threading

    if _SIGTERM["installed"] and threading.current_thread() is threading.main_thread():
        _SIGTERM["armed"] = False
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:

    _install_sigterm()
    _SIGTERM["armed"] = True
    # multiprocessing's resource tracker (a child process, started with these options) would print
    # a warning after a terminated Dask run about the semaphores it then cleans up itself.
    quiet_tracker = "ignore::UserWarning:multiprocessing.resource_tracker"
    if quiet_tracker not in sys.warnoptions:
        sys.warnoptions.append(quiet_tracker)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no loading bars before an error line
    pending: list[str] = []
    try:
        args = build_parser().parse_args(argv)
        from deconfoundlm.progress import set_quiet

        set_quiet(bool(getattr(args, "quiet", False)))
        _quiet_libraries()
        with warnings.catch_warnings():
            # Our DataWarnings are held until the command succeeds, so that bad input ends with
            # exactly one line (the error) and a good run still reports every dropped row.
            warnings.showwarning = lambda message, *rest, **kw: pending.append(f"{PROG}: warning: {message}")
            warnings.simplefilter("ignore")  # library chatter; ours are DataWarnings
            warnings.simplefilter("always", DataWarning)
            code = args.func(args)
        for line in dict.fromkeys(pending):  # each distinct warning once
            print(line, file=sys.stderr)
        if argv is None:  # the process's own command (not a call from Python code)
            _ignore_late_sigterm()
        return code
    except UserError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback unless asked for
        if os.environ.get("DECONFOUNDLM_DEBUG"):
            raise
        import errno

        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):  # e.g. a cache or temp file
            print(f"{PROG}: error: no space left on device ({exc.filename or 'a temporary file'}); free some "
                  "space and run again", file=sys.stderr)
            return 2
        print(f"{PROG}: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(set DECONFOUNDLM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
