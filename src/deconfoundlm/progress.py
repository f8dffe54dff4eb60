"""What the terminal shows: one progress bar per long stage (ours; the libraries' own bars are
off, see :func:`deconfoundlm.cli.main`), stage lines, and ``--quiet`` for neither."""

from __future__ import annotations

import sys

PROGRESS = {"bars": True, "lines": True}


def disable(hide: bool = False) -> bool | None:
    """tqdm's ``disable`` for one of our bars: off with --quiet (or when ``hide``), else tqdm's
    own rule (None: shown on a terminal, not in a log file)."""
    return True if hide or not PROGRESS["bars"] else None


def say(message: str) -> None:
    """A stage line ("encoding 12,345 headlines ..."), unless --quiet."""
    if PROGRESS["lines"]:
        print(message, flush=True, file=sys.stdout)


def set_quiet(quiet: bool) -> None:
    PROGRESS["bars"] = PROGRESS["lines"] = not quiet
