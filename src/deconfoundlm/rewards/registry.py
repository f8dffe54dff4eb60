"""The method registry: the only way a method name becomes a class (artifacts included)."""

from __future__ import annotations

from deconfoundlm.configs import METHOD_NAMES
from deconfoundlm.errors import UserError
from deconfoundlm.options import label
from deconfoundlm.rewards.base import RewardEstimator
from deconfoundlm.rewards.confounder_input import ConfounderInputReward
from deconfoundlm.rewards.crm import CrmReward
from deconfoundlm.rewards.deconfound import DeconfoundReward
from deconfoundlm.rewards.naive import NaiveReward
from deconfoundlm.rewards.odin import OdinReward

METHODS: dict[str, type[RewardEstimator]] = dict(zip(
    METHOD_NAMES, (NaiveReward, ConfounderInputReward, DeconfoundReward, OdinReward, CrmReward), strict=True))


def make_estimator(method: str, **params) -> RewardEstimator:
    """An unfitted estimator by method name; unknown params for that method are an error."""
    if method not in METHODS:
        raise UserError(f"{label('method')} {method!r}: use one of " + ", ".join(METHODS))
    klass = METHODS[method]
    valid = klass().get_params()
    unknown = [k for k in params if k not in valid]
    if unknown:
        raise UserError(f"method {method!r} has no option {unknown[0]!r}")
    return klass(**params)
