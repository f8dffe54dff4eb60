"""One typed config per command: every option with its default, help and rule, declared once.

The command line is generated from these classes (:mod:`deconfoundlm.cli`), and the Python API
takes them: ``fit_reward(data, FitConfig(text="headline", ...))`` or, for convenience, the same
options as keywords (``fit_reward(data, text="headline", ...)``). Options shared by several
commands are declared once, in the small classes the commands inherit from (:class:`Roles`,
:class:`Encoding`, :class:`Seeded`, ...). A class's ``INPUTS`` are the command's positional
arguments (the files it reads), which the Python functions take as their own parameters.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, ClassVar

from deconfoundlm.errors import UserError
from deconfoundlm.options import (
    BadValue,
    Config,
    integer,
    label,
    non_negative,
    number,
    number_list,
    option,
    partial_r2,
    positive,
    seed,
    share,
    sizes,
)

METHOD_NAMES = ("naive", "confounder-input", "deconfound", "odin", "crm")  # in the order tables list them
FAMILY_NAMES = ("gaussian", "bernoulli", "binomial", "poisson")
ALIGN_METHODS = ("sft", "dpo", "grpo")
CURVE_SIZES = (50, 100, 200, 400, 800, 1600)  # numbers of A/B tests of the learning curve (all are added)
MAX_SAMPLES = 100_000  # generate: texts sampled per prompt (--n times --best-of)
MAX_BENCHMARK_ROWS = 1_000_000
CONFOUNDER_HELP = ("a known confounder; TYPE is categorical, numeric, time (trend; + weekday + hour when the values "
                   "have a time of day), hour (cyclic) or weekday (repeatable)")
ENCODER_HELP = ("text backbone: minilm, smollm2-135m, hashing[-DIM], a local model folder or a Hugging Face model id "
                "in the local cache")
DASK_HELP = ("run on a Dask cluster: a scheduler address (tcp://HOST:8786) or local[:N[:MEMORY]] (start N worker "
             "processes here, each limited to MEMORY, e.g. local:2:3.5GB); DATA may then be a directory or glob of "
             "Parquet files")


MAX_LOCAL_WORKERS = 256
MIN_WORKER_BYTES = 512 * 2**20  # a worker process with an encoder loaded and one block of rows
LOCAL_DASK = re.compile(r"^local(?::(\d+)(?::(\d+(?:\.\d+)?\s*(?:[kKmMgGtT]i?B)))?)?$")
DASK_ADDRESS = re.compile(r"^(?:(tcp|tls|inproc|ucx|ws|wss)://)?[\w.\-\[\]:]+:\d{1,5}$")


def dask_address(value: Any) -> str:
    """The syntax of a ``--dask`` value (nothing is contacted): ``local``, ``local:N[:MEMORY]`` or a
    scheduler address ``[tcp://]HOST:PORT``."""
    value = str(value).strip()
    m = LOCAL_DASK.match(value)
    if m:
        n = int(m.group(1)) if m.group(1) else default_workers()
        if not 1 <= n <= MAX_LOCAL_WORKERS:
            raise BadValue(f"the number of local workers must be 1 to {MAX_LOCAL_WORKERS}")
        if m.group(2):
            from dask.utils import parse_bytes

            if parse_bytes(m.group(2).replace(" ", "")) < MIN_WORKER_BYTES:
                raise BadValue(f"each worker needs at least {MIN_WORKER_BYTES // 2**20} MiB (its encoder and a block "
                               "of rows); give e.g. local:2:3.5GB, or leave MEMORY out to split the machine's memory "
                               "among the workers")
        return value
    if not DASK_ADDRESS.match(value):
        raise BadValue("expected a scheduler address such as tcp://HOST:8786, or local[:N[:MEMORY]] (e.g. "
                       "local:2:3.5GB)")
    return value


def default_workers() -> int:
    """Worker processes of ``--dask local`` without N: the CPUs, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


# --- options shared by several commands (declared once) ----------------------------------------------


@dataclasses.dataclass
class Texts(Config):
    """The column of the texts."""

    REQUIRED: ClassVar = ("text",)
    text: str | None = option(help="column with the texts", required=True)


@dataclasses.dataclass
class Roles(Texts):
    """The columns of a log and what each one is."""

    REQUIRED: ClassVar = ("text", "outcome")
    outcome: str | None = option(help="column with the outcome (successes with --trials)", required=True)
    trials: str | None = option(help="column with the number of trials (e.g. impressions; binomial), or the exposure "
                                "with --family poisson")
    confounders: tuple = option((), CONFOUNDER_HELP, flag="--confounder", metavar="COL:TYPE", repeat=True)
    weights: str | None = option(help="column with sample weights")


@dataclasses.dataclass
class Encoding(Config):
    encoder: Any = option("minilm", ENCODER_HELP, metavar="NAME_OR_PATH")


@dataclasses.dataclass
class Modelled(Encoding):
    family: str = option("auto", "outcome family; auto: binomial with --trials, bernoulli for 0/1, poisson for "
                         "another non-negative integer count, else gaussian", choices=("auto", *FAMILY_NAMES))
    cv: int = option(5, "cross-validation folds", rule=integer(2, 1000))


@dataclasses.dataclass
class Seeded(Config):
    seed: int = option(0, "random seed, 0 to 2**32-1", rule=seed)


@dataclasses.dataclass
class Forced(Config):
    force: bool = option(False, "overwrite an earlier output of the same kind")


@dataclasses.dataclass
class OnCluster(Config):
    dask: str | None = option(help=DASK_HELP, rule=dask_address, metavar="ADDRESS|local[:N[:MEMORY]]")


# --- the commands ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class FitConfig(Roles, Modelled, Seeded, OnCluster, Forced):
    """``deconfoundlm fit-reward`` / :func:`deconfoundlm.fit_reward`."""

    INPUTS: ClassVar = (("data", None, "the log: .csv, .parquet, .jsonl, or 'upworthy' (with --test and no --ab: "
                                       "your randomized A/B tests)"),)
    method: str = option("deconfound", "reward method", choices=METHOD_NAMES)
    estimator: str = option("joint", "deconfound estimator: joint, or partialling-out (double ML)",
                            choices=("joint", "partialling-out"))
    head: str | None = option(help="text head (default: the method's own: linear)", choices=("linear", "mlp"))
    invariance_weight: float | None = option(
        help="odin/crm: weight of the invariance terms (default: chosen from 0.01..100 by the one-standard-error rule "
             "on CV deviance)", rule=number(lambda v: 0 < v <= 1e6, "above 0 and at most 1e6"), metavar="F")
    group: str | None = option(help="cluster column (an A/B test, an author): standard errors of the reward are "
                               "cluster-robust", metavar="COL")
    ab: Any = option(help="randomized A/B tests with the log's text/outcome/trials/weights columns plus --test: the "
                     "log's reward is corrected by their within-test evidence (strength chosen by cross-validation "
                     "over whole tests) and calibrated against them", metavar="AB_FILE", section="ab")
    test: str | None = option(help="with --ab: the column naming each row's test; without --ab, DATA holds randomized "
                              "A/B tests and the reward is their own fit (one intercept per test, a linear text "
                              "term, its strength chosen by cross-validation over whole tests)", metavar="COL",
                              section="ab")
    finetune: Any = option(False, "train the backbone with the reward head and the confounder term; the model "
                           "directory then holds text_model/, a standard Hugging Face reward model (from Python: "
                           "True or a FinetuneConfig)", section="finetune")
    lora: bool = option(False, "train LoRA adapters (peft), merged on save", section="finetune")
    epochs: int | None = option(help="at most this many epochs (default 3; early stopping on a held-out 20% of the "
                                "log)", rule=integer(1, 1000), section="finetune")
    learning_rate: float | None = option(help="default 5e-5 (5e-4 with --lora)", rule=positive, section="finetune")
    batch_size: int | None = option(help="texts per step and device (default 32)", rule=integer(1, 65_536),
                                    section="finetune")
    max_length: int | None = option(help="tokens per text (default 64)", rule=integer(4, 8192), section="finetune")
    out: Any = option(help="output model directory", required=True)
    diagnose: bool = option(True, "also estimate the confounders' strength and entanglement", cli=False)
    se: bool = option(True, "also estimate the reward's standard errors (linear naive and deconfound)", cli=False)
    params: Any = option(help="further options of the method's estimator (min_count, alphas, ...)", cli=False)

    def check(self) -> None:
        tuned = [n for n in ("lora", "epochs", "learning_rate", "batch_size", "max_length")
                 if getattr(self, n) not in (None, False)]
        if tuned and self.finetune is False:
            raise UserError(f"{label(tuned[0])} applies to {label('finetune')} only")
        if self.invariance_weight is not None and self.method not in ("odin", "crm"):
            raise UserError(f"{label('invariance_weight')} applies to {label('method')} odin or crm, "
                            f"not {self.method!r}")
        if self.estimator != "joint" and self.method != "deconfound":
            raise UserError(f"{label('estimator')} applies to {label('method')} deconfound only, not {self.method!r}")
        if self.test is not None and self.ab is None:
            self._check_tests_only()

    def _check_tests_only(self) -> None:
        """``--test`` without ``--ab``: DATA holds randomized tests, the reward is their own fit."""
        what = (f"a reward of randomized A/B tests alone ({label('test')} without {label('ab')}: one intercept per "
                "test and a linear text term)")
        if self.confounders:
            raise UserError(f"{label('confounder')} does not apply to {what}: within a randomized test the "
                            "confounders are balanced, and what a test's rows share its intercept absorbs; leave it "
                            f"out, or give the log as DATA and these tests with {label('ab')}")
        given = {"method": self.method != "deconfound", "estimator": self.estimator != "joint",
                 "head": self.head not in (None, "linear"), "finetune": self.finetune not in (None, False),
                 "group": self.group is not None, "invariance_weight": self.invariance_weight is not None,
                 "dask": self.dask is not None}
        for name, bad in given.items():
            if bad:
                raise UserError(f"{label(name)} does not apply to {what}; leave it out")


@dataclasses.dataclass
class ScoreConfig(Texts, OnCluster, Forced):
    """``deconfoundlm score`` / :func:`deconfoundlm.score_file`."""

    INPUTS: ClassVar = (("model_dir", "MODEL_DIR", "a reward folder from fit-reward"),
                        ("data", "DATA", "texts to score: .csv, .parquet, .jsonl (with --dask: Parquet files)"))
    se: bool = option(False, "add reward_se, the standard error of each reward (linear naive and deconfound rewards; "
                      "sandwich from the fitted GLM)")
    at: Any = option((), "also write 'predicted': each text's predicted outcome (binomial: per trial, e.g. CTR; "
                     "poisson: per unit of exposure) with the confounders set to these values, e.g. --at "
                     "test_week=201410 (repeat for each confounder; deconfound and confounder-input rewards)",
                     metavar="COL=VALUE", repeat=True)
    out: Any = option(help="output file (.csv, .parquet, .jsonl); with --dask a folder of Parquet files (the input's "
                      "columns plus reward)", required=True)

    def check(self) -> None:
        if isinstance(self.at, dict) or not self.at:
            self.at = dict(self.at) if self.at else None
            return
        at: dict[str, str] = {}
        for item in self.at:
            col, eq, value = str(item).partition("=")
            if not eq or not col.strip() or not value.strip():
                raise UserError(f"{label('at')} {item!r}: expected COL=VALUE, e.g. --at test_week=201410")
            if col.strip() in at:
                raise UserError(f"{label('at')} {col.strip()}: given twice")
            at[col.strip()] = value.strip()
        self.at = at


@dataclasses.dataclass
class DiagnoseConfig(Roles, Modelled, Seeded, OnCluster, Forced):
    """``deconfoundlm diagnose`` / :func:`deconfoundlm.evaluation.diagnose.diagnose`."""

    INPUTS: ClassVar = FitConfig.INPUTS
    out: Any = option(help="write the diagnostics as JSON here", metavar="FILE.json")


@dataclasses.dataclass
class SensitivityConfig(Roles, Modelled, Seeded, Forced):
    """``deconfoundlm sensitivity`` / :func:`deconfoundlm.evaluation.sensitivity.sensitivity`."""

    INPUTS: ClassVar = FitConfig.INPUTS
    cv: int = option(5, "folds for cross-fitting", rule=integer(2, 100))
    cf_y: float = option(0.03, "scenario: partial R^2 of the unnamed confounder with the outcome", rule=partial_r2)
    cf_d: float = option(0.03, "scenario: partial R^2 of the unnamed confounder with the reward", rule=partial_r2)
    out: Any = option(help="write the analysis as JSON here", metavar="FILE.json")


@dataclasses.dataclass
class EvaluateConfig(Texts, Seeded, Forced):
    """``deconfoundlm evaluate`` / :func:`deconfoundlm.evaluation.evaluate.evaluate`."""

    REQUIRED: ClassVar = ("text", "test")

    INPUTS: ClassVar = (("model_dirs", "MODEL_DIR", "reward folder(s) from fit-reward", "+"),
                        ("data", "DATA", "the A/B log: .csv, .parquet, .jsonl, or 'upworthy'"))
    test: str | None = option(help="column with the test id: rows of one test were randomized against each other",
                              metavar="COL", required=True)
    outcome: str | None = option(help="outcome column: successes with --trials (two-proportion z-test, a row per "
                                 "arm); without --trials, one row per recipient (Welch's t-test) or a count per arm "
                                 "(Poisson)", metavar="COL", group="outcome!")
    winner: str | None = option(help="true/false column marking the row that won its test", metavar="COL",
                                group="outcome!")
    trials: str | None = option(help="column with the trials of --outcome (e.g. impressions), or the exposure with "
                                "--family poisson", metavar="COL")
    family: str = option("auto", "outcome family; auto: the pair test the columns call for (see --outcome); poisson "
                         "with --trials: a count and its exposure (exact test of two Poisson rates); the "
                         "calibration's family (auto: each reward's own, where the outcome fits it)",
                         choices=("auto", *FAMILY_NAMES))
    alpha: float | None = option(help="significance level of a pair's test (default 0.05)", rule=share)
    bootstrap: int = option(1000, "cluster-bootstrap resamples", rule=integer(100, 100_000))
    out: Any = option(help="write the evaluation as JSON here", metavar="FILE.json")


@dataclasses.dataclass
class ReportConfig(Forced):
    """``deconfoundlm report``."""

    INPUTS: ClassVar = (("dir", "DIR", "a reward folder (fit-reward --out: the fit, the confounders' effect g(c), "
                         "diagnostics) or the output folder of `demo`, `benchmark simulate` or `benchmark upworthy`"),)
    diagnostics: str | None = option(help="reward report: include `diagnose --out` (overlap, the words a naive reward "
                                     "gets wrong)", metavar="FILE.json")
    sensitivity: str | None = option(help="reward report: include `sensitivity --out`", metavar="FILE.json")
    evaluation: str | None = option(help="reward report: include `evaluate --out`", metavar="FILE.json")
    out: Any = option(help="HTML file (default DIR/report.html; for a reward folder DIR-report.html beside it)",
                      metavar="FILE.html")


@dataclasses.dataclass
class AlignConfig(Seeded, Forced):
    """``deconfoundlm align`` / :func:`deconfoundlm.alignment.align.align` (defaults suit tiny-headlines on a CPU)."""

    INPUTS: ClassVar = (("data", "DATA", "the log (.csv/.parquet/.jsonl) or 'upworthy' (bundled)"),)
    reward: Any = option(help="a reward model from fit-reward", metavar="MODEL_DIR", required=True)
    method: str = option("dpo", "sft, dpo or grpo", choices=ALIGN_METHODS, required=True)
    policy: str = option("tiny-headlines", "tiny-headlines, smollm2-135m, a local model directory or a Hugging Face id",
                         metavar="NAME_OR_PATH", required=True)
    text: str | None = option(help="text column (default: the reward model's)")
    prompt: str | None = option(help="prompt column (DPO pairs are matched within a prompt)", metavar="COL",
                                group="prompt")
    prompt_text: str | None = option(help="one prompt for every example", metavar="STR", group="prompt")
    pairs_from: str = option("reward", "rank rows by the reward or by deconfounded labels", choices=("reward", "labels"))
    steps: int = option(100, "optimizer steps", rule=integer(1, 1_000_000))
    beta: float = option(0.1, "DPO beta / GRPO KL weight, above 0", rule=positive)
    lora: bool = option(False, "train LoRA adapters (peft), merged on save")
    pessimism: float = option(0.0, "rank (sft, dpo) or reward (grpo) by r(x) - K se(x)", rule=non_negative,
                              metavar="K")
    out: Any = option(help="output model directory", required=True)
    verbose: bool = option(False, "print the trainer's per-step logs (always saved to OUT/train_log.json)")
    top_quantile: float = option(0.2, "SFT: fine-tune on this top share of rows by the ranking score", rule=share,
                                 cli=False)
    margin_sd: float = option(0.5, "DPO: chosen beats rejected by more than this many SDs of the score",
                              rule=positive, cli=False)
    batch_size: int = option(16, "examples per step", rule=integer(1), cli=False)
    learning_rate: float = option(5e-4, "the optimizer's learning rate", rule=positive, cli=False)
    num_generations: int = option(4, "GRPO: completions per prompt", rule=integer(1), cli=False)
    max_completion_length: int = option(32, "GRPO: tokens per completion", rule=integer(1), cli=False)


@dataclasses.dataclass
class GenerateConfig(Seeded, Forced):
    """``deconfoundlm generate`` / :func:`deconfoundlm.alignment.generate.generate`."""

    INPUTS: ClassVar = (("policy", "POLICY", "tiny-headlines, smollm2-135m, or a model directory"),)
    n: int = option(1, f"texts per prompt (at most {MAX_SAMPLES:,} with --best-of)", rule=integer(1, MAX_SAMPLES),
                    required=True)
    prompt_text: str | None = option(help="one prompt (plain models: a prefix)", metavar="STR", group="prompt")
    prompts: Any = option(help="a table of prompts: its only column, or the one --prompt COL names", metavar="FILE",
                          group="prompt")
    prompt: str | None = option(help="prompt column of --prompts (needed when the file has more than one column)",
                                metavar="COL")
    best_of: int = option(1, "keep the best of K samples by --reward", rule=integer(1, MAX_SAMPLES), metavar="K")
    reward: Any = option(help="score the texts with this reward model", metavar="MODEL_DIR")
    pessimism: float = option(0.0, "with --best-of: keep the sample with the highest r(x) - K se(x)",
                              rule=non_negative, metavar="K")
    max_new_tokens: int = option(32, "tokens per sample", rule=integer(1, 4096))
    out: Any = option(help="output file (.csv, .parquet, .jsonl)", required=True)

    def check(self) -> None:
        if self.n * self.best_of > MAX_SAMPLES:
            raise UserError(f"{label('n')} {self.n} x {label('best_of')} {self.best_of}: at most {MAX_SAMPLES:,} "
                            "samples per prompt")


@dataclasses.dataclass
class ServeConfig(Config):
    """``deconfoundlm serve`` / :func:`deconfoundlm.serving.server.serve`."""

    INPUTS: ClassVar = (("model_dir", "MODEL_DIR", "a reward folder from fit-reward"),)
    host: str = option("127.0.0.1", "interface to listen on (any but loopback needs --token-file)")
    port: int = option(8000, "port", rule=integer(1, 65535))
    token_file: str | None = option(help="file whose first line is the bearer token requests must carry "
                                    "(Authorization: Bearer ...)", metavar="FILE")
    max_batch: int = option(256, "most texts per request and per scoring batch", rule=integer(1, 100_000))
    max_body_mb: float = option(1.0, "largest request body in MB",
                                rule=number(lambda v: 0 < v <= 1024, "above 0 and at most 1024"))
    max_wait_ms: float = option(5.0, "how long a batch waits for more requests, in ms",
                                rule=number(lambda v: 0 <= v <= 1000, "from 0 to 1000"))
    body_timeout_s: float = option(30.0, "a request body not complete within this many seconds gets a 408",
                                   rule=number(lambda v: 0 < v <= 3600, "above 0 and at most 3600"),
                                   flag="--body-timeout", metavar="SECONDS")
    log_level: str = option("warning", "uvicorn's log level", cli=False)


@dataclasses.dataclass
class DemoOptions(Encoding, Seeded, Forced):
    """``deconfoundlm demo``: the options a user sets (:func:`deconfoundlm.evaluation.demo.demo_config`
    makes the full settings from them)."""

    INPUTS: ClassVar = ()
    out: Any = option("demo-output", "output directory")
    splits: int = option(5, "seeded train/held-out splits", rule=integer(1, 100))
    quick: bool = option(False, "reduced run (400 tests, 2 splits) for tests")
    curve_sizes: tuple | None = option(help="numbers of A/B tests of the learning curve (\"what is the log worth?\"; "
                                       "all the training tests are added); default 50,100,200,400,800,1600 (--quick: "
                                       "50,100); none: skip it", rule=sizes, metavar="N,N,...|none")
    stories: int | None = option(help="held-out stories SmolLM2 writes 8 candidate headlines for, each reward picking "
                                 "one (default 12; 0 skips the section)", rule=integer(0, 1000))
    align_steps: int | None = option(help="DPO steps of the tiny-headlines toy section per reward (default 0: skipped; "
                                     "--quick: 4)", rule=integer(0, 100_000))
    policy_study: bool = option(False, "also run the policy study (SmolLM2 best-of-8 with each reward for 48 story "
                                "tests, judged by an experimental reward of separate tests; see `benchmark upworthy`; "
                                "~12 min on 2 CPUs)")
    finetune: bool = option(False, "also fine-tune the --encoder backbone end to end (naive, deconfound and "
                            "experimental rows; slow on a CPU)")


@dataclasses.dataclass
class SimulateOptions(Encoding, Forced):
    """``deconfoundlm benchmark simulate``: the options a user sets
    (:func:`deconfoundlm.evaluation.benchmark.simulate.benchmark_config` makes the full settings)."""

    INPUTS: ClassVar = ()
    dgp: str = option("dgp_v1", "the data-generating process: dgp_v1, dgp_v2 (adds the 'misleading' scenario) or a "
                      "JSON file in the schema of docs/method.md", metavar="NAME_OR_FILE")
    scenario: str = option("all", "a scenario of the DGP (dgp_v1: none, spurious, entangled; dgp_v2 also misleading) "
                           "or all")
    n: str = option("2000,8000", "log sizes, comma-separated")
    seeds: int = option(5, "number of seeds", rule=integer(1, 1000))
    family: str | None = option(help="outcome family (default: the DGP's 'family', else gaussian)",
                                choices=("gaussian", "binomial"))
    methods: str | None = option(help="comma-separated subset of methods (default: all)")
    cv: int = option(3, "CV folds each method uses for its own penalty", rule=integer(2))
    max_texts: int | None = option(help="subsample the headline pool (smoke runs)", rule=integer(100))
    policy_stage: bool = option(False, "also steer a generator with the naive, odin, deconfound and oracle rewards "
                                "(--policy, --policy-method) and measure the true effect of its texts")
    policy_steps: int | None = option(help="DPO / GRPO steps per reward in the policy stage (default 60)",
                                      rule=integer(1))
    policy_lora: bool | None = option(help="policy stage: train LoRA adapters (merged back) rather than every weight "
                                      "(default: LoRA for every policy but tiny-headlines)", negatable=True)
    policy: str | None = option(help="policy stage generator: tiny-headlines (default), smollm2-135m (prompted with "
                                "story ledes) or a local causal LM folder", metavar="NAME_OR_PATH")
    policy_method: str | None = option(help="policy stage: dpo (default: DPO-tune on the log ranked by each reward), "
                                       "grpo (GRPO-tune online, each sample scored by the reward) or best-of-K (e.g. "
                                       "best-of-8: K base samples per prompt, each reward picks one)", metavar="METHOD")
    policy_samples: int | None = option(help="policy stage: texts (prompts) per policy (default 256; 32 for a chat "
                                        "policy such as smollm2-135m)", rule=integer(8, 100_000))
    finetune: bool = option(False, "also fine-tune the --encoder backbone end to end (methods naive-ft, deconfound-ft)")
    pessimism: tuple | None = option(help="policy stage: also steer by the deconfounded reward ranked by r - K se for "
                                     "each K (e.g. 1,2); K = 0 is the deconfound policy", metavar="LIST",
                                     rule=number_list(lambda v: v >= 0, "finite and at least 0"))
    invariance_weights: tuple | None = option(
        help="also fit odin and crm at each fixed invariance weight (e.g. 0.01,0.1,1,10,100) and report the weight "
             "chosen observationally against the best one on the truth", metavar="LIST",
        rule=number_list(lambda v: 0 < v <= 1e6, "above 0 and at most 1e6"))
    out: Any = option(help="output directory", required=True)

    def check(self) -> None:
        try:
            self.sizes = tuple(int(x) for x in str(self.n).split(","))
        except ValueError:
            raise UserError(f"{label('n')} {self.n!r}: expected comma-separated integers, e.g. 2000,8000") from None
        if any(n < 100 or n > MAX_BENCHMARK_ROWS for n in self.sizes):
            raise UserError(f"{label('n')} {self.n!r}: each log size must be from 100 to {MAX_BENCHMARK_ROWS:,}")
        if self.pessimism and not self.policy_stage:
            raise UserError(f"{label('pessimism')} applies to the policy stage: add {label('policy_stage')}")
        given = [n for n in ("policy_steps", "policy", "policy_method", "policy_samples", "policy_lora")
                 if getattr(self, n) is not None]
        if given and not self.policy_stage:
            raise UserError(f"{label(given[0])} applies to the policy stage: add {label('policy_stage')}")


@dataclasses.dataclass
class StudyConfig(Encoding, Seeded, Forced):
    """``deconfoundlm benchmark upworthy``: the Upworthy policy study (defaults sized for a 2-core CPU)."""

    INPUTS: ClassVar = ()
    stories: int = option(48, "story tests SmolLM2 writes headlines for", rule=integer(2, 5000))
    k: int = option(8, "best-of-K candidates per story", rule=integer(2, 64))
    dpo_steps: int = option(0, "LoRA-DPO steps per reward (0: best-of-K only; 7 s per step of 4 pairs measured on 2 "
                            "CPUs)", rule=integer(0, 100_000))
    dpo_batch: int = option(4, "preference pairs per DPO step", rule=integer(1, 1024))
    samples: int = option(4, "headlines per story from each DPO-tuned policy", rule=integer(1, 64))
    max_tests: int | None = option(help="subsample the archive's tests (smoke runs)", rule=integer(100))
    out: Any = option(help="output directory", required=True)
    judge_share: float = option(0.3, "share of the other tests that train and test the judge",
                                rule=number(lambda v: 0.05 <= v <= 0.9, "a share from 0.05 to 0.9"), cli=False)
    judge_heldout: float = option(0.25, "share of the judge tests held out to measure the judge",
                                  rule=number(lambda v: 0.05 <= v <= 0.9, "a share from 0.05 to 0.9"), cli=False)
    cv: int = option(5, "cross-validation folds", rule=integer(2, 100), cli=False)
    bootstrap: int = option(1000, "bootstrap resamples", rule=integer(100, 1_000_000), cli=False)
    max_new_tokens: int = option(48, "tokens per headline", rule=integer(8, 512), cli=False)
    temperature: float = option(0.7, "sampling temperature", rule=number(lambda v: 0.05 <= v <= 5, "from 0.05 to 5"),
                                cli=False)
    lede_chars: int = option(400, "characters of a story's lede in the prompt", rule=integer(1), cli=False)


@dataclasses.dataclass
class CurveConfig(Roles, Modelled, Seeded, Forced):
    """``deconfoundlm benchmark ab-curve`` / :func:`deconfoundlm.evaluation.benchmark.ab_curve.run_curve_benchmark`."""

    REQUIRED: ClassVar = ("text", "outcome", "test")

    INPUTS: ClassVar = (("data", "LOG", "the observational log: .csv, .parquet, .jsonl, or 'upworthy'"),
                        ("ab", "AB_FILE", "randomized A/B tests with the log's columns plus --test"))
    test: str | None = option(help="column naming each row's test in AB_FILE", metavar="COL", required=True)
    sizes: tuple = option(CURVE_SIZES, "numbers of training tests (all are added)", rule=sizes, metavar="N,N,...")
    splits: int = option(5, "seeded splits of the tests (the CIs are over splits)", rule=integer(2, 100))
    heldout: float = option(0.3, "share of the tests held out per split",
                            rule=number(lambda v: 0.05 <= v <= 0.9, "a share from 0.05 to 0.9"))
    alpha: float = option(0.05, "significance level of a held-out pair", rule=share)
    out: Any = option(help="output directory", required=True)
    command: str | None = option(help="the command line recorded in the outputs", cli=False)


# command name -> its config; "benchmark NAME" commands are sub-commands of "benchmark"
COMMANDS: dict[str, tuple[type[Config], str]] = {
    "fit-reward": (FitConfig, "fit a reward model on a log (CSV/Parquet/JSONL)"),
    "score": (ScoreConfig, "score texts with a saved reward model"),
    "demo": (DemoOptions, "the main job: observational vs experimental check on Upworthy"),
    "evaluate": (EvaluateConfig, "pairwise accuracy of rewards on your own randomized A/B tests"),
    "report": (ReportConfig, "a self-contained HTML report of a reward folder or a demo/benchmark output"),
    "diagnose": (DiagnoseConfig, "how confounded is a log? strength, entanglement, overlap"),
    "sensitivity": (SensitivityConfig, "how strong would an unnamed confounder have to be? (DoubleML)"),
    "align": (AlignConfig, "tune a generator to a reward with TRL (sft, dpo, grpo)"),
    "generate": (GenerateConfig, "sample texts from a policy (optionally best-of-K)"),
    "serve": (ServeConfig, "serve a reward over HTTP for RL trainers (TRL, OpenRLHF --remote_rm_url)"),
    "benchmark simulate": (SimulateOptions, "semi-synthetic benchmark: known causal effect, controlled confounding"),
    "benchmark upworthy": (StudyConfig, "policy study on real A/B data: who writes better Upworthy headlines?"),
    "benchmark ab-curve": (CurveConfig, "what is your log worth in A/B tests? a learning curve on your log + tests"),
}
