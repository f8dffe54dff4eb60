"""The data-generating process of the semi-synthetic benchmark, read from a versioned config.

Real texts (distinct Upworthy headlines), a known causal effect f*(x) that is a linear
combination of transparent features computable on any string (generated text included), a
spurious feature with no effect, and a confounder c that moves both the outcome and which
texts get published.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

_YOU = re.compile(r"\byou(?:r|'re|rself|'ll|'ve)?\b", re.IGNORECASE)
_THIS = re.compile(r"\bthis\b", re.IGNORECASE)

FEATURES = {
    "has_number": lambda t: float(bool(re.search(r"\d", t))),
    "second_person": lambda t: float(bool(_YOU.search(t))),
    "question": lambda t: float("?" in t),
    "length": lambda t: float(np.clip((len(t.split()) - 15) / 3, -2.5, 2.5)),
    "this_word": lambda t: float(bool(_THIS.search(t))),
}


def load_config(version: str = "dgp_v1") -> dict[str, Any]:
    path = resources.files("deconfoundlm") / "evaluation" / "benchmark" / f"{version}.json"
    return json.loads(path.read_text())


def text_features(texts: list[str]) -> pd.DataFrame:
    """All benchmark features of each text (pure functions of the string)."""
    return pd.DataFrame({name: [fn(t) for t in texts] for name, fn in FEATURES.items()})


def true_effect(texts: list[str] | pd.DataFrame, config: dict[str, Any] | None = None) -> np.ndarray:
    """f*(x): the known causal effect on the link scale."""
    config = config or load_config()
    feats = texts if isinstance(texts, pd.DataFrame) else text_features(texts)
    return sum(w * feats[name].to_numpy() for name, w in config["causal_effect"].items())


def spurious(texts: list[str] | pd.DataFrame, config: dict[str, Any] | None = None) -> np.ndarray:
    config = config or load_config()
    feats = texts if isinstance(texts, pd.DataFrame) else text_features(texts)
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
