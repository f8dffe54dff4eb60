"""Typed options: each option of a command declared once, with its default, its help and its rule.

A command's config (:mod:`deconfoundlm.configs`) is a dataclass whose fields are made by
:func:`option`. One rule checks a value given from Python (the config's ``__post_init__``) and
from the command line (the parser the CLI generates from the fields), so a bound is written once.
An error names the option as the caller wrote it: ``cv`` from Python, ``--cv`` on the command line
(:func:`label`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Callable
from typing import Any, ClassVar

from deconfoundlm.errors import UserError

MAX_SEED = 2**32 - 1
_FLAG_NAMES = "DECONFOUNDLM_FLAG_NAMES"


class BadValue(ValueError):
    """A rule's complaint about one value (the caller adds which option it was)."""


def use_flag_names(on: bool = True) -> None:
    """Name options as flags (``--cv``) in errors: the CLI's setting; Python names them ``cv``.
    Said through the environment, so that the worker processes a command starts (a local Dask
    cluster) word their errors the same way."""
    if on:
        os.environ[_FLAG_NAMES] = "1"
    else:
        os.environ.pop(_FLAG_NAMES, None)


def label(name: str) -> str:
    """How an error names the option ``name`` to the caller (see :func:`use_flag_names`)."""
    return "--" + name.replace("_", "-") if os.environ.get(_FLAG_NAMES) == "1" else name


_HOW = {"rule": None, "choices": None, "flag": None, "metavar": None, "required": False, "repeat": False,
        "negatable": False, "group": None, "section": None, "cli": True}


def option(default: Any = None, help: str = "", **how: Any) -> Any:
    """A config field and how the command line spells it.

    ``how`` may say: ``rule`` (turns a value, a string from the command line or a Python value,
    into the option's value, or raises :class:`BadValue`); ``choices`` (the allowed strings);
    ``flag`` and ``metavar`` (the flag's spelling, default ``--name-with-dashes``); ``required``
    (on the command line); ``repeat`` (a flag given several times, collected into a tuple);
    ``negatable`` (``--x`` / ``--no-x``, default None); ``group`` (mutually exclusive flags;
    a trailing ``!``: exactly one of them is required); ``section`` (the help's heading);
    ``cli=False`` (a Python-only field, such as an object).
    """
    unknown = sorted(set(how) - set(_HOW))
    if unknown:
        raise TypeError(f"option(): unknown setting {unknown[0]!r}")
    meta = {"help": help, **_HOW, **how}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: tuple(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class Config:
    """Base of the command configs: every field's rule runs on construction, so a bad value from
    Python fails with the same words as on the command line; :meth:`check` adds the rules that
    join several options."""

    REQUIRED: ClassVar[tuple[str, ...]] = ()  # options without which the command cannot run

    def __post_init__(self) -> None:
        missing = [n for n in self.REQUIRED if getattr(self, n) is None]
        if missing:
            raise UserError(f"{label(missing[0])} is required" + (" (the column with the texts)"
                                                                  if missing[0] == "text" else ""))
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None or not meta or meta["repeat"] or (isinstance(value, bool) and meta["rule"] is None):
                continue
            try:
                if meta["rule"] is not None:
                    setattr(self, f.name, meta["rule"](value))
                elif meta["choices"] and value not in meta["choices"]:
                    raise BadValue(f"use one of {', '.join(meta['choices'])}")
            except BadValue as exc:
                raise UserError(f"{label(f.name)} {value!r}: {exc}") from None
        self.check()

    def check(self) -> None:
        """Rules joining several options (a subclass's; none here)."""

    @classmethod
    def of(cls, config: Config | None, options: dict[str, Any]):
        """``config`` with ``options`` replacing its fields (keyword calls of the Python API)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unexpected option {unknown[0]!r} (options of {cls.__name__}: {', '.join(sorted(names))})")
        if config is None:
            return cls(**options)
        return dataclasses.replace(config, **options) if options else config


# --- rules: a string or a Python value in, the option's value out ------------------------------------


def integer(low: int, high: int | None = None) -> Callable[[Any], int]:
    """An integer in [low, high]."""

    def rule(value: Any) -> int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise BadValue(f"expected an integer, got {value!r}") from None
        elif isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise BadValue(f"expected an integer, got {value!r}")
        value = int(value)
        if value < low:
            raise BadValue(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise BadValue(f"must be at most {high:,}, got {value:,}")
        return value

    return rule


def number(condition: Callable[[float], bool], says: str) -> Callable[[Any], float]:
    """A finite number meeting ``condition`` (``says`` words the condition)."""

    def rule(value: Any) -> float:
        text = value
        if isinstance(value, bool):
            raise BadValue(f"expected a number, got {value!r}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise BadValue(f"expected a number, got {value!r}") from None
        if not math.isfinite(value) or not condition(value):
            raise BadValue(f"must be {says}, got {text}")
        return value

    return rule


def sizes(value: Any) -> tuple[int, ...]:
    """Comma-separated numbers of tests (2 to 10,000,000) as a sorted tuple, or "none" (empty)."""
    if not isinstance(value, str):
        parts = list(value)
    elif value.strip().lower() == "none":
        return ()
    else:
        parts = [p.strip() for p in value.split(",")]
    try:
        return tuple(sorted({integer(2, 10_000_000)(p) for p in parts}))
    except BadValue as exc:
        raise BadValue(f"{value!r}: {exc}") from None


def number_list(condition: Callable[[float], bool], says: str) -> Callable[[Any], tuple[float, ...]]:
    """Comma-separated numbers, each meeting ``condition``."""

    def rule(value: Any) -> tuple[float, ...]:
        parts = value.split(",") if isinstance(value, str) else list(value)
        try:
            got = tuple(float(p) for p in parts)
        except (TypeError, ValueError):
            raise BadValue("expected comma-separated numbers") from None
        if not got or any(not math.isfinite(v) or not condition(v) for v in got):
            raise BadValue(f"each must be {says}")
        return got

    return rule


seed = integer(0, MAX_SEED)
positive = number(lambda v: v > 0, "a finite number above 0")
non_negative = number(lambda v: v >= 0, "a finite number of at least 0")
share = number(lambda v: 0 < v < 1, "above 0 and below 1")
partial_r2 = number(lambda v: 0 <= v < 1, "a partial R^2 from 0 to below 1")


def store_params(obj: Any, values: dict[str, Any]) -> None:
    """scikit-learn's contract for a constructor: each parameter stored unchanged under its own
    name (``store_params(self, locals())`` as a constructor's body)."""
    import inspect

    for name in inspect.signature(type(obj).__init__).parameters:
        if name != "self":
            setattr(obj, name, values[name])
