"""Writing outputs, and the one output-safety rule of every command.

Outputs are written atomically (a temporary file or folder beside the target, then a rename),
with the permissions the user's umask gives (not a temporary file's 0600/0700). Before any
work, :func:`check_output` makes sure the output can be written and that ``--force`` would
replace only an earlier output of the same kind: never an input of the command, a folder that
contains one, or a folder holding anything else.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from deconfoundlm.checks import require_regular_file
from deconfoundlm.errors import UserError
from deconfoundlm.logs.tables import TABLE_EXTENSIONS, table_format
from deconfoundlm.options import label

OUTPUT_MARKER = "deconfoundlm-output.json"


# -- output safety --------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputKind:
    """What a command writes. ``--force`` replaces an existing path only if it is of this kind.

    Directories: they carry ``marker`` (a JSON file whose ``format`` is ``formats``) and
    nothing beyond the ``entries`` patterns. Files: their suffix is one of ``suffixes`` and,
    for ``content`` "json" / "html", their content is of that kind.
    """

    name: str
    directory: bool = False
    marker: str | None = None
    formats: tuple[str, ...] = ()
    entries: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    content: str | None = None
    legacy_entries: tuple[str, ...] = field(default=())  # older outputs without a marker

    def why_not(self, path: Path) -> str | None:
        """None when ``path`` is an earlier output of this kind, else the reason it is not."""
        if path.is_symlink():
            return "it is a symbolic link"
        if self.directory:
            return self._why_not_dir(path)
        if path.is_dir():
            return "it is a directory"
        if not path.is_file():
            return "it is not a regular file"
        if self.suffixes and path.suffix.lower() not in self.suffixes:
            return f"it is not a {'/'.join(self.suffixes)} file"
        if self.content == "json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return "it is not a JSON file"
        if self.content == "html":
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    head = fh.read(64).lstrip().lower()
            except OSError:
                return "it cannot be read"
            if not head.startswith(("<!doctype html", "<html")):
                return "it is not an HTML file"
        return None

    def _why_not_dir(self, path: Path) -> str | None:
        if not path.is_dir():
            return "it is a file, not a directory"
        names = sorted(p.name for p in path.iterdir())
        marker_ok = False
        if self.marker and self.marker in names:
            try:
                info = json.loads((path / self.marker).read_text(encoding="utf-8"))
                marker_ok = isinstance(info, dict) and info.get("format") in self.formats
            except (OSError, ValueError):
                marker_ok = False
        if not marker_ok:
            legacy = self.legacy_entries and names and all(
                any(fnmatch.fnmatch(n, pat) for pat in self.legacy_entries) for n in names)
            if not legacy:
                return f"it has no {self.marker} of a {self.name}"
        allowed = self.entries + ((self.marker,) if self.marker else ())
        others = [n for n in names if not any(fnmatch.fnmatch(n, pat) for pat in allowed)]
        if others:
            return f"it also holds {others[0]!r}"
        return None


REWARD_DIR = OutputKind("reward model directory", directory=True, marker="config.json",
                        formats=("deconfoundlm-reward",),
                        entries=("config.json", "model.safetensors", "metrics.json", "text_model", "README.md"))
POLICY_DIR = OutputKind("aligned policy directory", directory=True, marker="deconfoundlm.json",
                        formats=("deconfoundlm-aligned-policy",),
                        entries=("*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "README.md"))
DEMO_DIR = OutputKind("demo output directory", directory=True, marker=OUTPUT_MARKER,
                      formats=("deconfoundlm-demo",),
                      entries=("*.csv", "*.json", "*.html", "*.png", "*.md"),
                      legacy_entries=("results.csv", "results.json", "per_split.csv", "timeseries.csv",
                                      "reward_by_week.csv", "samples.csv", "diagnostics.json", "report.html",
                                      "candidates.csv"))
BENCHMARK_DIR = OutputKind("benchmark output directory", directory=True, marker=OUTPUT_MARKER,
                           formats=("deconfoundlm-benchmark",),
                           entries=("*.csv", "*.json", "*.html", "*.png", "*.md"),
                           legacy_entries=("results.csv", "policy_results.csv", "summary.md", "run.json",
                                           "*.png", "report.html"))
TABLE_FILE = OutputKind("table", suffixes=TABLE_EXTENSIONS)
JSON_FILE = OutputKind("JSON file", suffixes=(".json",), content="json")
HTML_FILE = OutputKind("HTML report", suffixes=(".html", ".htm"), content="html")
# Readers of a Parquet folder (pyarrow, Dask, Spark) skip names starting with "_": the marker does not
# get in their way.
PARQUET_MARKER = "_deconfoundlm-output.json"
PARQUET_DIR = OutputKind("partitioned Parquet table", directory=True, marker=PARQUET_MARKER,
                         formats=("deconfoundlm-scores",), entries=("*.parquet",))


def _same_or_inside(inner: Path, outer: Path) -> bool:
    try:
        inner.relative_to(outer)
        return True
    except ValueError:
        return False


def _resolve(path: Path, flag: str) -> Path:
    """The absolute path with symlinks followed; a symlink loop is the user's error."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        raise UserError(f"{flag} {path}: a symlink loop, not a file or folder") from None


def _nearest_existing(path: Path) -> Path:
    p = path.parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _model_held_by(folder: Path) -> str | None:
    """What model ``folder`` holds, as its own config says: a deconfoundlm reward, an aligned
    policy, or any Hugging Face model (a config.json naming its model type); None otherwise."""
    for name, formats in ((REWARD_DIR.marker, REWARD_DIR.formats), (POLICY_DIR.marker, POLICY_DIR.formats)):
        info = _small_json(folder / name)
        if isinstance(info, dict) and info.get("format") in formats:
            return "a deconfoundlm reward model" if name == REWARD_DIR.marker else "an aligned policy"
    info = _small_json(folder / "config.json")
    if isinstance(info, dict) and ("model_type" in info or "architectures" in info):
        return "a model (its config.json names a model type)"
    return None


def _small_json(path: Path, limit: int = 1 << 20) -> Any:
    try:
        if not path.is_file() or path.stat().st_size > limit:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_output(path: str | Path, force: bool, kind: OutputKind = TABLE_FILE,
                 inputs: Iterable[str | Path | None] = (), flag: str = "--out") -> None:
    """The output-safety rule, checked before any work.

    - an output never is, nor contains, an input of the command, nor lies inside an input folder
      (a reward or policy directory, a folder of Parquet files), with or without --force;
    - nor does it lie inside any folder holding a model (a reward, a policy, a Hugging Face model),
      an input of this command or not;
    - an existing output is replaced only with ``force`` and only if it is a ``kind`` output;
    - the output's folder must exist (it is not created: a typo would scatter folders) and be
      writable.
    """
    path = Path(path)
    if str(path) in ("", "."):
        raise UserError(f"{flag}: give a file or folder name")
    resolved = _resolve(path, flag)
    for inp in inputs:
        if inp is None:
            continue
        ip = _resolve(Path(inp), "input")
        if _same_or_inside(ip, resolved):
            what = "is" if ip == resolved else "contains"
            raise UserError(f"{flag} {path}: {what} an input of this command ({inp}); choose another output path")
        if ip.is_dir() and _same_or_inside(resolved, ip):  # e.g. scores written into the reward folder read
            raise UserError(f"{flag} {path}: is inside {inp}, a folder this command reads; write it elsewhere")
    for folder in resolved.parents:  # a file added inside a model folder is not ours to add
        held = _model_held_by(folder)
        if held is not None:
            raise UserError(f"{flag} {path}: is inside {folder}, which holds {held}; no command writes inside "
                            "a model's folder: write it elsewhere")
    if path.exists() or path.is_symlink():
        if not force:
            raise UserError(f"{flag} {path}: output exists; pass {label('force')} to overwrite it")
        why = kind.why_not(path)
        if why is not None:
            raise UserError(f"{flag} {path}: {label('force')} replaces only an earlier {kind.name}, and {why}; "
                            "not touching it")
    if kind.suffixes and path.suffix.lower() not in kind.suffixes:
        raise UserError(f"{flag} {path}: expected a {'/'.join(kind.suffixes)} file name")
    base = resolved.parent
    if not base.exists():
        above = _nearest_existing(resolved)
        if not above.is_dir():
            raise UserError(f"{flag} {path}: {above} is a file, not a folder")
        raise UserError(f"{flag} {path}: folder {path.parent} does not exist; create it first")
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {path.parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write in {base} ({exc.strerror or exc})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_permissions(folder: Path) -> None:
    """Files and folders written by libraries (safetensors, transformers) get the umask's modes."""
    mask = _umask()
    for p in folder.rglob("*"):
        if not p.is_symlink():
            p.chmod((0o777 if p.is_dir() else 0o666) & ~mask)


# Temporary outputs being written now: removed by their writers when they finish or fail, and by
# abandon_partial_outputs() when the process must stop at once (a SIGTERM the main thread cannot
# take because it waits inside a library).
_IN_PROGRESS: dict[Path, list[Path]] = {}
# Outputs committed (renamed into place) by this process, in order.
_COMMITTED: list[Path] = []


def _committed(path: Path) -> None:
    _COMMITTED.append(Path(os.path.abspath(path)))


def committed_outputs() -> list[Path]:
    """The outputs this process has put in place and that are still there (files written inside
    a folder still being written are not outputs yet)."""
    def inside_tmp(p: Path) -> bool:
        return any(_same_or_inside(p, t) for t in _IN_PROGRESS) or any(q.name.startswith(".tmp-") for q in p.parents)

    return [p for p in dict.fromkeys(_COMMITTED) if p.exists() and not inside_tmp(p)]


def abandon_partial_outputs() -> None:
    """Remove every temporary output still being written (and the folders made for it)."""
    for tmp, created in list(_IN_PROGRESS.items()):
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        _remove_created(created)
        _IN_PROGRESS.pop(tmp, None)


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of ``path``; returns the ones created (deepest last)."""
    created = []
    p = path.parent
    missing = []
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        created.append(d)
    return created


def _remove_created(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def no_space(exc: BaseException, path: str | Path) -> UserError | None:
    """The one-line error for a write that ran out of room (disk full, quota, file size limit);
    None for any other failure. Raise it after the partial output is removed."""
    full = isinstance(exc, OSError) and exc.errno in _FULL
    # safetensors and pyarrow raise their own types, with the OS's words in the message
    full = full or (isinstance(exc, Exception) and ("No space left on device" in str(exc) or "os error 28" in str(exc)))
    if full:
        return UserError(f"no space left on device writing {path}; nothing was written "
                         "- free some space or write elsewhere")
    return None


@contextmanager
def _atomic_file(path: str | Path) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; it replaces ``path`` if the block succeeds.
    On failure nothing is left behind (neither the temporary file nor created folders)."""
    path = Path(path)
    created = _make_parents(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    _IN_PROGRESS[Path(tmp)] = created
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            raise UserError(f"{label('out')} {path}: is a directory")
        os.replace(tmp, path)
        _committed(path)
    except BaseException as exc:
        _remove_created(created)
        full = no_space(exc, path)
        if full is not None:
            raise full from None
        raise
    finally:
        _IN_PROGRESS.pop(Path(tmp), None)
        if os.path.exists(tmp):
            os.unlink(tmp)
            _remove_created(created)


class TableWriter:
    """Append chunks to a CSV / Parquet / JSONL file written atomically on ``close``."""

    def __init__(self, path: str | Path, force: bool = False, inputs: Iterable[str | Path | None] = ()) -> None:
        self.path = Path(path)
        self.fmt = table_format(self.path)
        check_output(self.path, force, TABLE_FILE, inputs)
        self._created = _make_parents(self.path)
        fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", suffix=self.path.suffix, dir=self.path.parent)
        os.close(fd)
        os.chmod(self.tmp, 0o666 & ~_umask())
        _IN_PROGRESS[Path(self.tmp)] = self._created
        self._first = True
        self._parquet = None

    def write(self, df: pd.DataFrame) -> None:
        try:
            self._write(df)
        except OSError as exc:
            full = no_space(exc, self.path)
            if full is None:
                raise
            self.abort()
            raise full from None

    def _write(self, df: pd.DataFrame) -> None:
        if self.fmt == "csv":
            df.to_csv(self.tmp, index=False, mode="w" if self._first else "a", header=self._first)
        elif self.fmt == "jsonl":
            with open(self.tmp, "w" if self._first else "a", encoding="utf-8") as fh:
                df.to_json(fh, orient="records", lines=True, force_ascii=False, double_precision=15)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.tmp, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        self._first = False

    def close(self) -> None:
        try:
            if self._parquet is not None:
                self._parquet.close()
                self._parquet = None
            os.replace(self.tmp, self.path)
            _IN_PROGRESS.pop(Path(self.tmp), None)
            _committed(self.path)
        except BaseException as exc:
            self.abort()
            full = no_space(exc, self.path)
            if full is not None:
                raise full from None
            raise

    def abort(self) -> None:
        _IN_PROGRESS.pop(Path(self.tmp), None)
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)
        _remove_created(self._created)


def write_table(df: pd.DataFrame, path: str | Path, force: bool = False,
                inputs: Iterable[str | Path | None] = ()) -> None:
    """Write a table (format by extension) atomically: a temp file, then a rename."""
    path = Path(path)
    fmt = table_format(path)
    check_output(path, force, TABLE_FILE, inputs)
    with _atomic_file(path) as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True, force_ascii=False, double_precision=15)


def strict_json(obj: Any) -> Any:
    """``obj`` with numpy types made plain and non-finite floats replaced by None (strict JSON)."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return strict_json(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(obj: Any, path: str | Path) -> None:
    """Write strict JSON (never NaN / Infinity: non-finite numbers become null) atomically."""
    text = json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n"
    with _atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_text(text: str, path: str | Path) -> None:
    """Write a text file atomically."""
    with _atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


MAX_JSON_BYTES = 64 * 2**20  # config, metrics, diagnostics, study files: far below this


class UnreadableJSON(ValueError):
    """A file :func:`read_json` cannot take as strict JSON; the message says why. Not a
    :class:`UserError`, so callers that word it (``except (OSError, UnreadableJSON)``) let the
    UserErrors of the path checks through with their own message."""


def read_json(path: str | Path) -> Any:
    """Strict JSON from a regular file (NaN / Infinity refused), bounded in size and nesting.
    Raises UserError for a path that is not a regular file, OSError when it cannot be read and
    :class:`UnreadableJSON` for content that is not strict JSON (callers turn it into one line)."""
    def refuse(name: str) -> Any:
        raise ValueError(f"non-finite number {name} is not JSON")

    require_regular_file(path)
    size = os.path.getsize(path)
    if size > MAX_JSON_BYTES:
        raise UnreadableJSON(f"{size:,} bytes, above the {MAX_JSON_BYTES:,} bytes a JSON file of this tool may have")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.loads(fh.read(), parse_constant=refuse)
    except RecursionError:
        raise UnreadableJSON("nested too deeply") from None
    except ValueError as exc:  # not UTF-8, not JSON, a non-finite constant
        raise UnreadableJSON(str(exc)) from None


def write_marker(directory: str | Path, fmt: str, name: str = OUTPUT_MARKER, **info: Any) -> None:
    """Mark a folder as an output of this tool, so that ``--force`` may later replace it."""
    write_json({"format": fmt, **info}, Path(directory) / name)


@contextmanager
def atomic_directory(path: str | Path, force: bool = False, kind: OutputKind | None = None,
                     inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block succeeds.

    ``check_output`` runs again here (the caller should already have run it before the work)."""
    path = Path(path)
    check_output(path, force, kind or REWARD_DIR, inputs)
    created = _make_parents(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    _IN_PROGRESS[tmp] = created
    try:
        yield tmp
        _normal_permissions(tmp)
        if path.exists() or path.is_symlink():
            old = path.with_name(f".old-{path.name}-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _committed(path)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, path)
            _committed(path)
    except BaseException as exc:
        _remove_created(created)
        full = no_space(exc, path)
        if full is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            raise full from None
        raise
    finally:
        _IN_PROGRESS.pop(tmp, None)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            _remove_created(created)
