"""The manifest: the one file that defines a generation of the index."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..errors import FingerprintMismatchError, IndexFormatError
from . import fsio
from .integrity import check_relpath, checksum_of
from .layout import FORMAT_NAME, FORMAT_VERSION, MANIFEST, PREVIOUS_MANIFEST

METRIC = "inner_product"
# The manifest's checksum of itself (of its canonical JSON without this key), verified at open.
SELF_CHECKSUM = "manifest_checksum"
# Manifest keys of the files and deleted tables' deltas (format version 2; absent in version 1: none).
DELTA_KEYS = {"files": "files_deltas", "deleted": "deleted_deltas"}

_REQUIRED = (
    "format",
    "format_version",
    "generation",
    "fingerprint",
    "dim",
    "metric",
    "factory",
    "next_id",
    "next_shard",
    "num_vectors",
    "shards",
    "files",
    "deleted",
    "trained",
)


def normalize_fingerprint(fingerprint: dict) -> dict:
    """Return `fingerprint` as it reads back from JSON, so comparisons ignore tuple/list and key order.

    Raises:
        ValueError: the fingerprint is not a JSON-able dict.
    """
    if not isinstance(fingerprint, dict):
        raise ValueError(f"fingerprint must be a dict, not {type(fingerprint).__name__}")
    try:
        return json.loads(json.dumps(fingerprint, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"fingerprint is not JSON-serialisable: {e}") from e


def new_manifest(*, fingerprint: dict, dim: int, factory: str, staged: bool = False) -> dict:
    """An empty generation-0 manifest."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "generation": 0,
        "staged": staged,
        "committed_at": None,
        "fingerprint": normalize_fingerprint(fingerprint),
        "dim": int(dim),
        "metric": METRIC,
        "factory": factory,
        "trained": None,
        "next_id": 0,
        "next_shard": 0,
        "num_vectors": 0,
        "num_deleted": 0,
        "shards": [],
        "files": None,
        "files_deltas": [],
        "deleted": None,
        "deleted_deltas": [],
        "retained": [],
        "checksums": {},
    }


def seal(data: dict) -> dict:
    """`data` with its own checksum (`SELF_CHECKSUM`): of its canonical JSON without that key."""
    body = {k: v for k, v in data.items() if k != SELF_CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return dict(body, **{SELF_CHECKSUM: checksum_of(text.encode("utf-8"))})


def _check_seal(path: Path, data: dict) -> None:
    """Refuse a manifest whose content no longer matches its own checksum, offering the previous one."""
    if SELF_CHECKSUM not in data or seal(data)[SELF_CHECKSUM] == data[SELF_CHECKSUM]:
        return  # manifests written before the checksum have none
    hint = ""
    previous = path.with_name(PREVIOUS_MANIFEST)
    if path.name == MANIFEST and previous.is_file():
        hint = (
            f"; {previous.name} holds the previous generation's manifest: copy it over {path.name} to "
            "go back to that generation, then run `vela-search check`"
        )
    raise IndexFormatError(f"{path} is damaged: its content does not match its checksum{hint}")


def read(path: Path) -> dict | None:
    """Read and validate a manifest; None when the file does not exist.

    Raises:
        IndexFormatError: the file is not a manifest this version can read, or is damaged (its own
            checksum does not match).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IndexFormatError(f"cannot read {path}: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise IndexFormatError(f"{path} is not valid JSON ({e}); the index is damaged") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path} is not a vela-search index manifest")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format version {version!r}; this vela-search reads versions up to "
            f"{FORMAT_VERSION}: upgrade vela-search"
        )
    _check_seal(path, data)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise IndexFormatError(f"{path} lacks the keys {', '.join(missing)}; the index is damaged")
    _check_paths(path, data)
    return data


def _check_paths(path: Path, data: dict) -> None:
    """Refuse a manifest that names files outside the index folder (or malformed shard entries)."""
    shards = data["shards"]
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and {"index", "meta", "count", "min_id", "max_id"} <= s.keys() for s in shards
    ):
        raise IndexFormatError(f"{path} has a malformed shard list; the index is damaged")
    retained = data.get("retained") or []
    if not isinstance(retained, list):
        raise IndexFormatError(f"{path} has a malformed retained list; the index is damaged")
    codes = data.get("codes")
    if codes is not None and not (isinstance(codes, dict) and isinstance(codes.get("trained"), str)):
        raise IndexFormatError(f"{path} has a malformed codes entry; the index is damaged")
    for name in (data["files"], data["deleted"], data["trained"], (codes or {}).get("trained")):
        if name is not None:
            check_relpath(name, where=str(path))
    for entry in shards:
        check_relpath(entry["index"], where=str(path))
        check_relpath(entry["meta"], where=str(path))
        if entry.get("codes") is not None:
            check_relpath(entry["codes"], where=str(path))
    for name in retained:
        check_relpath(name, where=str(path))
    _check_deltas(path, data)
    checksums = data.get("checksums")
    if checksums is not None and not (
        isinstance(checksums, dict) and all(isinstance(v, str) for v in checksums.values())
    ):
        raise IndexFormatError(f"{path} has a malformed checksums map; the index is damaged")


def _check_deltas(path: Path, data: dict) -> None:
    """Refuse malformed delta lists (format version 2): each ``{"path", "rows"}`` naming its kind's file."""
    for kind, key in DELTA_KEYS.items():
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(
            isinstance(d, dict) and isinstance(d.get("rows"), int) and "path" in d for d in value
        ):
            raise IndexFormatError(f"{path} has a malformed {key} list; the index is damaged")
        for d in value:
            check_relpath(d["path"], where=str(path))
            if not d["path"].startswith(f"{kind}-delta-"):
                raise IndexFormatError(f"{path} names {d['path']!r} as a {kind} delta; the index is damaged")


def deltas(data: dict, kind: str) -> list[dict]:
    """The deltas (``{"path", "rows"}``, oldest first) `data` names for table `kind` (files, deleted)."""
    return list(data.get(DELTA_KEYS[kind]) or [])


def checksum(data: dict, relpath: str) -> str | None:
    """The checksum `data` records for the file `relpath`, or None (manifests before checksums)."""
    return (data.get("checksums") or {}).get(relpath)


def keep_checksums(data: dict, written: dict[str, str]) -> None:
    """Record the checksums of newly `written` files in `data`, dropping those of files it no longer names."""
    known = dict(data.get("checksums") or {})
    known.update(written)
    refs = references(data)
    data["checksums"] = {p: c for p, c in sorted(known.items()) if p in refs}


def write(path: Path, data: dict) -> None:
    """Atomically replace the manifest at `path` (the commit point of a generation)."""
    data = seal(dict(data, committed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
    if path.name == MANIFEST and path.is_file():
        # The generation being replaced stays on offer for recovery should this manifest be damaged.
        with fsio.atomic_file(path.with_name(PREVIOUS_MANIFEST)) as f:
            f.write(path.read_bytes())
    fsio.write_json(path, data)


def references(data: dict | None) -> set[str]:
    """Relative paths of every data file a manifest names (its snapshot)."""
    if data is None:
        return set()
    codes = data.get("codes") or {}
    refs = {
        p for p in (data.get("files"), data.get("deleted"), data.get("trained"), codes.get("trained")) if p
    }
    refs.update(d["path"] for kind in DELTA_KEYS for d in deltas(data, kind))
    for shard in data["shards"]:
        refs.add(shard["index"])
        refs.add(shard["meta"])
        if shard.get("codes"):
            refs.add(shard["codes"])
    return refs


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 48 else text[:45] + "..."


def fingerprint_differences(stored: dict, given: dict) -> list[str]:
    """Human-readable differences between two fingerprints, one per differing (dotted) key."""
    a, b = _flatten(stored), _flatten(normalize_fingerprint(given))
    diffs = []
    for key in sorted(a.keys() | b.keys()):
        if key not in b:
            diffs.append(f"{key} (index: {_short(a[key])}, now: absent)")
        elif key not in a:
            diffs.append(f"{key} (index: absent, now: {_short(b[key])})")
        elif a[key] != b[key]:
            diffs.append(f"{key} (index: {_short(a[key])}, now: {_short(b[key])})")
    return diffs


def check_fingerprint(root: Path, stored: dict, given: dict) -> None:
    """Refuse to mix vectors of two embedders in one generation.

    Raises:
        FingerprintMismatchError: naming the differing keys and how to rebuild.
    """
    diffs = fingerprint_differences(stored, given)
    if diffs:
        raise FingerprintMismatchError(
            f"index {root} was built with a different embedder; differing keys: {'; '.join(diffs)}. "
            "Vectors of two embedders cannot share an index. Re-embed the collection with "
            "`vela-search index PATH --rebuild` (same --index); the current index keeps answering "
            "queries until the rebuild completes."
        )
