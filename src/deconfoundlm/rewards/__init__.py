"""Reward estimators, one per method, all with the same surface (fit / score / save / load)."""

from __future__ import annotations

from deconfoundlm.rewards.artifact import load_estimator
from deconfoundlm.rewards.base import RewardEstimator
from deconfoundlm.rewards.confounder_input import ConfounderInputReward
from deconfoundlm.rewards.crm import CrmReward
from deconfoundlm.rewards.deconfound import DeconfoundReward
from deconfoundlm.rewards.naive import NaiveReward
from deconfoundlm.rewards.odin import OdinReward
from deconfoundlm.rewards.registry import METHODS, make_estimator

__all__ = ["METHODS", "RewardEstimator", "make_estimator", "load_estimator",
           "NaiveReward", "ConfounderInputReward", "DeconfoundReward", "OdinReward", "CrmReward"]
