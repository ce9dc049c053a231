"""The single-writer lock: `writer.lock`, holding the writer's pid and hostname.

Exclusion comes from an OS file lock (flock on POSIX, msvcrt on Windows) rather than from the file's
existence: the OS drops it when the holder dies, however it dies, so a lock file left behind by a dead
process (a stale lock) is simply taken over, and two processes can never both take it over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from ..errors import IndexLockedError
from .integrity import write_error
from .layout import LOCK_FILE

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

# Windows locks byte ranges; lock one far past the JSON so other processes can still read who holds it.
_WIN_LOCK_OFFSET = 1 << 20


def _try_lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode("utf-8"))
        return holder if isinstance(holder, dict) else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}


class WriterLock:
    """Exclusive writer lock on an index directory.

    Attributes:
        path: the lock file.
        previous_holder: what a stale lock file said (pid, hostname) when it was taken over, else None.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.previous_holder: dict | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once or fail.

        Raises:
            IndexLockedError: another live process (or another writer in this process) holds it.
        """
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            error = write_error(self.root, e, doing="opening it for writing", generation=None)
            if error is None:
                raise
            raise error from None
        try:
            _try_lock(fd)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            pid = holder.get("pid", "unknown")
            where = ""
            if holder.get("hostname") and holder["hostname"] != socket.gethostname():
                where = f" on host {holder['hostname']}"
            raise IndexLockedError(
                f"index {self.root} is being written by process {pid}{where}; "
                "wait for it to finish or stop it, then retry"
            ) from None
        # The OS lock is ours, so whoever the file still names is gone: a stale lock, taken over.
        previous = _read_holder(fd)
        self.previous_holder = previous or None
        record = {"pid": os.getpid(), "hostname": socket.gethostname(), "since": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(record).encode("utf-8"))
            os.fsync(fd)
        except OSError as e:
            _unlock(fd)
            os.close(fd)
            error = write_error(self.root, e, doing="opening it for writing", generation=None)
            if error is None:
                raise
            raise error from None
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent). The file stays; an empty file means nobody holds it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
