"""deconfoundlm: deconfounded reward models and generator alignment from observational logs.

Implements DeconfoundLM (Loghmani 2025, arXiv 2506.00152); see docs/method.md.

The Python API mirrors the commands: :func:`fit_reward` and :func:`load_reward` give a
:class:`Reward` (``score``, ``predict``); :func:`diagnose`, :func:`sensitivity`, :func:`evaluate`
and :func:`report` are the commands of the same names, each taking its typed config
(:class:`FitConfig`, ...) or the same options as keywords; :func:`remote_reward` a TRL reward function
calling ``deconfoundlm serve`` (imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deconfoundlm.errors import UserError

if TYPE_CHECKING:
    from deconfoundlm.pipeline import Reward, fit_reward, load_reward

__version__ = "0.1.0"
from deconfoundlm.configs import (  # noqa: E402 - light: dataclasses only
    AlignConfig,
    CurveConfig,
    DiagnoseConfig,
    EvaluateConfig,
    FitConfig,
    GenerateConfig,
    ScoreConfig,
    SensitivityConfig,
    ServeConfig,
)

__all__ = ["AlignConfig", "CurveConfig", "DiagnoseConfig", "EvaluateConfig", "FitConfig", "GenerateConfig", "Reward",
           "ScoreConfig", "SensitivityConfig", "ServeConfig", "UserError", "__version__", "diagnose", "evaluate",
           "fit_reward", "load_reward", "remote_reward", "report", "sensitivity"]


def __getattr__(name: str) -> Any:
    """The API, imported when first used: ``import deconfoundlm`` (and the command line's start)
    costs nothing until a function is called."""
    if name in ("Reward", "fit_reward", "load_reward"):
        from deconfoundlm import pipeline

        return getattr(pipeline, name)
    if name == "diagnose":
        from deconfoundlm.evaluation.diagnose import diagnose

        return diagnose
    if name == "sensitivity":
        from deconfoundlm.evaluation.sensitivity import sensitivity

        return sensitivity
    if name == "evaluate":
        from deconfoundlm.evaluation.evaluate import evaluate

        return evaluate
    if name == "remote_reward":
        from deconfoundlm.serving.client import remote_reward

        return remote_reward
    if name == "report":
        from deconfoundlm.evaluation.report import write_report

        return write_report
    raise AttributeError(f"module 'deconfoundlm' has no attribute {name!r}")
