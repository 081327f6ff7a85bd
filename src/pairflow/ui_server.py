"""Run a server child (``mlflow ui``) so that nothing it starts outlives this process.

The child gets its own process group. SIGTERM/SIGINT sent to us are passed on to that whole
group; when the child exits, or when we are interrupted, the group is terminated (then
killed after a grace period), so the server's workers cannot linger as orphans.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from types import FrameType

GRACE_S = 10.0


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when no process is left in it."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


def stop_group(pgid: int, grace_s: float = GRACE_S) -> None:
    """SIGTERM the group, wait up to ``grace_s`` for it to empty, then SIGKILL what is left."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)


def run_until_signalled(command: Sequence[str], grace_s: float = GRACE_S) -> int:
    """Run ``command`` in a new process group; forward SIGTERM/SIGINT; return its exit code.

    Exit code 128 + signal number when we were signalled (the shell convention).
    """
    proc = subprocess.Popen(list(command), start_new_session=True)
    received: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        _signal_group(proc.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if received:
                    # the server got the signal: it has the grace period, then the group goes
                    stop_group(proc.pid, grace_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # Workers of the server share its group: stop any the server left behind.
        stop_group(proc.pid, grace_s)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return 128 + received[0] if received else code
