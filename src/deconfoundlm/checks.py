"""Checks shared by several commands (one place, one wording): the folds a log allows, and paths
that are regular files and folders. Option values are checked by their configs (:mod:`deconfoundlm.options`)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from deconfoundlm.errors import UserError


def check_folds(cv: int, n_rows: int, flag: str = "--cv") -> None:
    """K-fold cross-validation needs at least 2 folds and 2 rows per fold."""
    if cv < 2:
        raise UserError(f"{flag} {cv}: cross-validation needs at least 2 folds")
    if cv > n_rows // 2:
        raise UserError(f"{flag} {cv}: too many folds for {n_rows} usable rows (at most {max(n_rows // 2, 2)}, so "
                        "that every fold has 2 rows or more)")


def require_regular_file(path: str | Path, what: str = "") -> None:
    """Only regular files are read: a FIFO would block the command forever, a device would
    never end, a symlink loop has no file behind it. Missing files are the caller's business."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{what}{path}: a symlink loop, not a file") from None
        return
    if stat.S_ISDIR(st.st_mode):
        return
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what}{path}: not a regular file (a FIFO, socket or device); give a file")


def require_regular_folder(folder: str | Path, what: str = "") -> None:
    """Every entry of a model folder (and of its sub-folders) is a regular file or a folder."""
    root = Path(folder)
    if not root.is_dir():
        return
    for entry in sorted(root.rglob("*")):
        require_regular_file(entry, what)
