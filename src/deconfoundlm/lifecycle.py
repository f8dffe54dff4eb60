"""The command's process: SIGTERM stops a command at once and removes its partial outputs.

A Python signal handler would only run between Python instructions, and a wait inside a library
(a Dask future) may never return; so a watchdog thread, woken through the signal's wakeup fd,
stops the processes the command started, removes the partial outputs, prints one line and exits
143. ``serve`` disarms it (uvicorn drains the requests in flight)."""

from __future__ import annotations

import os
import sys

PROG = "deconfoundlm"
# Set by `accelerate launch`, torchrun and MPI launchers in each process they start.
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def is_main_process() -> bool:
    """False on the non-main processes of an ``accelerate launch`` run (they never write). A
    process that no launcher started is the main one (accelerate, and torch with it, is then not
    imported)."""
    if not any(os.environ.get(v) for v in LAUNCHER_VARIABLES):
        return True
    from accelerate import PartialState

    return PartialState().is_main_process


def _on_sigterm(signum, frame) -> None:
    """A Python-level handler must exist for the wakeup fd to see the signal; the work is done
    by the watchdog thread (see :func:`install_sigterm`)."""


SIGTERM = {"installed": False, "armed": True}


def stop_descendants(timeout: float = 10) -> None:
    """Terminate every process this one started (Dask nannies and workers, data loaders)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with dask.distributed
        return
    kids = psutil.Process().children(recursive=True)
    for k in kids:
        try:
            k.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(kids, timeout=timeout)
    for k in alive:
        try:
            k.kill()
        except psutil.Error:
            pass


def install_sigterm() -> None:
    """SIGTERM stops the command at once, wherever its main thread is (a Python signal handler
    would only run between Python instructions, and a wait inside a library, such as a Dask
    future, may never return): a watchdog thread, woken through the signal's wakeup fd, stops the
    processes the command started (Dask nannies and workers), removes the partial outputs,
    prints one line and exits 143. ``serve`` disarms it: uvicorn drains the requests in flight."""
    import signal
    import threading

    SIGTERM["armed"] = True
    if SIGTERM["installed"] or threading.current_thread() is not threading.main_thread():
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not the main thread of the main interpreter
        return
    SIGTERM["installed"] = True

    def watch() -> None:
        while True:
            got = os.read(read_fd, 64)
            if signal.SIGTERM not in got or not SIGTERM["armed"]:
                continue
            from deconfoundlm.outputs import abandon_partial_outputs, committed_outputs

            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            stop_descendants(timeout=5)
            abandon_partial_outputs()
            written = committed_outputs()
            if written:  # e.g. while a Dask cluster shuts down after the reward folder is in place
                names = ", ".join(str(p) for p in written)
                print(f"{PROG}: stopped (SIGTERM) after writing {names}", file=sys.stderr, flush=True)
            else:
                print(f"{PROG}: terminated (SIGTERM); nothing was written", file=sys.stderr, flush=True)
            os._exit(143)

    threading.Thread(target=watch, name="deconfoundlm-sigterm", daemon=True).start()


def ignore_late_sigterm() -> None:
    """The command is done and its outputs are in place: a SIGTERM from now on (while libraries
    shut down, e.g. a Dask cluster) is ignored, so the process ends with the command's exit code.
    Python resets its own handlers at exit, but not an ignored signal."""
    import signal
    import threading

    if SIGTERM["installed"] and threading.current_thread() is threading.main_thread():
        SIGTERM["armed"] = False
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def disarm_sigterm() -> None:
    """SIGTERM no longer stops the command (``serve``: uvicorn drains the requests in flight, then
    the command returns 0)."""
    SIGTERM["armed"] = False


def quiet_libraries() -> None:
    """transformers' loading bars and info logs would come before our one error line. The
    environment says so to transformers when a command imports it (no command pays for importing
    it to say so); one already imported (a call from Python code) is told directly."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
