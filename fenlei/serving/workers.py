"""``fenlei serve --workers N``: N uvicorn worker processes on one listening socket, each with its own app.

Why processes: one process tokenizes, parses JSON and runs its event loop under one GIL, so on a machine with
cores to spare the HTTP side, not onnxruntime, caps requests/s; N processes share the socket and the kernel hands
each new connection to one of them. Each worker builds the app of :func:`fenlei.serving.serve.app_factory` from
the same options (passed in ``FENLEI_SERVE_ARGS``), so it loads the bundle, batches its own requests and warms up
its own sessions; ``/ready`` answers for the worker that gets the connection.

What the parent does before any worker starts, so that a bad start is one line and not N restarting workers: the
exposure check, the bundle check (:func:`fenlei.serving.bundle_check.load_bundle`, no onnxruntime session), the
intra-op threads (unless ``--threads``: the cores shared out over workers x sessions, where onnxruntime's own
default gives every session all of them and N workers fight over the cores), and the Prometheus folder: every
worker writes its metrics under ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums them (fenlei.serving.telemetry);
without one, the parent makes a fresh temporary folder and removes it at the end. A worker that fails while it
starts (a model onnxruntime cannot load) exits with uvicorn's start-up failure status; the parent then stops the
others and ``fenlei serve`` exits with status 3 instead of restarting it forever.

SIGTERM (or Ctrl-C) to the parent: uvicorn's supervisor passes SIGTERM on to every worker, which drains as a single
``fenlei serve`` does (the requests in flight are answered), then exits.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fenlei.errors import OptionError
from fenlei.serving.bundle_check import load_bundle
from fenlei.serving.telemetry import MULTIPROC_ENV

WORKER_APP = "fenlei.serving.workers:worker_app"
WORKER_PROTOCOL = "fenlei.serving.protocol:HeadTimeoutH11Protocol"
STARTUP_FAILURE = 3  # uvicorn.config.STARTUP_FAILURE: the supervisor does not restart a worker that exits with it
SERVER_OPTIONS = ("host", "port", "workers")  # the parent's, not the app's
log = logging.getLogger("fenlei.serve")


def threads_per_session(threads: int | None, workers: int, sessions: int) -> int:
    """``--threads``, or the cores this process may use shared out over every session of every worker."""
    if threads is not None:
        return threads
    return max(1, len(os.sched_getaffinity(0)) // (workers * sessions))


def factory_args(options: dict[str, Any]) -> str:
    """``options`` (the keyword arguments of ``fenlei serve``) as the command line app_factory parses: the
    server's own options left out, None left out (the default), booleans as true/false."""
    words: list[str] = []
    for name, value in options.items():
        if name in SERVER_OPTIONS or value is None:
            continue
        words += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return shlex.join(words)


@contextmanager
def metrics_folder() -> Iterator[Path]:
    """The workers' shared Prometheus folder: ``PROMETHEUS_MULTIPROC_DIR`` when set (it must be a folder; files
    of an earlier run there would be added to this one's, which is only warned about: it is the operator's
    folder), else a fresh temporary one, removed at the end."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        if not folder.is_dir():
            raise OptionError(f"{MULTIPROC_ENV}={given}: not a folder (the workers' shared metrics are written there)")
        if any(folder.glob("*.db")):
            log.warning("%s=%s holds metrics files of an earlier run: /metrics adds them to this run's; empty the "
                        "folder before the start", MULTIPROC_ENV, given)
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="fenlei-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def serve_workers(options: dict[str, Any], server_settings: dict[str, Any]) -> int:
    """Run ``options["workers"]`` worker processes (see the module docstring); the exit status.

    ``options``: the keyword arguments of ``fenlei serve``; ``server_settings``: the ``uvicorn.Config`` options of
    the service's limits (fenlei.serving.protocol.server_settings)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    workers = options["workers"]
    load_bundle(options["bundle"], options["precision"])  # a bad bundle: one line here, not N failing workers
    options = {**options, "threads": threads_per_session(options["threads"], workers, options["max_concurrent"])}
    previous = os.environ.get("FENLEI_SERVE_ARGS")
    with metrics_folder():
        os.environ["FENLEI_SERVE_ARGS"] = factory_args(options)
        try:
            config = uvicorn.Config(WORKER_APP, factory=True, host=options["host"], port=options["port"],
                                    workers=workers, log_level=options["log_level"], http=WORKER_PROTOCOL,
                                    **server_settings)
            supervisor = Multiprocess(config, sockets=[config.bind_socket()])
            supervisor.run()
        finally:
            if previous is None:
                os.environ.pop("FENLEI_SERVE_ARGS", None)
            else:
                os.environ["FENLEI_SERVE_ARGS"] = previous
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        print(f"fenlei serve: worker process {failed[0]} failed to start (its error is above); stopped the others",
              file=sys.stderr)
        return STARTUP_FAILURE
    return 0


def worker_app() -> Any:
    """The app of one worker process: :func:`fenlei.serving.serve.app_factory`, with the request-head timeout of
    its options given to the protocol class, and a start that fails for good (any exception: the same options
    fail the same way on a restart) reported in one line with uvicorn's start-up failure status."""
    from fenlei.errors import find_user_error
    from fenlei.serving import protocol
    from fenlei.serving.serve import app_factory

    try:
        app = app_factory()
    except Exception as err:  # noqa: BLE001 - the supervisor would restart a worker that raised, forever
        user_error = find_user_error(err)
        if user_error is None:
            log.exception("fenlei serve: worker %d could not build the app", os.getpid())
        else:
            print(f"fenlei: error: {' '.join(str(user_error).split())}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    protocol.HeadTimeoutH11Protocol.header_timeout = app.state.limits.header_timeout
    return app
