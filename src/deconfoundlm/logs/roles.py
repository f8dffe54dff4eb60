"""Column roles: which column of a log is the text, the outcome, the trials, the weights, the
prompt and each known confounder (with its type), as DoubleML's data object names them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from deconfoundlm.errors import UserError
from deconfoundlm.options import label

CONFOUNDER_TYPES = ("categorical", "numeric", "time", "hour", "weekday")


@dataclass(frozen=True)
class ConfounderSpec:
    """A confounder column and how it enters the design: categorical, numeric, time, hour or
    weekday (see :mod:`deconfoundlm.features.confounders`)."""

    column: str
    type: str

    def __post_init__(self) -> None:
        if self.type not in CONFOUNDER_TYPES:
            raise UserError(
                f"confounder {self.column!r}: unknown type {self.type!r}; use one of "
                + ", ".join(CONFOUNDER_TYPES)
            )

    @classmethod
    def parse(cls, spec: str) -> ConfounderSpec:
        """Parse ``COL:TYPE`` (the column name may itself contain colons)."""
        if not isinstance(spec, str) or ":" not in spec or spec.startswith(":"):
            raise UserError(
                f"{label('confounder')} {spec!r}: expected COL:TYPE with TYPE one of "
                + ", ".join(CONFOUNDER_TYPES)
            )
        column, type_ = spec.rsplit(":", 1)
        return cls(column=column, type=type_)


@dataclass(frozen=True)
class ColumnRoles:
    """Which column plays which role in the log."""

    text: str
    outcome: str
    trials: str | None = None
    confounders: tuple[ConfounderSpec, ...] = ()
    weights: str | None = None
    prompt: str | None = None
    group: str | None = None  # clusters for standard errors (an A/B test, an author)

    def __post_init__(self) -> None:
        """One column, one role: the outcome must never leak into the text or a confounder."""
        seen: dict[str, str] = {}
        named = [("--text", self.text), ("--outcome", self.outcome), ("--trials", self.trials),
                 ("--weights", self.weights), ("--prompt", self.prompt), ("--group", self.group)]
        named += [("--confounder", c.column) for c in self.confounders]
        for flag, col in named:
            if col is None:
                continue
            if not isinstance(col, str) or not col:
                raise UserError(f"{flag}: expected a column name, got {col!r}")
            if col in seen:
                if flag == seen[col] == "--confounder":
                    raise UserError(f"{label('confounder')} {col!r} is given twice; give each confounder once "
                                    "with one type")
                raise UserError(f"column {col!r} is given two roles ({seen[col]} and {flag}); "
                                "each column may play one role only")
            seen[col] = flag

    @classmethod
    def of(cls, config: Any) -> ColumnRoles:
        """The roles a command's config names (its ``text``, ``outcome``, ``trials``, ``weights``,
        ``confounders`` and, where it has one, ``group``)."""
        return cls(text=config.text, outcome=config.outcome, trials=config.trials, weights=config.weights,
                   group=getattr(config, "group", None), confounders=parse_confounders(config.confounders))

    def columns(self) -> list[str]:
        cols = [self.text, self.outcome, self.trials, self.weights, self.prompt, self.group]
        cols += [c.column for c in self.confounders]
        return list(dict.fromkeys(c for c in cols if c is not None))

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "outcome": self.outcome,
            "trials": self.trials,
            "weights": self.weights,
            "prompt": self.prompt,
            "group": self.group,
            "confounders": [{"column": c.column, "type": c.type} for c in self.confounders],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnRoles:
        return cls(
            text=d["text"],
            outcome=d["outcome"],
            trials=d.get("trials"),
            weights=d.get("weights"),
            prompt=d.get("prompt"),
            group=d.get("group"),
            confounders=tuple(ConfounderSpec(**c) for c in d.get("confounders", [])),
        )


def parse_confounders(confounders: Iterable[str | ConfounderSpec] | Mapping[str, str] | None) -> tuple[ConfounderSpec, ...]:
    """Accept ``["week:time"]``, ``{"week": "time"}`` or ConfounderSpec objects."""
    if confounders is None:
        return ()
    if isinstance(confounders, Mapping):
        return tuple(ConfounderSpec(c, t) for c, t in confounders.items())
    return tuple(c if isinstance(c, ConfounderSpec) else ConfounderSpec.parse(c) for c in confounders)
