"""Connecting to a Dask cluster: ``--dask ADDRESS`` (an existing scheduler) or ``--dask
local[:N[:MEMORY]]`` (a LocalCluster of N single-threaded worker processes started for the command
and closed after it; MEMORY, e.g. 3.5GB, is each worker's limit, beyond which Dask spills to disk)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from deconfoundlm.errors import UserError

CONNECT_TIMEOUT_S = 10
MAX_LOCAL_WORKERS = 256
MIN_WORKER_BYTES = 512 * 2**20  # a worker process with an encoder loaded and one block of rows
_LOCAL = re.compile(r"^local(?::(\d+)(?::(\d+(?:\.\d+)?\s*(?:[kKmMgGtT]i?B)))?)?$")
_ADDRESS = re.compile(r"^(?:(tcp|tls|inproc|ucx|ws|wss)://)?[\w.\-\[\]:]+:\d{1,5}$")


def check_dask(value: str, flag: str = "--dask") -> str:
    """The syntax of a --dask value (nothing is contacted): ``local``, ``local:N`` or a
    scheduler address ``[tcp://]HOST:PORT``."""
    value = value.strip()
    m = _LOCAL.match(value)
    if m:
        n = int(m.group(1)) if m.group(1) else _default_workers()
        if not 1 <= n <= MAX_LOCAL_WORKERS:
            raise UserError(f"{flag} {value}: the number of local workers must be 1 to {MAX_LOCAL_WORKERS}")
        if m.group(2):
            from dask.utils import parse_bytes

            limit = parse_bytes(m.group(2).replace(" ", ""))
            if limit < MIN_WORKER_BYTES:
                raise UserError(f"{flag} {value}: each worker needs at least {MIN_WORKER_BYTES // 2**20} MiB (its "
                                "encoder and a block of rows); give e.g. local:2:3.5GB, or leave MEMORY out to split "
                                "the machine's memory among the workers")
        return value
    if not _ADDRESS.match(value):
        raise UserError(f"{flag} {value!r}: expected a scheduler address such as tcp://HOST:8786, or "
                        "local[:N[:MEMORY]] (e.g. local:2:3.5GB)")
    return value


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _connect(client_class: Any, address: str, value: str, flag: str) -> Any:
    """A Client connected to ``address`` within CONNECT_TIMEOUT_S seconds, whatever the peer
    does: distributed's own timeout covers the TCP connect but not the handshake, so a port that
    accepts and never speaks would hang forever. The attempt runs in a daemon thread under a
    hard deadline; a late or failed attempt is a UserError naming the address."""
    import threading

    got: dict[str, Any] = {}

    def attempt() -> None:
        try:
            got["client"] = client_class(address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except Exception as exc:  # noqa: BLE001 - refused, timed out, or something else answered
            got["error"] = exc

    thread = threading.Thread(target=attempt, name="deconfoundlm-dask-connect", daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S)
    if "client" in got:
        return got["client"]
    exc = got.get("error")
    if exc is None:
        why = "the port accepted the connection but nothing answered like a Dask scheduler"
    elif isinstance(exc, OSError):
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
    else:
        why = "something answered that is not a Dask scheduler"
    raise UserError(f"{flag} {value}: no Dask scheduler answered at {address} within {CONNECT_TIMEOUT_S} s "
                    f"({why})")


@contextmanager
def dask_client(value: str, flag: str = "--dask") -> Iterator[Any]:
    """A ``distributed.Client`` for a --dask value; a scheduler that does not answer within
    ``CONNECT_TIMEOUT_S`` seconds is a UserError naming it."""
    from distributed import Client, LocalCluster

    value = check_dask(value, flag)
    m = _LOCAL.match(value)
    cluster = None
    if m:
        n = int(m.group(1)) if m.group(1) else _default_workers()
        import dask

        # glibc's per-thread malloc arenas keep freed memory as unmanaged RSS; two per worker suffice.
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_ARENA_MAX": 2})
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.CRITICAL, memory_limit=m.group(2) or "auto")
        client = Client(cluster)
    else:
        address = value if "://" in value else f"tcp://{value}"
        client = _connect(Client, address, value, flag)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
