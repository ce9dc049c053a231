"""Garbage collection of data files no generation needs any more (run by the writer, under the lock)."""

from __future__ import annotations

from pathlib import Path

from ..errors import IndexFormatError
from . import fsio, layout, manifest


def collect(root: Path) -> list[str]:
    """Delete store files that neither manifest (nor the generation each replaced) names.

    Kept: everything `manifest.json` and `manifest.staging.json` name, plus each one's `retained`
    list (the previous generation, for readers that opened it just before the commit). Deleted:
    other shard/table files and temporary files of unfinished writes. Files the store does not
    own are never touched.

    Returns:
        The relative paths deleted.
    """
    keep: set[str] = set()
    for name in (layout.MANIFEST, layout.STAGING_MANIFEST):
        try:
            data = manifest.read(root / name)
        except IndexFormatError:
            return []  # never delete on the strength of a manifest that cannot be read
        if data is not None:
            keep |= manifest.references(data) | set(data.get("retained") or [])
    removed = []
    for directory in (root, root / layout.SHARD_DIR):
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            if not entry.is_file():
                continue
            rel = entry.relative_to(root).as_posix()
            if layout.is_temporary(entry.name) or (layout.is_owned(rel) and rel not in keep):
                fsio.remove_quietly(entry)
                removed.append(rel)
    return removed
