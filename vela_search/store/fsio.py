"""Durable, atomic file writes: temporary name, flush, fsync, rename."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .integrity import Checksum
from .layout import TMP_PREFIX


def fsync_dir(path: Path) -> None:
    """Make renames inside directory `path` durable (a no-op where directories cannot be fsynced)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChecksummedFile:
    """A binary file being written that keeps the checksum of everything written to it.

    Attributes:
        checksum: the manifest checksum of the content (complete once the `atomic_file` block ends).
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._sum = Checksum()
        self._size = 0
        self.checksum = self._sum.hexdigest()

    def write(self, data: bytes) -> int:
        """Write `data` and add it to the checksum."""
        self._sum.update(data)
        self._size += len(data)
        return self._f.write(data)

    def tell(self) -> int:
        """Bytes written so far."""
        return self._size

    def flush(self) -> None:
        """Flush the underlying file."""
        self._f.flush()

    @property
    def closed(self) -> bool:
        """Whether the underlying file is closed."""
        return self._f.closed

    def _finish(self) -> None:
        self.checksum = self._sum.hexdigest()


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[ChecksummedFile]:
    """Open a temporary file next to `final`; on success it is fsynced and renamed to `final`.

    On an exception the temporary file is removed and `final` is untouched. The caller fsyncs the
    directory (once for a batch of renames) before publishing anything that names `final`.

    Args:
        final: the path the data ends up at.

    Yields:
        A binary file object to write to; its `checksum` is the content's once the block ends.
    """
    tmp = final.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        with open(tmp, "wb") as raw:
            f = ChecksummedFile(raw)
            yield f
            f.flush()
            os.fsync(raw.fileno())
            f._finish()
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(final: Path, data: dict) -> None:
    """Atomically replace `final` with `data` as JSON and make the rename durable."""
    with atomic_file(final) as f:
        f.write(json.dumps(data, indent=2, sort_keys=False).encode("utf-8") + b"\n")
    fsync_dir(final.parent)


def remove_quietly(path: Path) -> None:
    """Delete a file, ignoring one that is already gone or cannot be removed now."""
    with contextlib.suppress(OSError):
        os.unlink(path)
