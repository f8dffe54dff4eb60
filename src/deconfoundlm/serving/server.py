"""``deconfoundlm serve``: a reward model as an HTTP service for RL trainers (FastAPI + uvicorn).

Endpoints (OpenAPI page at ``/docs``):

``POST /score``       ``{"texts": [...], "se": false}`` -> ``{"rewards": [...]}`` (+ ``"reward_se"``)
``POST /get_reward``  OpenRLHF's remote reward protocol: ``{"query": [...], "prompts": [...]}`` ->
                      ``{"rewards": [...], "scores": [...]}``. The scored text is the response: each
                      query with its prompt removed when ``prompts`` is given and the query starts with
                      it (else the whole query), stripped of surrounding whitespace.
``GET /health``       ``{"status": "ok"}``
``GET /info``         method, family, encoder identity, data fingerprint, version, limits.

Safe by default: it listens on the loopback interface unless ``--host`` says otherwise, and any other
host needs ``--token-file`` (requests then need ``Authorization: Bearer <token>``; 401 otherwise).
Bad requests (not JSON, wrong types, missing fields, over the body or batch limit) get a 4xx JSON
``{"error": ...}`` naming the problem, and the server keeps serving. Requests that arrive together
are scored together (dynamic batching: one scoring thread, batches of up to ``max_batch`` texts
gathered for at most ``max_wait_ms``), with the same numbers as ``deconfoundlm score``. SIGTERM
stops accepting, finishes the requests in flight and exits 0.
"""


import asyncio
import hmac
import ipaddress
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deconfoundlm.checks import require_regular_file
from deconfoundlm.errors import UserError
from deconfoundlm.pipeline import Reward, load_reward

LOOPBACK_NAMES = ("localhost", "ip6-localhost")
MAX_TEXT_CHARS = 100_000  # one text; headlines and replies are far shorter


@dataclass
class ServeConfig:
    """Settings of ``deconfoundlm serve`` (see the module)."""

    host: str = "127.0.0.1"
    port: int = 8000
    token_file: str | None = None
    max_batch: int = 256  # texts per request, and per scoring batch
    max_body_mb: float = 1.0
    max_wait_ms: float = 5.0  # how long a batch waits for more requests
    log_level: str = "warning"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: str | Path) -> str:
    """The bearer token: the first line of a regular file, at least 16 characters."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"--token-file {path}: no such file")
    require_regular_file(p, "--token-file ")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--token-file {path}: cannot be read ({exc})") from None
    token = lines[0].strip() if lines else ""
    if len(token) < 16 or any(ch.isspace() for ch in token):
        raise UserError(f"--token-file {path}: the first line must be a token of at least 16 characters without "
                        "spaces (e.g. python -c \"import secrets; print(secrets.token_urlsafe(32))\" > FILE)")
    return token


def check_serve_config(cfg: ServeConfig) -> str | None:
    """Every option checked before the reward is loaded; returns the token (or None)."""
    if not 0 < cfg.port < 65536:
        raise UserError(f"--port {cfg.port}: must be from 1 to 65535")
    if not 1 <= cfg.max_batch <= 100_000:
        raise UserError(f"--max-batch {cfg.max_batch}: must be from 1 to 100,000")
    if not (math.isfinite(cfg.max_body_mb) and 0 < cfg.max_body_mb <= 1024):
        raise UserError(f"--max-body-mb {cfg.max_body_mb}: must be above 0 and at most 1024")
    token = read_token(cfg.token_file) if cfg.token_file else None
    if not is_loopback(cfg.host) and token is None:
        raise UserError(f"--host {cfg.host}: serving beyond this machine needs --token-file (requests must then "
                        "carry Authorization: Bearer <token>); without one, use --host 127.0.0.1")
    return token


class BadRequest(Exception):
    """A request the server refuses with a 4xx status and a JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _texts(body: Any, key: str, limit: int) -> list[str]:
    if not isinstance(body, dict):
        raise BadRequest(400, "the body must be a JSON object")
    if key not in body:
        raise BadRequest(400, f"missing field {key!r} (a list of strings)")
    texts = body[key]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest(400, f"field {key!r} must be a list of strings")
    if len(texts) > limit:
        raise BadRequest(413, f"field {key!r} has {len(texts)} texts; at most {limit} per request (--max-batch)")
    long = next((i for i, t in enumerate(texts) if len(t) > MAX_TEXT_CHARS), None)
    if long is not None:
        raise BadRequest(413, f"{key}[{long}] has {len(texts[long]):,} characters; at most {MAX_TEXT_CHARS:,}")
    return texts


def responses(body: Any, limit: int) -> list[str]:
    """The texts /get_reward scores: each query's response (the query without its prompt when
    ``prompts`` is given and the query starts with it), stripped of surrounding whitespace."""
    queries = _texts(body, "query", limit)
    prompts = body.get("prompts")
    if prompts is None:
        return [q.strip() for q in queries]
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts) or len(prompts) != len(queries):
        raise BadRequest(400, "field 'prompts' must be a list of strings, one per query")
    return [(q[len(p):] if p and q.startswith(p) else q).strip() for q, p in zip(queries, prompts, strict=True)]


class Batcher:
    """Dynamic batching: requests queue up; one task takes what arrived within ``max_wait_ms``
    (up to ``max_batch`` texts) and scores it in one call on a single scoring thread."""

    def __init__(self, reward: Reward, max_batch: int, max_wait_ms: float) -> None:
        self.reward = reward
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deconfoundlm-score")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            while not self.queue.empty():  # drain: everything accepted is answered
                await asyncio.sleep(0.01)
            self.task.cancel()
        self.pool.shutdown(wait=True)

    async def score(self, texts: list[str], se: bool) -> tuple[list[float], list[float] | None]:
        if not texts:
            return [], ([] if se else None)
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, se, fut))
        return await fut

    def _score(self, texts: list[str], se: bool):
        if se:
            r, s = self.reward.score(texts, return_se=True)
            return r.tolist(), s.tolist()
        return self.reward.score(texts).tolist(), None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            n = len(items[0][0])
            deadline = loop.time() + self.max_wait
            while n < self.max_batch:
                try:
                    item = await asyncio.wait_for(self.queue.get(), max(deadline - loop.time(), 0))
                except asyncio.TimeoutError:
                    break
                items.append(item)
                n += len(item[0])
            se = any(i[1] for i in items)
            texts = [t for i in items for t in i[0]]
            try:
                rewards, ses = await loop.run_in_executor(self.pool, self._score, texts, se)
            except Exception as exc:  # noqa: BLE001 - answered as a 500, the server keeps serving
                for *_, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            start = 0
            for texts_i, se_i, fut in items:
                end = start + len(texts_i)
                if not fut.done():
                    fut.set_result((rewards[start:end], ses[start:end] if se_i and ses is not None else None))
                start = end


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def build_app(reward: Reward, cfg: ServeConfig, token: str | None, model_dir: str):
    """The FastAPI application serving ``reward``."""
    from contextlib import asynccontextmanager
    from importlib.metadata import version

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    __version__ = version("deconfoundlm")
    batcher = Batcher(reward, cfg.max_batch, cfg.max_wait_ms)
    max_body = int(cfg.max_body_mb * 2**20)
    identity = reward.expected_identity or {"name": reward.encoder_name, "fine_tuned": reward.finetuned}
    info = {"model_dir": str(model_dir), "method": reward.method, "family": reward.estimator.family_,
            "text": reward.roles.text, "outcome": reward.roles.outcome,
            "confounders": [f"{c.column}:{c.type}" for c in reward.roles.confounders],
            "encoder": reward.encoder_name, "encoder_identity": identity,
            "data_fingerprint": reward.info.get("data_fingerprint"), "has_se": reward.has_se,
            "version": __version__, "max_batch": cfg.max_batch, "max_body_mb": cfg.max_body_mb,
            "scale": "link scale (log-odds for binomial/bernoulli), mean 0 over the training texts"}

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="deconfoundlm reward", version=__version__, lifespan=lifespan,
                  description="A deconfounded reward model served for RL trainers (see `deconfoundlm serve --help`).")

    def error(status: int, message: str) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token is not None and request.url.path not in ("/health",):
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                return error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
        if request.method == "POST":
            declared = request.headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > max_body):
                return error(413, f"the body is over {cfg.max_body_mb:g} MB (--max-body-mb)")
        return await call_next(request)

    async def read_body(request: Request) -> Any:
        chunks, size = [], 0
        async for chunk in request.stream():  # also bounds a body sent without Content-Length
            size += len(chunk)
            if size > max_body:
                raise BadRequest(413, f"the body is over {cfg.max_body_mb:g} MB (--max-body-mb)")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks), parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadRequest(400, "the body is not valid JSON") from None

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return error(exc.status, str(exc))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    async def get_info() -> dict:
        return info

    @app.post("/score")
    async def score(request: Request):
        body = await read_body(request)
        texts = _texts(body, "texts", cfg.max_batch)
        se = body.get("se", False)
        if not isinstance(se, bool):
            raise BadRequest(400, "field 'se' must be true or false")
        if se and not reward.has_se:
            raise BadRequest(400, f"this {reward.method} reward has no standard errors")
        t0 = time.perf_counter()
        rewards, ses = await batcher.score(texts, se)
        out: dict[str, Any] = {"rewards": rewards}
        if se:
            out["reward_se"] = ses
        return JSONResponse(out, headers={"X-Score-Seconds": f"{time.perf_counter() - t0:.6f}"})

    @app.post("/get_reward")
    async def get_reward(request: Request):
        body = await read_body(request)
        rewards, _ = await batcher.score(responses(body, cfg.max_batch), False)
        return JSONResponse({"rewards": rewards, "scores": rewards})

    return app


def serve(model_dir: str | Path, cfg: ServeConfig | None = None) -> int:
    """Validate the options and the reward folder, then serve until SIGTERM / Ctrl-C."""
    import signal
    import threading

    import uvicorn

    cfg = cfg or ServeConfig()
    token = check_serve_config(cfg)
    reward = load_reward(model_dir)  # untrusted input, validated like every load
    reward.score(["warm-up"])  # load the encoder now, not on the first request
    app = build_app(reward, cfg, token, str(model_dir))
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                                           access_log=False, timeout_graceful_shutdown=30))
    if threading.current_thread() is threading.main_thread():
        # uvicorn drains on SIGTERM, then re-raises it for the previous handler: that one now
        # does nothing, so a drained server exits 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when the port cannot be bound
        raise UserError(f"--port {cfg.port}: could not listen on {cfg.host}:{cfg.port} (in use, or not "
                        "allowed)") from exc
    if not server.started:
        raise UserError(f"--port {cfg.port}: could not listen on {cfg.host}:{cfg.port} (in use, or not allowed)")
    return 0
