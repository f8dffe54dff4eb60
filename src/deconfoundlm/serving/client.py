"""A client of ``deconfoundlm serve`` for RL trainers: :func:`remote_reward` returns a reward
function in TRL's form, ``f(prompts, completions, **kwargs) -> list[float]``, usable in
``GRPOTrainer(reward_funcs=[...])``. Standard library only (urllib), so it runs wherever the
trainer runs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deconfoundlm.serving.server import read_token


def _text(completion: Any) -> str:
    """A completion as text: a string, or a conversational completion (a list of messages) whose
    last message's content is the reply."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    raise TypeError(f"a completion must be a string or a list of messages, not {type(completion).__name__}")


def remote_reward(url: str, token_file: str | Path | None = None, timeout: float = 60.0,
                  batch_size: int = 256) -> Callable[..., list[float]]:
    """A TRL reward function that scores each completion with the reward served at ``url``
    (e.g. ``http://127.0.0.1:8000``), ``batch_size`` texts per request. ``token_file``: the file
    holding the server's bearer token. A server error raises ``RuntimeError`` with its message."""
    base = url.rstrip("/")
    token = read_token(token_file) if token_file is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}

    def post(texts: list[str]) -> list[float]:
        req = urllib.request.Request(f"{base}/score", data=json.dumps({"texts": texts}).encode(), headers=headers,
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return [float(r) for r in json.loads(resp.read())["rewards"]]
        except urllib.error.HTTPError as exc:
            try:
                why = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                why = exc.reason
            raise RuntimeError(f"deconfoundlm serve at {base}: HTTP {exc.code}: {why}") from None
        except urllib.error.URLError as exc:
            raise RuntimeError(f"deconfoundlm serve at {base}: not reachable ({exc.reason})") from None

    def deconfoundlm_reward(prompts: list[Any] | None = None, completions: list[Any] | None = None,
                            **kwargs: Any) -> list[float]:
        texts = [_text(c) for c in (completions or [])]
        out: list[float] = []
        for i in range(0, len(texts), batch_size):
            out += post(texts[i : i + batch_size])
        return out

    return deconfoundlm_reward
