"""The data-generating process of the semi-synthetic benchmark, read from a versioned config.

Real texts (distinct Upworthy headlines), a known causal effect f*(x) that is a linear
combination of transparent features computable on any string (generated text included), a
spurious feature with no effect, and a confounder c that moves both the outcome and which
texts get published. Features are built in (``FEATURES``) or regular expressions on the text;
the JSON schema of a DGP file is in docs/method.md ("Benchmark DGP files"). ``dgp_v1`` and
``dgp_v2`` are bundled and fixed (results cite them).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deconfoundlm.errors import UserError
from deconfoundlm.options import label

_YOU = re.compile(r"\byou(?:r|'re|rself|'ll|'ve)?\b", re.IGNORECASE)
_THIS = re.compile(r"\bthis\b", re.IGNORECASE)

FEATURES = {
    "has_number": lambda t: float(bool(re.search(r"\d", t))),
    "second_person": lambda t: float(bool(_YOU.search(t))),
    "question": lambda t: float("?" in t),
    "length": lambda t: float(np.clip((len(t.split()) - 15) / 3, -2.5, 2.5)),
    "this_word": lambda t: float(bool(_THIS.search(t))),
}


MAX_DGP_BYTES = 1_000_000
MAX_REGEX_CHARS = 500
# A quantified group whose body holds a quantifier, e.g. (a+)+ or (\w*x)*: the catastrophic-
# backtracking shape. Python's re has no time limit, so such features are refused up front.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)\s*[*+{]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_TOP = {"version", "written", "texts", "pools", "features", "causal_effect", "spurious_feature",
        "entangled_feature", "confounder", "scenarios", "logging_policy", "outcome", "oracle", "family"}
_SCENARIO = {"a_s", "a_e", "entangled_feature", "spurious_feature", "confounder_effect", "doc"}
FAMILIES = ("gaussian", "binomial")


def load_config(version: str | Path = "dgp_v1") -> dict[str, Any]:
    """A validated DGP: a bundled version name (``dgp_v1``, ``dgp_v2``) or a JSON file in the schema
    of docs/method.md ("Benchmark DGP files"). A bad file is a UserError naming the field."""
    path = Path(version)
    if path.suffix.lower() == ".json" or path.exists():
        source = str(path)
        if not path.is_file():
            raise UserError(f"{label('dgp')} {version}: no such file (or not a regular file)")
        if path.stat().st_size > MAX_DGP_BYTES:
            raise UserError(f"{label('dgp')} {version}: larger than {MAX_DGP_BYTES:,} bytes")
        text = path.read_text(encoding="utf-8", errors="replace")
    else:
        bundled = resources.files("deconfoundlm") / "evaluation" / "benchmark" / f"{version}.json"
        if not re.fullmatch(r"dgp_v\d+", str(version)) or not bundled.is_file():
            raise UserError(f"{label('dgp')} {version!r}: not a bundled DGP (dgp_v1, dgp_v2) nor a .json file")
        source, text = str(version), bundled.read_text()
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{label('dgp')} {source}: not valid JSON ({str(exc).splitlines()[0][:100]})") from None
    return validate_config(raw, source)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _fail(source: str, field: str, why: str):
    raise UserError(f"{label('dgp')} {source}: field {field!r} {why}")


def _number(v: Any, source: str, field: str, lo: float = -1e6, hi: float = 1e6) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        _fail(source, field, f"must be a number from {lo:g} to {hi:g} (got {v!r})")
    return float(v)


def validate_config(raw: Any, source: str = "config") -> dict[str, Any]:
    """Check a DGP config against the schema and return it normalized (features as
    ``{"builtin": name}`` or ``{"regex": ..., "ignore_case": bool}``)."""
    if not isinstance(raw, dict):
        _fail(source, "(top level)", "must be a JSON object")
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        _fail(source, unknown[0], "is not part of the schema")
    for key in ("features", "causal_effect", "spurious_feature", "entangled_feature", "confounder", "scenarios",
                "outcome"):
        if key not in raw:
            _fail(source, key, "is missing")
    cfg = dict(raw)
    feats = raw["features"]
    if not isinstance(feats, dict) or not feats:
        _fail(source, "features", "must be a non-empty object of name -> feature")
    norm: dict[str, dict[str, Any]] = {}
    for name, spec in feats.items():
        field = f"features.{name}"
        if not _NAME.match(str(name)):
            _fail(source, field, "must be named with letters, digits and _")
        if isinstance(spec, str):  # dgp_v1: a built-in feature described in words
            spec = {"builtin": name, "doc": spec}
        if not isinstance(spec, dict) or len({"builtin", "regex"} & set(spec)) != 1:
            _fail(source, field, "must be {\"builtin\": NAME} or {\"regex\": PATTERN}")
        extra = sorted(set(spec) - {"builtin", "regex", "ignore_case", "doc"})
        if extra:
            _fail(source, f"{field}.{extra[0]}", "is not part of the schema")
        if "builtin" in spec:
            if spec["builtin"] not in FEATURES:
                _fail(source, f"{field}.builtin", "must be one of " + ", ".join(FEATURES))
        else:
            pattern = spec["regex"]
            if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_REGEX_CHARS:
                _fail(source, f"{field}.regex", f"must be a regular expression of 1 to {MAX_REGEX_CHARS} characters")
            if not isinstance(spec.get("ignore_case", False), bool):
                _fail(source, f"{field}.ignore_case", "must be true or false")
            try:
                re.compile(pattern)
            except re.error as exc:
                _fail(source, f"{field}.regex", f"is not a valid regular expression ({exc})")
            if _NESTED_QUANTIFIER.search(pattern) or re.search(r"\\\d|\(\?P=", pattern):
                _fail(source, f"{field}.regex", "repeats a group that itself repeats, or uses a back-reference: "
                      "such patterns can take exponential time on a text; write it without them")
        norm[name] = dict(spec)
    cfg["features"] = norm
    effects = raw["causal_effect"]
    if not isinstance(effects, dict) or not effects:
        _fail(source, "causal_effect", "must be a non-empty object of feature -> effect")
    for name, w in effects.items():
        if name not in norm:
            _fail(source, f"causal_effect.{name}", "names no feature")
        _number(w, source, f"causal_effect.{name}", -10, 10)
    conf = raw["confounder"]
    if not isinstance(conf, dict) or "effect" not in conf:
        _fail(source, "confounder.effect", "is missing")
    _number(conf["effect"], source, "confounder.effect", -10, 10)
    for key in ("spurious_feature", "entangled_feature"):
        _binary_feature(raw[key], norm, source, key)
    scenarios = raw["scenarios"]
    if not isinstance(scenarios, dict) or not scenarios:
        _fail(source, "scenarios", "must be a non-empty object of name -> scenario")
    for name, sc in scenarios.items():
        field = f"scenarios.{name}"
        if not _NAME.match(str(name)) or name == "all":
            _fail(source, field, "must be named with letters, digits and _ (not 'all')")
        if not isinstance(sc, dict):
            _fail(source, field, "must be an object")
        extra = sorted(set(sc) - _SCENARIO)
        if extra:
            _fail(source, f"{field}.{extra[0]}", "is not part of the schema")
        for key in ("a_s", "a_e"):
            if key not in sc:
                _fail(source, f"{field}.{key}", "is missing")
            _number(sc[key], source, f"{field}.{key}", -10, 10)
        for key in ("spurious_feature", "entangled_feature"):
            if key in sc:
                _binary_feature(sc[key], norm, source, f"{field}.{key}")
        if "confounder_effect" in sc:
            _number(sc["confounder_effect"], source, f"{field}.confounder_effect", -10, 10)
    pools = raw.get("pools", {"logging": 0.6, "evaluation": 0.2, "candidate": 0.2})
    if not isinstance(pools, dict) or set(pools) != {"logging", "evaluation", "candidate"}:
        _fail(source, "pools", "must give logging, evaluation and candidate shares")
    for key, v in pools.items():
        _number(v, source, f"pools.{key}", 0.05, 0.9)
    if sum(pools.values()) > 1.0 + 1e-9:
        _fail(source, "pools", "shares must add up to at most 1")
    cfg["pools"] = pools
    out = raw["outcome"]
    if not isinstance(out, dict) or not isinstance(out.get("gaussian"), dict) or not isinstance(out.get("binomial"), dict):
        _fail(source, "outcome", "must hold gaussian {noise_sd} and binomial {intercept, impressions, row_effect_sd}")
    _number(out["gaussian"].get("noise_sd"), source, "outcome.gaussian.noise_sd", 0, 100)
    b = out["binomial"]
    _number(b.get("intercept"), source, "outcome.binomial.intercept", -20, 20)
    _number(b.get("row_effect_sd"), source, "outcome.binomial.row_effect_sd", 0, 10)
    imp = b.get("impressions")
    if isinstance(imp, bool) or not isinstance(imp, int) or not 1 <= imp <= 1_000_000:
        _fail(source, "outcome.binomial.impressions", f"must be an integer from 1 to 1,000,000 (got {imp!r})")
    if "family" in raw and raw["family"] not in FAMILIES:
        _fail(source, "family", "must be " + " or ".join(FAMILIES))
    cfg.setdefault("version", Path(source).stem)
    return cfg


_BINARY = ("has_number", "second_person", "question", "this_word")


def _binary_feature(name: Any, feats: dict[str, dict[str, Any]], source: str, field: str) -> None:
    if name not in feats:
        _fail(source, field, f"names no feature ({name!r})")
    spec = feats[name]
    if "builtin" in spec and spec["builtin"] not in _BINARY:
        _fail(source, field, f"must be a 0/1 feature ({name!r} is not)")


def scenario_config(config: dict[str, Any], scenario: str) -> dict[str, Any]:
    """The config of one scenario: its own entangled / spurious feature and confounder effect
    where it names them."""
    if scenario not in config["scenarios"]:
        raise UserError(f"{label('scenario')} {scenario!r}: the DGP has " + ", ".join(config["scenarios"]))
    sc = config["scenarios"][scenario]
    out = dict(config)
    for key in ("spurious_feature", "entangled_feature"):
        out[key] = sc.get(key, config[key])
    out["confounder"] = {**config["confounder"], "effect": sc.get("confounder_effect", config["confounder"]["effect"])}
    return out


def _feature_fn(spec: dict[str, Any]):
    if "builtin" in spec:
        return FEATURES[spec["builtin"]]
    pattern = re.compile(spec["regex"], re.IGNORECASE if spec.get("ignore_case") else 0)
    return lambda t: float(bool(pattern.search(t)))


def text_features(texts: list[str], config: dict[str, Any] | None = None) -> pd.DataFrame:
    """The DGP's features of each text (pure functions of the string; the built-in ones without
    a config)."""
    specs = (config or {}).get("features") or {name: {"builtin": name} for name in FEATURES}
    fns = {name: _feature_fn(spec) for name, spec in specs.items()}
    return pd.DataFrame({name: [fn(t) for t in texts] for name, fn in fns.items()})


def true_effect(texts: list[str] | pd.DataFrame, config: dict[str, Any] | None = None) -> np.ndarray:
    """f*(x): the known causal effect on the link scale."""
    config = config or load_config()
    feats = texts if isinstance(texts, pd.DataFrame) else text_features(texts, config)
    return sum(w * feats[name].to_numpy() for name, w in config["causal_effect"].items())


def spurious(texts: list[str] | pd.DataFrame, config: dict[str, Any] | None = None) -> np.ndarray:
    """The spurious feature of each text (0/1)."""
    config = config or load_config()
    feats = texts if isinstance(texts, pd.DataFrame) else text_features(texts, config)
    return feats[config["spurious_feature"]].to_numpy()


@dataclass
class SimulatedLog:
    text_index: np.ndarray  # rows of the logging pool that were published
    confounder: np.ndarray
    outcome: np.ndarray
    trials: np.ndarray | None


def simulate_log(feats: pd.DataFrame, scenario: str, n: int, family: str, rng: np.random.Generator,
                 config: dict[str, Any], randomized: bool = False) -> SimulatedLog:
    """Draw a log of ``n`` rows from the logging pool whose features are ``feats``.

    ``randomized=True`` is the oracle's log: texts uniform, independent of c.
    """
    sc = config["scenarios"][scenario]
    config = scenario_config(config, scenario)
    c = rng.standard_normal(n)
    if randomized or (sc["a_s"] == 0 and sc["a_e"] == 0):
        idx = rng.integers(0, len(feats), size=n)
    else:
        # P(x | c) depends on x only through (spurious, entangled): sample a cell, then a text.
        s = feats[config["spurious_feature"]].to_numpy()
        e = feats[config["entangled_feature"]].to_numpy()
        cells = [np.flatnonzero((s == a) & (e == b)) for a in (0.0, 1.0) for b in (0.0, 1.0)]
        sizes = np.array([len(x) for x in cells], float)
        scores = np.array([sc["a_s"] * a + sc["a_e"] * b for a in (0.0, 1.0) for b in (0.0, 1.0)])
        logits = c[:, None] * scores[None, :] + np.log(np.maximum(sizes, 1e-300))[None, :]
        logits[:, sizes == 0] = -np.inf
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        cell = (rng.random(n)[:, None] > np.cumsum(p, 1)).sum(1)
        idx = np.array([cells[k][rng.integers(len(cells[k]))] for k in cell])
    eta = true_effect(feats.iloc[idx].reset_index(drop=True), config) + config["confounder"]["effect"] * c
    if family == "gaussian":
        y = eta + config["outcome"]["gaussian"]["noise_sd"] * rng.standard_normal(n)
        return SimulatedLog(idx, c, y, None)
    b = config["outcome"]["binomial"]
    eta = b["intercept"] + eta + b["row_effect_sd"] * rng.standard_normal(n)
    trials = np.full(n, float(b["impressions"]))
    y = rng.binomial(trials.astype(int), 1 / (1 + np.exp(-eta))).astype(float)
    return SimulatedLog(idx, c, y, trials)
