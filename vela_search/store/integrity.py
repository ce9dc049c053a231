"""Integrity of index files: checksums, confinement to the index folder, and one-line damage errors.

Every data file a manifest names is checked against the checksum the manifest records for it (when it
records one: manifests written before checksums existed do not). Tables and FAISS files of types that
cannot be memory-mapped are read whole into memory, checked and parsed from memory; memory-mapped shard
files are checked by streaming them through the CRC (`verify_file`), which keeps none of their pages.
Files are closed at once, so a reader holds no open files. A damaged file is reported as an
`IndexDamagedError` naming it, whatever the parser would have said.
"""

from __future__ import annotations

import contextlib
import errno
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import IndexFormatError, StoreError
from . import layout

CHECKSUM_ALGORITHM = "crc32"

# errno values that mean "the device is full" (no space, or the user's quota is spent).
_FULL = {errno.ENOSPC, errno.EDQUOT}
# errno values that mean "this folder cannot be written" (read-only mount, no permission).
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


class IndexDamagedError(IndexFormatError):
    """A data file of the index is missing, truncated, corrupted, or outside the index folder.

    Attributes:
        path: the damaged file, relative to the index folder (as the manifest names it).
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class IndexWriteError(StoreError):
    """Writing to the index failed because of the device (full, read-only); nothing committed is lost."""


class Checksum:
    """A running CRC-32 of bytes as they are written (see `fsio.atomic_file`)."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add `data` to the checksum."""
        self._value = zlib.crc32(data, self._value)

    def hexdigest(self) -> str:
        """The checksum as it is written in a manifest, e.g. ``crc32:1a2b3c4d``."""
        return f"{CHECKSUM_ALGORITHM}:{self._value:08x}"


def checksum_of(data: bytes | bytearray | memoryview) -> str:
    """The manifest checksum of `data`."""
    c = Checksum()
    c.update(data)
    return c.hexdigest()


def check_relpath(relpath: Any, *, where: str) -> str:
    """Validate a path named by an index file: one of the store's own names, relative to the index folder.

    This confines every path a manifest names to the index folder: ``../other/...``, absolute paths and
    anything that is not a shard, table or trained-index name of this store are refused.

    Args:
        relpath: the value found in the manifest.
        where: what names it, for the message (e.g. ``"manifest.json"``).

    Raises:
        IndexDamagedError: the value is not such a path.
    """
    if not isinstance(relpath, str) or not layout.is_owned(relpath):
        raise IndexDamagedError(
            f"{where} names {relpath!r} as an index file, which is not a file of this index folder "
            "(index files are shards/NNNNNN.faiss|parquet, shards/NNNNNN.codes-N.faiss, files-N.parquet, "
            "deleted-N.parquet, graph-N.faiss, "
            "trained-N.faiss, inside the index folder); the manifest is damaged or was edited: "
            "restore it from a backup or rebuild the index",
            str(relpath),
        )
    return relpath


def read_verified(root: Path, relpath: str, expected: str | None) -> bytes:
    """Read the index file `relpath` whole and check it against its recorded checksum.

    Args:
        root: the index folder.
        relpath: the file, as the manifest names it (validated by `check_relpath`).
        expected: the manifest's checksum of the file, or None where it records none (older indexes).

    Raises:
        IndexDamagedError: the file is missing, unreadable or does not match its checksum.
    """
    check_relpath(relpath, where=layout.MANIFEST)
    path = root / relpath
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise damaged(root, relpath, "it is missing") from None
    except OSError as e:
        raise _read_error(root, relpath, e) from None
    if expected is not None:
        actual = checksum_of(data)
        if actual != expected:
            raise damaged(
                root,
                relpath,
                f"its checksum is {actual}, the manifest recorded {expected} (corrupted on disk)",
            )
    return data


# Bytes read per step when a file is checked without being kept (see `verify_file`).
_VERIFY_CHUNK = 8 << 20


def verify_file(root: Path, relpath: str, expected: str | None, *, missing_ok: bool = False) -> bool:
    """Check the index file `relpath` against its recorded checksum, streaming it from disk.

    Only one chunk of the file is in this process's memory at a time (the pages read stay in the
    operating system's cache, not in the process), so checking a multi-GB shard costs one sequential
    read and no memory.

    Args:
        root: the index folder.
        relpath: the file, as the manifest names it.
        expected: the manifest's checksum of the file, or None where it records none (nothing to check).
        missing_ok: return False instead of raising when the file no longer exists (a snapshot's file
            collected by a later commit, after the snapshot mapped it).

    Returns:
        Whether the file was checked (False: no checksum recorded, or missing with `missing_ok`).

    Raises:
        IndexDamagedError: the file is missing, unreadable or does not match its checksum.
    """
    check_relpath(relpath, where=layout.MANIFEST)
    if expected is None:
        return False
    path = root / relpath
    checksum = Checksum()
    buffer = bytearray(_VERIFY_CHUNK)
    view = memoryview(buffer)
    try:
        with open(path, "rb", buffering=0) as f:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while n := f.readinto(buffer):
                checksum.update(view[:n])
    except FileNotFoundError:
        if missing_ok:
            return False
        raise damaged(root, relpath, "it is missing") from None
    except OSError as e:
        raise _read_error(root, relpath, e) from None
    actual = checksum.hexdigest()
    if actual != expected:
        raise damaged(
            root, relpath, f"its checksum is {actual}, the manifest recorded {expected} (corrupted on disk)"
        )
    return True


def _read_error(root: Path, relpath: str, error: OSError) -> StoreError:
    if error.errno in (errno.EMFILE, errno.ENFILE):
        return StoreError(f"cannot open {root / relpath}: too many open files ({error.strerror})")
    if isinstance(error, IsADirectoryError):
        return damaged(root, relpath, "it is a directory")
    return damaged(root, relpath, f"it cannot be read ({error.strerror or error})")


def damaged(root: Path, relpath: str, why: str) -> IndexDamagedError:
    """The one-line error for a damaged index file, with how to find and repair the damage."""
    why = " ".join(why.split())
    return IndexDamagedError(
        f"index file {Path(root) / relpath} is damaged: {why}. "
        f"Run `vela-search check --index {root} --repair` to find every damaged file, drop its rows and "
        "re-embed the affected audio at the next `vela-search index` run",
        relpath,
    )


def write_error(root: Path, error: OSError, *, doing: str, generation: int | None) -> StoreError | None:
    """A one-line error for a failed write caused by the device (full or read-only), else None.

    Args:
        root: the index folder.
        error: what the write raised.
        doing: what was being written, e.g. ``"committing"``.
        generation: the index's last committed generation, which stays intact (None for a new index).
    """
    kept = (
        f"index {root} keeps its last commit (generation {generation}); only the batch being written is "
        "dropped, and a rerun redoes it"
        if generation is not None
        else f"index {root} is unchanged"
    )
    if error.errno in _FULL:
        return IndexWriteError(
            f"no space left on the device of {root} while {doing}: nothing was lost, {kept}. "
            "Free some space (or move the index with --index) and run the command again"
        )
    if error.errno in _READ_ONLY:
        what = "is on a read-only file system" if error.errno == errno.EROFS else "is not writable by you"
        return IndexWriteError(
            f"index folder {root} {what} ({error.strerror}), so it cannot be changed while {doing}. "
            "Queries and `vela-search info` still work; to write, use a writable copy (--index) or "
            "fix the permissions"
        )
    return None


@contextlib.contextmanager
def device_errors(root: Path, *, doing: str, generation: int | None) -> Iterator[None]:
    """Turn a full or read-only device into one clear `IndexWriteError` (see `write_error`)."""
    try:
        yield
    except OSError as e:
        error = write_error(root, e, doing=doing, generation=generation)
        if error is None:
            raise
        raise error from e
