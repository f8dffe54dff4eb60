"""Reward estimators, one per method, all with the same surface (fit / score / save / load).

The names below are imported when first used, so that the method names (:data:`METHOD_NAMES`)
cost nothing to read (the command line lists them in its help)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from deconfoundlm.configs import METHOD_NAMES

if TYPE_CHECKING:
    from deconfoundlm.rewards.artifact import load_estimator
    from deconfoundlm.rewards.base import RewardEstimator
    from deconfoundlm.rewards.confounder_input import ConfounderInputReward
    from deconfoundlm.rewards.crm import CrmReward
    from deconfoundlm.rewards.deconfound import DeconfoundReward
    from deconfoundlm.rewards.naive import NaiveReward
    from deconfoundlm.rewards.odin import OdinReward
    from deconfoundlm.rewards.registry import METHODS, make_estimator

_WHERE = {
    "load_estimator": "artifact", "RewardEstimator": "base", "ConfounderInputReward": "confounder_input",
    "CrmReward": "crm", "DeconfoundReward": "deconfound", "NaiveReward": "naive", "OdinReward": "odin",
    "METHODS": "registry", "make_estimator": "registry",
}

__all__ = ["METHODS", "METHOD_NAMES", "RewardEstimator", "make_estimator", "load_estimator",
           "NaiveReward", "ConfounderInputReward", "DeconfoundReward", "OdinReward", "CrmReward"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"deconfoundlm.rewards.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'deconfoundlm.rewards' has no attribute {name!r}")
