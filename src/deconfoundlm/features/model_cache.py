"""Derived model files cached on disk: built once, in a folder named by what they derive from.

The ONNX export of an encoder and the float32 copy of a GGUF model are slow to make (seconds to
tens of seconds) and the same on every run: they live under the cache directory
($DECONFOUNDLM_CACHE or ~/.cache/deconfoundlm), one folder per key, written to a temporary folder
and renamed into place, so a folder that exists is complete. An unusable cache directory means
building into a temporary folder for this process only (removed when it exits).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """Where embeddings and derived models are cached: $DECONFOUNDLM_CACHE or ~/.cache/deconfoundlm."""
    root = os.environ.get("DECONFOUNDLM_CACHE") or Path.home() / ".cache" / "deconfoundlm"
    return Path(root)


def cached_folder(parent: Path, key: str, done: str, build: Callable[[Path], None]) -> Path:
    """``parent / key``, holding the file ``done``, made by ``build(tmp)`` when it is missing.

    ``build`` writes into an empty temporary folder beside the target, renamed into place when it
    returns (another process that finished first wins, and this copy is dropped)."""
    folder = parent / key
    if (folder / done).is_file():
        return folder
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    except OSError:  # an unusable cache directory: build for this process only, removed at its exit
        tmp = Path(tempfile.mkdtemp(prefix="deconfoundlm-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        build(tmp)
        return tmp
    try:
        build(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp (and some writers) make it private; it is a cache like any other
        for path in tmp.rglob("*"):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        if folder.exists():  # another process built it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
