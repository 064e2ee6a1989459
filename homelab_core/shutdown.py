"""The end of a process that may have worker threads still running plugin code.

A sync plugin method runs in a worker thread that cannot be killed: after its timeout it is
abandoned and runs on. Worker threads are not daemon threads, so Python, at exit, would
wait for such a thread forever (``homelab serve`` would never exit after SIGTERM). The
console script (:func:`homelab_core.cli.main`) therefore ends with
:func:`exit_leaving_hung_threads`: once the command has written and closed everything, it
gives the remaining threads a bounded time to return, then names the ones that did not
and ends the process without waiting for them. It is for the end of a program only: an
application embedding the hub decides itself how its process ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

log = logging.getLogger("homelab.shutdown")

#: Seconds the remaining threads get, in all, to return at exit.
THREAD_GRACE = 5.0


def _others() -> list[threading.Thread]:
    current = threading.current_thread()
    return [t for t in threading.enumerate() if t is not current and not t.daemon]


def exit_leaving_hung_threads(code: int = 0, grace: float = THREAD_GRACE) -> None:
    """Return if every other non-daemon thread ends within ``grace`` seconds; otherwise
    log which are still running (a thread running plugin code is named after its
    instance) and exit the process at once with ``code``."""
    deadline = time.monotonic() + grace
    for thread in _others():
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [thread.name for thread in _others() if thread.is_alive()]
    if not hung:
        return
    log.warning(
        "exiting with %d thread(s) still running, abandoned: %s",
        len(hung),
        ", ".join(sorted(hung)),
    )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
