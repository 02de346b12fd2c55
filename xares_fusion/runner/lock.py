"""One run per run directory: an exclusive lock file naming its holder.

``<run dir>/run.lock`` is held with ``flock`` for as long as the run lasts and holds the holder's
pid, host and start time. The kernel drops a ``flock`` when its process dies, so the lock a
crashed or killed run leaves behind is stale by construction and the next run takes it over
(and says so); a live holder makes the second run stop with its pid, host and start time. Under
torchrun only the main process takes it (the others run in lockstep with it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import RunLockError

log = logging.getLogger("xares_fusion")

LOCK_FILE = "run.lock"


class RunDirLock:
    """The exclusive lock of one run directory; :meth:`acquire` it, :meth:`release` it when the run ends."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        """Take the lock (creating the directory), or raise :class:`RunLockError` naming the live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._locked_fd()
        previous = _read_holder(fd)
        if previous:  # the holder died without releasing it (the kernel dropped its flock)
            log.warning(
                "%s: taking over the lock of pid %s on host %s (started %s), which is no longer running",
                self.path,
                previous.get("pid"),
                previous.get("host"),
                previous.get("started"),
            )
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def _locked_fd(self) -> int:
        """An open descriptor of the lock file, flocked by us; retried when a releasing holder
        unlinked the file between our open and our flock (the lock must be on the file at ``path``)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunLockError(
                    f"{self.path.parent} is in use by another run (pid {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')}, started {holder.get('started', '?')}; lock file {self.path}). "
                    f"Fix: wait for that run to end, or pass another --output-dir."
                ) from None
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file and drop the lock (once; later calls do nothing)."""
        if self._fd is None:
            return
        # Unlinked while still held, so a run starting now either waits on this file or creates a new one.
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def _read_holder(fd: int) -> dict:
    """The holder recorded in an open lock file; empty when there is none or it is unreadable."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # a holder killed while writing it: nothing to report
        return {}
    return data if isinstance(data, dict) else {}
