"""Reading a saved reward model: untrusted input, validated before anything is built.

A reward directory holds ``config.json`` (strict JSON) and ``model.safetensors``. Loading never
imports or calls anything the files name: the method name is looked up in the registry, every
config field is checked for its type and range, and every tensor for its name, shape and
finiteness. Anything else is ``DIR: not a valid deconfoundlm reward model: <why>`` (exit 2).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from deconfoundlm.checks import require_regular_folder
from deconfoundlm.errors import UserError
from deconfoundlm.features.confounders import ConfounderDesign
from deconfoundlm.glm.families import FAMILIES
from deconfoundlm.glm.model import AdditiveGLM
from deconfoundlm.logs.ab import DIGEST_CHARS
from deconfoundlm.logs.roles import CONFOUNDER_TYPES, ColumnRoles
from deconfoundlm.logs.values import WEEKDAYS
from deconfoundlm.outputs import UnreadableJSON, read_json
from deconfoundlm.rewards.base import CONFIG_FILE, FORMAT, WEIGHTS_FILE, RewardEstimator

MAX_DIM = 10_000_000


class InvalidArtifact(ValueError):
    """What is wrong with a reward directory (turned into a UserError naming the directory)."""


def _need(cond: bool, why: str) -> None:
    if not cond:
        raise InvalidArtifact(why)


def _int(value: Any, name: str, low: int = 0, high: int = MAX_DIM) -> int:
    _need(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer")
    _need(low <= value <= high, f"{name} = {value} is out of range [{low}, {high}]")
    return value


def _float(value: Any, name: str) -> float:
    _need(isinstance(value, (int, float)) and not isinstance(value, bool), f"{name} must be a number")
    _need(math.isfinite(value), f"{name} must be finite")
    return float(value)


def _str(value: Any, name: str, choices: tuple[str, ...] | None = None) -> str:
    _need(isinstance(value, str), f"{name} must be a string")
    if choices is not None:
        _need(value in choices, f"{name} {value!r} is not one of {', '.join(choices)}")
    return value


def _plain(value: Any, name: str) -> Any:
    """A parameter value: None, bool, int, finite float, str, or a list of numbers."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return _float(value, name) if isinstance(value, float) else value
    if isinstance(value, list):
        return tuple(_float(v, f"{name}[]") for v in value)
    raise InvalidArtifact(f"{name} has an unsupported type ({type(value).__name__})")


def _params(raw: Any, defaults: dict[str, Any], name: str) -> dict[str, Any]:
    _need(isinstance(raw, dict), f"{name} must be an object")
    out = {}
    for key, value in raw.items():
        _need(key in defaults, f"{name} has an unknown field {key!r}")
        value = _plain(value, f"{name}.{key}")
        default = defaults[key]
        if default is not None and value is not None:
            same = (isinstance(default, bool) == isinstance(value, bool)) and (
                isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int)))
            _need(same, f"{name}.{key} must be {type(default).__name__}")
        out[key] = value
    return out


def _design(raw: Any) -> ConfounderDesign | None:
    if raw is None:
        return None
    _need(isinstance(raw, dict), "design must be an object or null")
    _need({"min_count", "n_knots", "degree", "confounders"} <= set(raw) <= {"min_count", "n_knots", "degree",
                                                                           "confounders", "terms"},
          "design must have the fields min_count, n_knots, degree, confounders (and terms)")
    _int(raw["min_count"], "design.min_count", 1, MAX_DIM)
    _int(raw["n_knots"], "design.n_knots", 2, 1000)
    _int(raw["degree"], "design.degree", 1, 5)
    if "terms" in raw:
        _need(isinstance(raw["terms"], list) and all(isinstance(t, str) for t in raw["terms"]),
              "design.terms must be a list of strings")
    confs = raw["confounders"]
    _need(isinstance(confs, list) and confs, "design.confounders must be a non-empty list")
    for i, c in enumerate(confs):
        where = f"design.confounders[{i}]"
        _need(isinstance(c, dict), f"{where} must be an object")
        _str(c.get("column"), f"{where}.column")
        kind = _str(c.get("type"), f"{where}.type", CONFOUNDER_TYPES)
        if kind in ("categorical", "weekday"):
            _need(set(c) == {"column", "type", "levels"}, f"{where} must have column, type, levels")
            levels = c["levels"]
            _need(isinstance(levels, list) and len(levels) >= 2 and all(isinstance(v, str) for v in levels),
                  f"{where}.levels must be a list of at least 2 strings")
            _need(len(set(levels)) == len(levels), f"{where}.levels has duplicates")
            if kind == "weekday":
                _need(levels == list(WEEKDAYS), f"{where}.levels must be {list(WEEKDAYS)}")
        elif kind == "hour":
            _need(c == {"column": c["column"], "type": "hour", "period": 24}, f"{where} must be an hour term "
                  "with period 24")
        else:
            allowed = {"column", "type", "knots"} | ({"calendar"} if kind == "time" else set())
            _need({"column", "type", "knots"} <= set(c) <= allowed, f"{where} must have column, type, knots")
            knots = c["knots"]
            _need(isinstance(knots, list) and len(knots) >= 2, f"{where}.knots must list at least 2 numbers")
            k = np.array([_float(v, f"{where}.knots[]") for v in knots])
            _need(bool(np.all(np.diff(k) > 0)), f"{where}.knots must be strictly increasing")
            cal = c.get("calendar", [])
            _need(isinstance(cal, list) and all(isinstance(v, str) for v in cal)
                  and set(cal) <= {"weekday", "hour"} and len(set(cal)) == len(cal),
                  f"{where}.calendar must list weekday and/or hour")
    try:
        return ConfounderDesign.from_config(raw)
    except UserError as exc:
        raise InvalidArtifact(str(exc)) from None


def _design_width(design: ConfounderDesign | None) -> int:
    return 0 if design is None else design.width()


REQUIRED = {"format", "method", "params", "family", "n_features_in", "center", "design", "glm", "glm_dims"}
# encoder and roles: written by the pipeline (and required by ``load_reward``), not by a bare estimator.
OPTIONAL = {"encoder", "roles", "class", "versions", "data_fingerprint", "data", "backbone", "text_model",
            "grounding", "tests_only"}
GROUNDING = {"ab": str, "test": str, "ab_fingerprint": str, "tests": int, "rows": int, "strength": float,
             "log_scale": float, "calibration_slope": float}
TESTS_ONLY = {"test": str, "tests": int, "rows": int, "strength": float}
NOT_NULL = {"grounding.log_scale", "tests_only.strength"}  # floats that may not be null
DIGESTS = "test_digests"  # optional in both records (folders written before it lack it)


def _record(raw: Any, name: str, fields: dict[str, type]) -> None:
    """An informational record of how the reward was fitted (``grounding``: ``fit-reward --ab``;
    ``tests_only``: ``fit-reward TESTS --test COL``): the fields ``fields``, every value typed and
    finite, and optionally ``test_digests`` (distinct, sorted hex digests of the tests' labels,
    :func:`~deconfoundlm.logs.ab.test_digests`)."""
    _need(isinstance(raw, dict) and set(raw) - {DIGESTS} == set(fields), f"{name} must record " + ", ".join(fields))
    if DIGESTS in raw:
        d = raw[DIGESTS]
        _need(isinstance(d, list) and all(isinstance(v, str) and len(v) == DIGEST_CHARS
                                          and all(c in "0123456789abcdef" for c in v) for v in d)
              and all(a < b for a, b in itertools.pairwise(d)),
              f"{name}.{DIGESTS} must be a sorted list of distinct {DIGEST_CHARS}-character hex digests")
    for key, kind in fields.items():
        value = raw[key]
        if kind is str:
            _str(value, f"{name}.{key}")
        elif kind is int:
            _int(value, f"{name}.{key}", 0)
        elif value is not None or f"{name}.{key}" in NOT_NULL:
            _float(value, f"{name}.{key}")


def read_config(directory: Path) -> dict[str, Any]:
    """The validated config.json of a reward directory (types and fields; not yet tensors)."""
    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    _need(directory.is_dir(), "no such directory")
    require_regular_folder(directory, f"{directory}: ")
    _need(cfg_path.is_file() and w_path.is_file(), f"no {CONFIG_FILE} + {WEIGHTS_FILE}")
    try:
        config = read_json(cfg_path)
    except (OSError, UnreadableJSON) as exc:
        raise InvalidArtifact(f"{CONFIG_FILE} is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    _need(isinstance(config, dict), f"{CONFIG_FILE} must hold a JSON object")
    _need(config.get("format") == FORMAT, f"{CONFIG_FILE} has no format {FORMAT!r}")
    missing = sorted(REQUIRED - set(config))
    _need(not missing, f"{CONFIG_FILE} lacks the field {missing[0] if missing else ''!r}")
    unknown = sorted(set(config) - REQUIRED - OPTIONAL)
    _need(not unknown, f"{CONFIG_FILE} has an unknown field {unknown[0] if unknown else ''!r}")
    return config


def load_estimator(directory: str | Path) -> tuple[RewardEstimator, dict[str, Any]]:
    """A saved reward estimator and its (validated) config; UserError if it is not one."""
    directory = Path(directory)
    try:
        return _load(directory)
    except InvalidArtifact as exc:
        raise UserError(f"{directory}: not a valid deconfoundlm reward model: {exc}") from None


def _load(directory: Path) -> tuple[RewardEstimator, dict[str, Any]]:
    from safetensors.numpy import load_file

    from deconfoundlm.rewards.registry import METHODS

    config = read_config(directory)
    method = _str(config["method"], "method", tuple(METHODS))
    klass = METHODS[method]
    params = _params(config["params"], klass().get_params(), "params")
    family = _str(config["family"], "family", FAMILIES)
    n_features = _int(config["n_features_in"], "n_features_in", 1)
    center = _float(config["center"], "center")
    design = _design(config["design"])
    glm_params = _params(config["glm"], AdditiveGLM().get_params(), "glm")
    _str(glm_params.get("family", "gaussian"), "glm.family", FAMILIES)
    _str(glm_params.get("solver", "auto"), "glm.solver", ("auto", "lbfgs"))
    _need(glm_params.get("family") == family, "glm.family differs from family")
    _str(glm_params.get("head", "linear"), "glm.head", ("linear", "mlp"))
    _int(glm_params.get("n_text", 0), "glm.n_text", 0)
    _need(glm_params.get("n_text") == n_features, "glm.n_text differs from n_features_in")
    _int(glm_params.get("hidden", 64), "glm.hidden", 1, 65_536)
    dims = config["glm_dims"]
    _need(isinstance(dims, dict) and set(dims) == {"d_conf"}, "glm_dims must be {\"d_conf\": int}")
    d_conf = _int(dims["d_conf"], "glm_dims.d_conf", 0)
    if "encoder" in config:
        _str(config["encoder"], "encoder")
    if "backbone" in config:
        b = config["backbone"]
        _need(isinstance(b, dict) and all(isinstance(b.get(k), str) for k in ("name", "kind", "content_hash",
                                                                                "pooling"))
              and isinstance(b.get("max_length"), int), "backbone must record name, kind, content_hash, "
              "pooling and max_length")
    if "grounding" in config:
        _need(method == "deconfound", "only a deconfound reward records a grounding")
        _record(config["grounding"], "grounding", GROUNDING)
    if "tests_only" in config:
        _need(method == "deconfound" and "grounding" not in config and design is None,
              "tests_only records a deconfound reward of A/B tests alone (no grounding, no confounder term)")
        _record(config["tests_only"], "tests_only", TESTS_ONLY)
    if "roles" in config:
        roles = config["roles"]
        _need(isinstance(roles, dict), "roles must be an object")
        try:
            ColumnRoles.from_dict(roles)
        except (KeyError, TypeError, UserError) as exc:
            raise InvalidArtifact(f"roles: {exc}") from None
    if method == "naive" or "tests_only" in config:
        _need(d_conf == 0, f"a {'naive model' if method == 'naive' else 'reward of A/B tests alone'} has no "
              "confounder term (glm_dims.d_conf must be 0)")
    elif klass.needs_confounders:
        _need(design is not None, f"method {method!r} needs a confounder design")
        if method != "confounder-input" and d_conf:
            _need(d_conf == _design_width(design), "glm_dims.d_conf does not match the confounder design")
    try:
        tensors = load_file(directory / WEIGHTS_FILE)
    except Exception as exc:  # noqa: BLE001 - a corrupt or hostile file is the user's input
        raise InvalidArtifact(f"{WEIGHTS_FILE} is not a readable safetensors file "
                              f"({(str(exc).splitlines() or [type(exc).__name__])[0][:120]})") from None
    glm_tensors = {k[4:]: v for k, v in tensors.items() if k.startswith("glm.")}
    extra = {k: v for k, v in tensors.items() if not k.startswith("glm.")}
    try:
        glm = AdditiveGLM.from_state(glm_params, d_conf, glm_tensors)
    except UserError:  # a UserError is a ValueError: its own message, not this one
        raise
    except (ValueError, TypeError, RuntimeError) as exc:
        raise InvalidArtifact(f"{WEIGHTS_FILE}: {exc}") from None
    est = klass(**params)
    expected_extra = est.extra_tensor_shapes(d_conf)
    optional = est.optional_tensor_shapes(n_features)
    _need(set(expected_extra) <= set(extra) <= set(expected_extra) | set(optional),
          f"{WEIGHTS_FILE} has unexpected or missing tensors "
          f"{sorted(set(extra) ^ set(expected_extra) - set(optional))[:3]}")
    present_optional = set(extra) & set(optional)
    _need(present_optional in (set(), set(optional)), f"{WEIGHTS_FILE} has an incomplete standard-error state")
    for name, shape in {**expected_extra, **{k: v for k, v in optional.items() if k in extra}}.items():
        t = extra[name]
        _need(np.issubdtype(t.dtype, np.floating) and bool(np.isfinite(t).all()), f"tensor {name!r} must be finite floats")
        _need(len(t.shape) == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape, strict=True))
              and all(d > 0 for d in t.shape), f"tensor {name!r} has shape {tuple(t.shape)}")
    est.family_ = family
    est.n_features_in_ = n_features
    est.center_ = center
    est.design_ = design
    est.glm_ = glm
    est.restore_extra_tensors(dict(extra))
    return est, config
