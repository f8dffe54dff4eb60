"""Command-line interface, generated from the typed configs of :mod:`deconfoundlm.configs`.

Each command's flags are its config's fields (name, default, help, rule); a handler builds the
config from the parsed arguments and calls the library. Bad input: one line on stderr, exit
code 2, nothing written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deconfoundlm import configs
from deconfoundlm.errors import DataWarning, UserError
from deconfoundlm.lifecycle import (
    PROG,
    disarm_sigterm,
    ignore_late_sigterm,
    install_sigterm,
    quiet_libraries,
)
from deconfoundlm.options import BadValue, Config, use_flag_names

SECTIONS = {"ab": "your randomized A/B tests (grounding; --method deconfound, linear head)",
            "finetune": "end-to-end fine-tuning (DeconfoundLM with a trainable backbone)"}
DESCRIPTIONS = {
    "evaluate": "For each pair of different texts within a test whose outcomes differ significantly (or a declared "
                "winner), does the reward rank them like the test? Accuracy with a cluster-bootstrap 95% CI over "
                "tests; with several reward folders, each one's paired difference from the first.",
    "serve": "POST /score {\"texts\": [...]} -> {\"rewards\": [...]}; POST /get_reward (OpenRLHF's remote reward "
             "protocol: the query without its prompt is scored); GET /health; GET /info. Loopback only unless "
             "--host says otherwise, and then only with --token-file.",
    "benchmark ab-curve": "Per seeded split of your A/B tests into training and held-out tests: pairwise accuracy on "
                          "the held-out tests' significant pairs of a reward fitted on N training tests alone, of the "
                          "log's deconfounded reward, and of the log's reward grounded on the same N tests "
                          "(fit-reward --ab), for each N; and the number of tests the log is worth.",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        for action in self._actions:  # a missing sub-command: name the ones there are
            if isinstance(action, argparse._SubParsersAction) and message.endswith(f"required: {action.dest}"):
                raise UserError(f"{self.prog}: give a command: {', '.join(action.choices)} (see {self.prog} --help)")
        raise UserError(f"{self.prog}: {message}")

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        """Unknown flags are named with the sub-command that was given them (argparse names the top)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            where = f"{self.prog} {parsed.command}" if getattr(parsed, "command", None) else self.prog
            raise UserError(f"{where}: unrecognized arguments: {' '.join(extras)} (see {where} --help)")
        return parsed


def _arg_type(rule: Callable[[Any], Any]) -> Callable[[str], Any]:
    """An argparse type from an option's rule (its complaint is the one-line error)."""

    def parse(text: str) -> Any:
        try:
            return rule(text)
        except BadValue as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(rule, "__name__", "value")
    return parse


def _help(field: dataclasses.Field) -> str:
    text, default = field.metadata["help"], field.default
    if not (default is None or default is False or default is dataclasses.MISSING) and "default" not in text:
        text += f" (default {default})"
    if field.default_factory is not dataclasses.MISSING and "default" not in text:  # type: ignore[misc]
        shown = ",".join(map(str, field.default_factory()))  # type: ignore[misc]
        text += f" (default {shown})" if shown else ""
    return text.replace("%", "%%")


def _add_command(sub: argparse._SubParsersAction, name: str, cls: type[Config], summary: str) -> None:
    """One sub-command: the config's INPUTS as positionals, every CLI field as a flag, --quiet."""
    p = sub.add_parser(name.split()[-1], help=summary, description=DESCRIPTIONS.get(name))
    for dest, metavar, text, *nargs in cls.INPUTS:
        p.add_argument(dest, metavar=metavar, help=text, nargs=nargs[0] if nargs else None)
    sections: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    own = set(cls.__annotations__)
    roles = {f.name for base in (configs.Texts, configs.Roles) if issubclass(cls, base) for f in dataclasses.fields(base)}
    ordered = sorted(dataclasses.fields(cls), key=lambda f: 0 if f.name in roles else 1 if f.name in own else 2)
    for f in ordered:  # the log's columns, the command's own options, then the shared ones
        m = f.metadata
        if not m or not m["cli"]:
            continue
        target = p
        if m["section"]:
            if m["section"] not in sections:
                sections[m["section"]] = p.add_argument_group(SECTIONS[m["section"]])
            target = sections[m["section"]]
        if m["group"]:
            if m["group"] not in groups:
                groups[m["group"]] = target.add_mutually_exclusive_group(required=m["group"].endswith("!"))
            target = groups[m["group"]]
        kw: dict[str, Any] = {"dest": f.name, "help": _help(f)}
        if m["negatable"]:
            kw.update(action=argparse.BooleanOptionalAction, default=None)
        elif f.default is False:
            kw.update(action="store_true")
        elif m["repeat"]:
            kw.update(action="append", default=[], metavar=m["metavar"])
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
            kw.update(default=None if m["required"] else default, metavar=m["metavar"], choices=m["choices"],
                      required=m["required"] and not m["group"])
            if m["rule"] is not None:
                kw["type"] = _arg_type(m["rule"])
        target.add_argument(m["flag"] or "--" + f.name.replace("_", "-"), **kw)
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage lines")
    p.set_defaults(config=cls, command=name)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, generated from :data:`deconfoundlm.configs.COMMANDS`."""
    parser = _Parser(prog=PROG, description="Deconfounded reward models and generator alignment "
                     "from observational logs (DeconfoundLM).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command_name", required=True, parser_class=_Parser)
    nested: dict[str, argparse._SubParsersAction] = {}
    for name, (cls, summary) in configs.COMMANDS.items():
        head, _, rest = name.partition(" ")
        if rest and head not in nested:
            nested[head] = sub.add_parser(head, help=f"{head}s with ground truth").add_subparsers(
                dest=head, required=True, parser_class=_Parser)
        _add_command(nested[head] if rest else sub, name, cls, summary)
    return parser


def _config(a: argparse.Namespace) -> Config:
    fields = [f for f in dataclasses.fields(a.config) if f.metadata and f.metadata["cli"]]
    return a.config(**{f.name: getattr(a, f.name) for f in fields})


def _data_path(data: str) -> str:
    """DATA may be the name of the bundled data set: ``upworthy``."""
    if data == "upworthy":
        from deconfoundlm.logs.upworthy import packages_path

        return str(packages_path())
    return data


def _command_line() -> str | None:
    return "deconfoundlm " + " ".join(shlex.quote(x) for x in sys.argv[1:]) if sys.argv[1:2] == ["benchmark"] \
        else None


def _fit_reward(a: argparse.Namespace, cfg: configs.FitConfig) -> int:
    from deconfoundlm.pipeline import describe_fit, fit_reward

    print(describe_fit(fit_reward(_data_path(a.data), cfg), cfg))
    return 0


def _score(a: argparse.Namespace, cfg: configs.ScoreConfig) -> int:
    from deconfoundlm.pipeline import score_file

    print(f"scored {score_file(a.model_dir, a.data, cfg)} rows -> {cfg.out}")
    return 0


def _demo(a: argparse.Namespace, cfg: configs.DemoOptions) -> int:
    from deconfoundlm.evaluation.demo import format_table, run_demo_command

    table = run_demo_command(cfg)
    print("\nPairwise accuracy on held-out randomized A/B pairs (Upworthy, |z| > 1.96):")
    print(format_table(table))
    print(f"\nwritten to {cfg.out}/ (results.csv, results.json, diagnostics.json, samples.csv, ...)")
    print(f"report: {Path(cfg.out).resolve() / 'report.html'}")
    return 0


def _evaluate(a: argparse.Namespace, cfg: configs.EvaluateConfig) -> int:
    from deconfoundlm.evaluation.evaluate import evaluate, format_evaluation

    print(format_evaluation(evaluate(a.model_dirs, _data_path(a.data), cfg)))
    return _written(cfg.out)


def _report(a: argparse.Namespace, cfg: configs.ReportConfig) -> int:
    from deconfoundlm.evaluation.report import write_report

    out = write_report(a.dir, cfg.out, force=cfg.force, diagnostics=cfg.diagnostics, sensitivity=cfg.sensitivity,
                       evaluation=cfg.evaluation)
    print(f"report: {Path(out).resolve()}")
    return 0


def _diagnose(a: argparse.Namespace, cfg: configs.DiagnoseConfig) -> int:
    from deconfoundlm.evaluation.diagnose import diagnose, format_report

    print(format_report(diagnose(_data_path(a.data), cfg)))
    return _written(cfg.out)


def _sensitivity(a: argparse.Namespace, cfg: configs.SensitivityConfig) -> int:
    from deconfoundlm.evaluation.sensitivity import sensitivity

    print("\n".join(sensitivity(_data_path(a.data), cfg)["summary"]))
    return _written(cfg.out)


def _written(out: str | None) -> int:
    if out:
        print(f"written to {out}")
    return 0


def _align(a: argparse.Namespace, cfg: configs.AlignConfig) -> int:
    from deconfoundlm.alignment.align import align

    out = align(_data_path(a.data), cfg)
    print(f"aligned {cfg.policy} with {cfg.method} on {cfg.reward} -> {out}")
    return 0


def _generate(a: argparse.Namespace, cfg: configs.GenerateConfig) -> int:
    from deconfoundlm.alignment.generate import generate

    df = generate(a.policy, cfg)
    print(f"generated {len(df)} text(s) -> {cfg.out}")
    for t in df["text"].head(5):
        print(f"  {t}")
    return 0


def _serve(a: argparse.Namespace, cfg: configs.ServeConfig) -> int:
    from deconfoundlm.serving.server import serve

    disarm_sigterm()  # uvicorn drains the requests in flight on SIGTERM, then serve returns 0
    return serve(a.model_dir, cfg, announce=lambda line: print(line, flush=True))


def _simulate(a: argparse.Namespace, cfg: configs.SimulateOptions) -> int:
    from deconfoundlm.evaluation.benchmark.simulate import run_simulate_command

    print(run_simulate_command(cfg))
    return 0


def _study(a: argparse.Namespace, cfg: configs.StudyConfig) -> int:
    from deconfoundlm.evaluation.benchmark.upworthy_study import run_and_write, study_markdown
    from deconfoundlm.outputs import read_json

    table = run_and_write(cfg, command=_command_line())
    print(study_markdown(table, read_json(Path(cfg.out) / "policy_study.json")))
    print(f"written to {cfg.out}/ (policy_study.csv, policy_study_stories.csv, policy_study_examples.csv, "
          "report.html)")
    return 0


def _ab_curve(a: argparse.Namespace, cfg: configs.CurveConfig) -> int:
    from deconfoundlm.evaluation.ab_curve import format_curve
    from deconfoundlm.evaluation.benchmark.ab_curve import run_curve_benchmark

    cfg.command = _command_line()
    table, worth = run_curve_benchmark(_data_path(a.data), _data_path(a.ab), cfg)
    print(format_curve(table, worth))
    print(f"written to {cfg.out}/ (learning_curve.csv, learning_curve_per_split.csv, learning_curve.png, "
          "report.html)")
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace, Any], int]] = {
    "fit-reward": _fit_reward, "score": _score, "demo": _demo, "evaluate": _evaluate, "report": _report,
    "diagnose": _diagnose, "sensitivity": _sensitivity, "align": _align, "generate": _generate, "serve": _serve,
    "benchmark simulate": _simulate, "benchmark upworthy": _study, "benchmark ab-curve": _ab_curve,
}


def _version() -> str:
    from deconfoundlm import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code: 0 done, 2 bad input (one line on stderr), 1 an internal error."""
    install_sigterm()
    # multiprocessing's resource tracker (a child process, started with these options) would print
    # a warning after a terminated Dask run about the semaphores it then cleans up itself.
    quiet_tracker = "ignore::UserWarning:multiprocessing.resource_tracker"
    if quiet_tracker not in sys.warnoptions:
        sys.warnoptions.append(quiet_tracker)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no loading bars before an error line
    pending: list[str] = []
    use_flag_names(True)
    try:
        args = build_parser().parse_args(argv)
        from deconfoundlm.progress import set_quiet

        set_quiet(bool(getattr(args, "quiet", False)))
        quiet_libraries()
        with warnings.catch_warnings():
            # Our DataWarnings are held until the command succeeds, so that bad input ends with
            # exactly one line (the error) and a good run still reports every dropped row.
            warnings.showwarning = lambda message, *rest, **kw: pending.append(f"{PROG}: warning: {message}")
            warnings.simplefilter("ignore")  # library chatter; ours are DataWarnings
            warnings.simplefilter("always", DataWarning)
            code = HANDLERS[args.command](args, _config(args))
        for line in dict.fromkeys(pending):  # each distinct warning once
            print(line, file=sys.stderr)
        if argv is None:  # the process's own command (not a call from Python code)
            ignore_late_sigterm()
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
    finally:
        use_flag_names(False)


if __name__ == "__main__":
    sys.exit(main())
