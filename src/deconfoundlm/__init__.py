"""deconfoundlm: deconfounded reward models and generator alignment from observational logs.

Implements DeconfoundLM (Loghmani 2025, arXiv 2506.00152); see docs/method.md.
"""

from deconfoundlm.errors import UserError
from deconfoundlm.pipeline import Reward, fit_reward, load_reward

__version__ = "0.1.0"
__all__ = ["Reward", "UserError", "fit_reward", "load_reward", "__version__"]
