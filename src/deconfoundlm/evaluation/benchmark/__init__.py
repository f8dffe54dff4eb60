"""Semi-synthetic benchmark with ground truth (``deconfoundlm benchmark simulate``)."""
