"""File names of the on-disk index (see docs/format.md)."""

from __future__ import annotations

import re
from pathlib import Path

FORMAT_NAME = "vela-search-index"
# 2: the files and deleted tables may have deltas (`files_deltas`, `deleted_deltas`); see docs/format.md.
FORMAT_VERSION = 2

MANIFEST = "manifest.json"
STAGING_MANIFEST = "manifest.staging.json"
# A copy of the manifest of the generation before the current one, kept for recovery.
PREVIOUS_MANIFEST = "manifest.previous.json"
LOCK_FILE = "writer.lock"
# What a running writer is doing now (files waiting, background maintenance); advisory, see store/activity.py.
ACTIVITY_FILE = "activity.json"
SHARD_DIR = "shards"
TMP_PREFIX = ".tmp-"

# Files the store owns and may garbage-collect; anything else in the directory is left alone.
_OWNED = (
    re.compile(r"^files-\d+\.parquet$"),
    re.compile(r"^deleted-\d+\.parquet$"),
    re.compile(r"^files-delta-\d+\.parquet$"),
    re.compile(r"^deleted-delta-\d+\.parquet$"),
    re.compile(r"^trained-\d+\.faiss$"),
    re.compile(r"^graph-\d+\.faiss$"),
    re.compile(r"^shards/\d+\.(faiss|parquet)$"),
    re.compile(r"^shards/\d+\.codes-\d+\.faiss$"),
)
_SHARD_NUMBER = re.compile(r"^(\d+)\.(faiss|parquet)$")


def shard_files(number: int) -> tuple[str, str]:
    """Relative paths of shard `number`'s FAISS index and Parquet metadata."""
    stem = f"{SHARD_DIR}/{number:06d}"
    return f"{stem}.faiss", f"{stem}.parquet"


def codes_file(number: int, generation: int) -> str:
    """Relative path of shard `number`'s compressed candidate codes, encoded by `generation`."""
    return f"{SHARD_DIR}/{number:06d}.codes-{generation}.faiss"


def graph_file(generation: int) -> str:
    """Relative path of the main HNSW graph written by `generation` (automatic indexes, graph kind)."""
    return f"graph-{generation}.faiss"


def files_table(generation: int) -> str:
    """Relative path of the files table written by `generation`."""
    return f"files-{generation}.parquet"


def deleted_table(generation: int) -> str:
    """Relative path of the tombstone table written by `generation`."""
    return f"deleted-{generation}.parquet"


def files_delta(generation: int) -> str:
    """Relative path of the files-table delta written by `generation` (format version 2)."""
    return f"files-delta-{generation}.parquet"


def deleted_delta(generation: int) -> str:
    """Relative path of the tombstone delta written by `generation` (format version 2)."""
    return f"deleted-delta-{generation}.parquet"


def trained_index(generation: int) -> str:
    """Relative path of the empty, trained FAISS index written by `generation`."""
    return f"trained-{generation}.faiss"


def is_owned(relpath: str) -> bool:
    """Whether `relpath` (POSIX, relative to the root) is a data file the store manages."""
    return any(p.match(relpath) for p in _OWNED)


def is_temporary(name: str) -> bool:
    """Whether a file name is a temporary file of an unfinished write."""
    return name.startswith(TMP_PREFIX)


def owned_files(root: Path) -> list[str]:
    """Relative paths of the store's data files present in `root` (named by a manifest or not), sorted."""
    found = []
    for directory in (root, root / SHARD_DIR):
        if directory.is_dir():
            for entry in directory.iterdir():
                rel = entry.relative_to(root).as_posix()
                if is_owned(rel) and entry.is_file():
                    found.append(rel)
    return sorted(found)


def highest_shard_number(root: Path) -> int:
    """Highest shard number present in `root/shards` (referenced or not), or -1."""
    best = -1
    shard_dir = root / SHARD_DIR
    if shard_dir.is_dir():
        for entry in shard_dir.iterdir():
            m = _SHARD_NUMBER.match(entry.name)
            if m:
                best = max(best, int(m.group(1)))
    return best
