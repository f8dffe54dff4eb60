"""``deconfoundlm serve``: a reward model as an HTTP service for RL trainers (FastAPI + uvicorn).

Endpoints (the OpenAPI schema at ``/openapi.json``; no browser page, which would need a CDN):

``POST /score``       ``{"texts": [...], "se": false}`` -> ``{"rewards": [...]}`` (+ ``"reward_se"``)
``POST /get_reward``  OpenRLHF's remote reward protocol: ``{"query": [...], "prompts": [...]}`` ->
                      ``{"rewards": [...], "scores": [...]}``. The scored text is the response: each
                      query with its prompt removed when ``prompts`` is given and the query starts with
                      it (else the whole query), stripped of surrounding whitespace.
``GET /health``       ``{"status": "ok"}``
``GET /info``         method, family, encoder identity, data fingerprint, version, limits.

Safe by default: it listens on the loopback interface unless ``--host`` says otherwise, and any other
host needs ``--token-file`` (requests then need ``Authorization: Bearer <token>``; 401 otherwise).
Bad requests (not JSON, wrong types, missing fields, over the body or batch limit, a body slower
than ``body_timeout_s``, an unknown path or method) get a 4xx JSON ``{"error": ...}`` naming the
problem, and the server keeps serving. An oversized body is read and discarded (up to
``DRAIN_MB``) before the 413, so that clients which send the whole body before reading the answer
(``requests``, ``urllib``) see the message, not a reset connection.

For long RL runs: the encoder is loaded and warmed before the port is bound (``/health`` answers
only when scoring is ready), "serving" is printed once the port is bound, and the embedding cache
is only read (texts scored by the server are never added to it, so it does not grow). Requests that arrive together
are scored together (dynamic batching: one scoring thread, batches of up to ``max_batch`` texts
gathered for at most ``max_wait_ms``), with the same numbers as ``deconfoundlm score``. SIGTERM
stops accepting, finishes the requests in flight and exits 0.
"""


import asyncio
import errno
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from deconfoundlm.checks import require_regular_file
from deconfoundlm.configs import ServeConfig
from deconfoundlm.errors import UserError
from deconfoundlm.options import label
from deconfoundlm.pipeline import Reward, load_reward

LOOPBACK_NAMES = ("localhost", "ip6-localhost")
MAX_TEXT_CHARS = 100_000  # one text; headlines and replies are far shorter
DRAIN_MB = 64  # an oversized body up to this size is read and discarded before the 413
ENDPOINTS = "POST /score, POST /get_reward, GET /health, GET /info"


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
        raise UserError(f"{label('token_file')} {path}: no such file")
    require_regular_file(p, "--token-file ")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{label('token_file')} {path}: cannot be read ({exc})") from None
    token = lines[0].strip() if lines else ""
    if len(token) < 16 or any(ch.isspace() for ch in token):
        raise UserError(f"{label('token_file')} {path}: the first line must be a token of at least 16 characters without "
                        "spaces (e.g. python -c \"import secrets; print(secrets.token_urlsafe(32))\" > FILE)")
    return token


def check_serve_config(cfg: ServeConfig) -> str | None:
    """The token file read and the host checked before the reward is loaded (the config checked
    its values); returns the token (or None)."""
    token = read_token(cfg.token_file) if cfg.token_file else None
    if not is_loopback(cfg.host) and token is None:
        raise UserError(f"{label('host')} {cfg.host}: serving beyond this machine needs {label('token_file')} (requests must then "
                        f"carry Authorization: Bearer <token>); without one, use {label('host')} 127.0.0.1")
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


def build_app(reward: Reward, cfg: ServeConfig, token: str | None, model_dir: str,
              on_ready: Callable[[], None] | None = None):
    """The FastAPI application serving ``reward``; ``on_ready`` runs once the app has started."""
    from contextlib import asynccontextmanager
    from importlib.metadata import version

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    __version__ = version("deconfoundlm")
    batcher = Batcher(reward, cfg.max_batch, cfg.max_wait_ms)
    max_body = int(cfg.max_body_mb * 2**20)
    drain = max(max_body, DRAIN_MB * 2**20)
    too_big = f"the body is over {cfg.max_body_mb:g} MB (--max-body-mb)"
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
        if on_ready is not None:
            on_ready()
        yield
        await batcher.stop()

    app = FastAPI(title="deconfoundlm reward", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="A deconfounded reward model served for RL trainers (see `deconfoundlm serve --help`).")

    def error(status: int, message: str, close: bool = False) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        if close:
            headers["Connection"] = "close"
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def collect(request: Request, keep: int, limit: int) -> tuple[bytes | None, bool]:
        """The body if it is at most ``keep`` bytes (else None; what is over is read and dropped, up
        to ``limit`` bytes) and whether the whole body was read."""
        chunks, size = [], 0
        async for chunk in request.stream():  # also bounds a body sent without Content-Length
            size += len(chunk)
            if size > limit:
                return None, False
            if size <= keep:
                chunks.append(chunk)
        return (b"".join(chunks) if size <= keep else None), True

    async def discard(request: Request, limit: int) -> bool:
        """Read and drop the body (up to ``limit`` bytes, within the body timeout); True if all of it was read."""
        try:
            return (await asyncio.wait_for(collect(request, 0, limit), cfg.body_timeout_s))[1]
        except Exception:  # noqa: BLE001 - the client went away or is too slow
            return False

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
                # read what the client sends first, so that it sees the answer, not a reset connection
                drained = declared.isdigit() and int(declared) <= drain and await discard(request, drain)
                return error(413, too_big, close=not drained)
        return await call_next(request)

    async def read_body(request: Request) -> Any:
        try:
            body, _ = await asyncio.wait_for(collect(request, max_body, drain), cfg.body_timeout_s)
        except asyncio.TimeoutError:
            raise BadRequest(408, f"the body did not arrive within {cfg.body_timeout_s:g} s") from None
        if body is None:
            raise BadRequest(413, too_big)
        try:
            return json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadRequest(400, "the body is not valid JSON") from None

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return error(exc.status, str(exc), close=exc.status in (408, 413))

    @app.exception_handler(HTTPException)
    async def not_found(request: Request, exc: HTTPException):  # routing: 404, 405
        if exc.status_code == 404:
            return error(404, f"no endpoint {request.url.path}; the endpoints are {ENDPOINTS}")
        if exc.status_code == 405:
            return error(405, f"{request.method} is not allowed on {request.url.path}; the endpoints are {ENDPOINTS}")
        return error(exc.status_code, str(exc.detail))

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


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a port in use (or not allowed) is one UserError."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise UserError(f"{label('host')} {host}: not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise UserError(f"{label('port')} {port}: could not listen on {host}:{port} ({why})") from None
    sock.set_inheritable(True)
    return sock


def serve(model_dir: str | Path, cfg: ServeConfig | None = None,
          announce: Callable[[str], None] | None = print) -> int:
    """Validate the options and the reward folder, load and warm the encoder, bind the port, say
    "serving ..." (through ``announce``), then serve until SIGTERM / Ctrl-C."""
    import signal
    import threading

    import uvicorn

    cfg = cfg or ServeConfig()
    token = check_serve_config(cfg)
    reward = load_reward(model_dir)  # untrusted input, validated like every load
    reward.cache = "read"  # served texts never grow the embedding cache
    reward.score(["warm-up"])  # load and warm the encoder now, not on the first request
    sock = bind(cfg.host, cfg.port)
    line = (f"serving {model_dir} on http://{cfg.host}:{cfg.port} ({ENDPOINTS})"
            f"{'; bearer token required' if token else ''}; SIGTERM or Ctrl-C stops it")
    app = build_app(reward, cfg, token, str(model_dir),
                    on_ready=None if announce is None else lambda: announce(line))
    server = uvicorn.Server(uvicorn.Config(app, log_level=cfg.log_level, access_log=False,
                                           timeout_graceful_shutdown=30))
    if threading.current_thread() is threading.main_thread():
        # uvicorn drains on SIGTERM, then re-raises it for the previous handler: that one now
        # does nothing, so a drained server exits 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
