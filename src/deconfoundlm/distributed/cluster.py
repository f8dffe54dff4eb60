"""Connecting to a Dask cluster: ``--dask ADDRESS`` (an existing scheduler) or ``--dask
local[:N[:MEMORY]]`` (a LocalCluster of N single-threaded worker processes started for the command
and closed after it; MEMORY, e.g. 3.5GB, is each worker's limit, beyond which Dask spills to disk)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from deconfoundlm.configs import LOCAL_DASK, dask_address, default_workers
from deconfoundlm.errors import UserError
from deconfoundlm.options import BadValue

CONNECT_TIMEOUT_S = 10


def check_dask(value: str, flag: str = "--dask") -> str:
    """The syntax of a --dask value (nothing is contacted; see :func:`deconfoundlm.configs.dask_address`)."""
    try:
        return dask_address(value)
    except BadValue as exc:
        raise UserError(f"{flag} {str(value).strip()!r}: {exc}") from None


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
    m = LOCAL_DASK.match(value)
    cluster = None
    if m:
        n = int(m.group(1)) if m.group(1) else default_workers()
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
