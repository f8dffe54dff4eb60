"""What a result was made from, and the check that a report only puts together results of the
same data.

Every JSON result of ``diagnose``, ``sensitivity`` and ``evaluate`` carries a ``provenance``
object: the fingerprint of the rows and columns it used (the same hash a reward's config.json
records as ``data_fingerprint``), the column roles, the row count and, for ``evaluate``, the
identity of each reward it scored (a hash of its config.json and weights). ``report`` compares
them with the reward it reports on and refuses a mismatch, naming both.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from deconfoundlm.errors import UserError
from deconfoundlm.logs.roles import ColumnRoles

REWARD_FILES = ("config.json", "model.safetensors")


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """A hash of a table's values in order (the columns given, in their order)."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return h.hexdigest()[:16]


def log_provenance(fingerprint: str, roles: ColumnRoles, rows: int, source: Any, encoder: str) -> dict[str, Any]:
    """The provenance of a result computed from an observational log."""
    return {"data": "<DataFrame>" if isinstance(source, pd.DataFrame) else str(source),
            "data_fingerprint": fingerprint, "rows": int(rows), "roles": roles.to_dict(), "encoder": encoder}


def reward_identity(model_dir: str | Path) -> str:
    """A hash of a reward folder's config.json and weights: which reward, not only which data."""
    h = hashlib.sha256()
    for name in REWARD_FILES:
        h.update(name.encode())
        h.update((Path(model_dir) / name).read_bytes())
    return h.hexdigest()[:16]


def _recorded(result: dict, flag: str, path: Path) -> dict | None:
    prov = result.get("provenance")
    if prov is None:
        return None
    if not isinstance(prov, dict):
        raise UserError(f"{flag} {path}: 'provenance' must be a JSON object")
    return prov


def check_log_result(result: dict, reward, model_dir: Path, flag: str, path: Path) -> str | None:
    """A ``diagnose`` / ``sensitivity`` result against the reward it is reported with: the same
    data (fingerprint) and the same text and outcome columns, or a UserError naming both. A
    result that records no provenance (made by an older version) gives a note to show instead."""
    prov = _recorded(result, flag, path)
    if prov is None:
        return f"{path.name} does not record the data it was computed from; it could not be checked against {model_dir}"
    roles = prov.get("roles") if isinstance(prov.get("roles"), dict) else {}
    ours_roles = reward.roles.to_dict()
    for role in ("text", "outcome", "trials"):
        if roles.get(role) != ours_roles[role]:
            raise UserError(f"{flag} {path}: its {role} column is {roles.get(role)!r}, the reward {model_dir}'s is "
                            f"{ours_roles[role]!r}")
    theirs, ours = prov.get("data_fingerprint"), reward.info.get("data_fingerprint")
    if roles.get("confounders") != ours_roles["confounders"] or roles.get("weights") != ours_roles["weights"]:
        # a fingerprint hashes the columns a result used: with other confounders (or weights) the
        # two hashes are of different columns and say nothing about the rows
        return (f"{path.name} was computed with {_describe(roles)}, the reward {model_dir} with "
                f"{_describe(ours_roles)}; whether they come from the same rows could not be checked")
    if ours is not None and theirs != ours:
        raise UserError(f"{flag} {path}: computed from other data (fingerprint {theirs}, {prov.get('rows')} rows "
                        f"of {prov.get('data')}) than the reward {model_dir} (fingerprint {ours}, "
                        f"{reward.metrics.get('n_rows')} rows of {reward.info.get('data')}); run it on the reward's log")
    return None


def _describe(roles: dict) -> str:
    conf = roles.get("confounders") if isinstance(roles.get("confounders"), list) else []
    names = ", ".join(f"{c.get('column')}:{c.get('type')}" for c in conf if isinstance(c, dict)) or "no confounder"
    return f"confounders {names}" + (f" and weights {roles['weights']!r}" if roles.get("weights") else "")


def check_evaluation(result: dict, model_dir: Path, flag: str, path: Path) -> str | None:
    """An ``evaluate`` result against the reward it is reported with: the reward must be one of
    those it scored (same config and weights), or a UserError naming both."""
    prov = _recorded(result, flag, path)
    if prov is None:
        return f"{path.name} does not record which rewards it scored; it could not be checked against {model_dir}"
    scored = prov.get("rewards") if isinstance(prov.get("rewards"), list) else []
    ours = reward_identity(model_dir)
    if not any(isinstance(r, dict) and r.get("identity") == ours for r in scored):
        names = ", ".join(str(r.get("model_dir")) for r in scored if isinstance(r, dict)) or "none"
        raise UserError(f"{flag} {path}: evaluates other rewards ({names}) than {model_dir} (identity {ours}); "
                        f"run evaluate on {model_dir}")
    return None
