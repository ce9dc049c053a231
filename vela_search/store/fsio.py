"""Durable, atomic file writes: temporary name, flush, fsync, rename."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

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


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[BinaryIO]:
    """Open a temporary file next to `final`; on success it is fsynced and renamed to `final`.

    On an exception the temporary file is removed and `final` is untouched. The caller fsyncs the
    directory (once for a batch of renames) before publishing anything that names `final`.

    Args:
        final: the path the data ends up at.

    Yields:
        A binary file object to write to.
    """
    tmp = final.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
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


def open_native(path: Path) -> pa.NativeFile:
    """Open `path` as an Arrow file held open for later reads (a FileNotFoundError names the path)."""
    try:
        return pa.OSFile(str(path))
    except FileNotFoundError as e:
        raise FileNotFoundError(errno.ENOENT, "No such file", str(path)) from e
