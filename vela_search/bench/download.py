"""Download the official benchmark files, resumably and with checksums (stdlib ``urllib`` only).

- Clotho v2.1 (Zenodo record 4783391): ``clotho_captions_<split>.csv`` and ``clotho_audio_<split>.7z``,
  checked against their MD5 sums, then the archive is extracted into the data folder (it unpacks to
  ``<split>/``) when the optional package ``py7zr`` is installed.
- AudioCaps: only the captions CSV from the official repository (github.com/cdjkim/audiocaps); the audio is
  on YouTube only and must be obtained separately (see :data:`AUDIOCAPS_AUDIO_NOTE`).

A download goes to ``<file>.part`` first and resumes from it with an HTTP ``Range`` request; the file gets
its final name only after its size and checksum were verified, so a final name always means a good file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vela_search.errors import DatasetError

__all__ = [
    "AUDIOCAPS_AUDIO_NOTE",
    "REMOTE_FILES",
    "ProgressCallback",
    "RemoteFile",
    "download_dataset",
    "download_file",
    "extract_7z",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, "int | None"], None]
"""Called as ``progress(file_name, bytes_done, bytes_total_or_None)`` while a file downloads."""

_CHUNK = 1 << 20
_USER_AGENT = "vela-search (benchmark downloader)"


@dataclass(frozen=True)
class RemoteFile:
    """One file of an official release.

    Attributes:
        url: Where to fetch it.
        filename: Name it gets in the data folder.
        md5: Expected MD5 hex digest, or None where no published checksum could be sourced (then only the
            size announced by the server is checked).
        size: Expected size in bytes, or None if unknown.
        extract: Whether it is a 7z archive to unpack into the data folder.
    """

    url: str
    filename: str
    md5: str | None = None
    size: int | None = None
    extract: bool = False


def _zenodo(name: str, md5: str, *, extract: bool = False) -> RemoteFile:
    return RemoteFile(
        f"https://zenodo.org/records/4783391/files/{name}?download=1", name, md5, extract=extract
    )


def _audiocaps(split: str) -> RemoteFile:
    # The repository publishes no checksums, so none is pinned: the file is checked by parsing its header.
    return RemoteFile(
        f"https://raw.githubusercontent.com/cdjkim/audiocaps/master/dataset/{split}.csv", f"{split}.csv"
    )


# MD5 sums of Clotho v2.1 as listed for Zenodo record 4783391 by the Labbeti/aac-datasets loader
# (src/aac_datasets/datasets/functional/clotho.py, "v2.1"); two other public download scripts list the
# same values.
REMOTE_FILES: dict[str, dict[str, tuple[RemoteFile, ...]]] = {
    "clotho": {
        "development": (
            _zenodo("clotho_captions_development.csv", "d4090b39ce9f2491908eebf4d5b09bae"),
            _zenodo("clotho_audio_development.7z", "c8b05bc7acdb13895bb3c6a29608667e", extract=True),
        ),
        "validation": (
            _zenodo("clotho_captions_validation.csv", "5879e023032b22a2c930aaa0528bead4"),
            _zenodo("clotho_audio_validation.7z", "7dba730be08bada48bd15dc4e668df59", extract=True),
        ),
        "evaluation": (
            _zenodo("clotho_captions_evaluation.csv", "1b16b9e57cf7bdb7f13a13802aeb57e2"),
            _zenodo("clotho_audio_evaluation.7z", "4569624ccadf96223f19cb59fe4f849f", extract=True),
        ),
    },
    "audiocaps": {split: (_audiocaps(split),) for split in ("test", "val", "train")},
}

AUDIOCAPS_AUDIO_NOTE = (
    "AudioCaps audio is distributed through YouTube only: --download fetched the captions CSV, but the "
    "clips must be obtained separately (e.g. with yt-dlp and ffmpeg, 10 s from start_time) and saved as "
    "<data_dir>/test/<youtube_id>.wav (flac/mp3/ogg also work). Clips without audio are skipped and counted."
)

_DEFAULT_SPLITS = {"clotho": "evaluation", "audiocaps": "test"}


def download_dataset(
    name: str,
    data_dir: str | Path,
    *,
    split: str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Fetch a benchmark's official files into ``data_dir`` (skipping those already there and verified).

    Args:
        name: ``"clotho"`` or ``"audiocaps"``.
        data_dir: Target folder; created if needed. It is what ``load_dataset`` then reads.
        split: Split to fetch; ``None`` means ``"evaluation"`` (Clotho) or ``"test"`` (AudioCaps).
        progress: Optional callback, see :data:`ProgressCallback`.

    Returns:
        ``data_dir`` as a Path.

    Raises:
        DatasetError: Unknown name or split, no connection, HTTP error, checksum mismatch, malformed CSV,
            or a 7z archive while ``py7zr`` is not installed (the verified archive is kept).

    Example:
        >>> download_dataset("clotho", "data/clotho")  # doctest: +SKIP
        PosixPath('data/clotho')
    """
    key = name.strip().lower()
    if key not in REMOTE_FILES:
        raise DatasetError(f"cannot download {name!r}: choose one of {', '.join(REMOTE_FILES)}.")
    split = split or _DEFAULT_SPLITS[key]
    if split not in REMOTE_FILES[key]:
        raise DatasetError(
            f"cannot download {key} split {split!r}: choose one of {', '.join(REMOTE_FILES[key])}."
        )
    data_dir = Path(data_dir).expanduser()
    created = [p for p in (data_dir, *data_dir.parents) if not p.exists()]  # deepest first
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        for remote in REMOTE_FILES[key][split]:
            path = download_file(
                remote.url, data_dir / remote.filename, md5=remote.md5, size=remote.size, progress=progress
            )
            if remote.extract:
                extract_7z(path, data_dir)
            if key == "audiocaps":
                _check_audiocaps_csv(path)
    except BaseException:
        # Offline or refused before any byte landed: leave no empty folders behind. A partial download
        # (kept for resuming) keeps its folder, as rmdir only removes empty ones.
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    if key == "audiocaps":
        logger.info(AUDIOCAPS_AUDIO_NOTE)
    return data_dir


def download_file(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    size: int | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a previous partial download.

    An existing ``dest`` is verified and kept. A resumed download that fails its checksum is fetched once
    more from the start (the old partial data may have been the bad part); a fresh one that fails is
    deleted and reported.

    Args:
        url: HTTP(S) URL.
        dest: Final path.
        md5: Expected MD5 hex digest, or None to skip the checksum.
        size: Expected size in bytes, or None (the server's announced size is still checked).
        progress: Optional callback, see :data:`ProgressCallback`.
        timeout: Seconds to wait for the connection and for each read.

    Returns:
        ``dest`` as a Path.

    Raises:
        DatasetError: Offline, refused, HTTP error, interrupted transfer (the ``.part`` is kept for the
            next try), or a size/checksum mismatch.
    """
    dest = Path(dest)
    if dest.is_file():
        problem = _verify(dest, md5, size)
        if problem:
            raise DatasetError(
                f"{dest} exists but {problem}; delete it and run the download again (source: {url})."
            )
        if progress:
            n = dest.stat().st_size
            progress(dest.name, n, n)
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for _ in range(2):
        resumed = _fetch(url, part, dest, progress, timeout)
        problem = _verify(part, md5, size)
        if problem is None:
            os.replace(part, dest)
            return dest
        part.unlink()
        if not resumed:
            break
        logger.warning("%s: %s after resuming; downloading it again from the start", dest.name, problem)
    raise DatasetError(
        f"download of {url} failed verification: {problem}. The bad file was removed; run the download again."
    )


def extract_7z(archive: str | Path, dest_dir: str | Path) -> None:
    """Unpack a 7z archive into ``dest_dir`` with ``py7zr`` (once; a marker file records success).

    Args:
        archive: The ``.7z`` file.
        dest_dir: Folder to unpack into (Clotho archives create ``<split>/`` inside it).

    Raises:
        DatasetError: If ``py7zr`` is not installed or the archive is damaged.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    marker = dest_dir / f".{archive.name}.extracted"
    if marker.is_file():
        return
    try:
        import py7zr  # optional: only needed to unpack the Clotho audio archives
    except ImportError:
        raise DatasetError(
            f"{archive} is downloaded and verified, but unpacking .7z needs the optional package py7zr: "
            f"run `pip install py7zr` and download again (the archive is reused), or unpack it yourself "
            f"with `7z x '{archive}' -o'{dest_dir}'`."
        ) from None
    try:
        with py7zr.SevenZipFile(archive, mode="r") as z:
            z.extractall(path=dest_dir)
    except (py7zr.exceptions.ArchiveError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot unpack {archive}: {exc}. Delete it and download again.") from exc
    marker.write_text("")


def _fetch(url: str, part: Path, dest: Path, progress: ProgressCallback | None, timeout: float) -> bool:
    """Complete ``part`` from ``url``; returns whether it continued earlier partial data."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Range starts at the end: the .part already holds the whole file; verification decides.
            return True
        raise DatasetError(f"download of {url} failed: HTTP {exc.code} {exc.reason}.") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetError(
            f"cannot download {url}: {reason}. Check the internet connection (or proxy settings), or fetch "
            f"the file by other means and save it as {dest}."
        ) from None

    with response:
        total: int | None
        content_range = response.headers.get("Content-Range", "")
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", content_range)
        if offset and response.status == 206 and match and int(match.group(1)) == offset:
            mode = "ab"
            total = int(match.group(2)) if match.group(2) != "*" else None
        else:
            # The server ignored the range (or there was none): start over.
            offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        done = offset
        if progress:
            progress(dest.name, done, total)
        try:
            with open(part, mode) as fh:
                while chunk := response.read(_CHUNK):
                    fh.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(dest.name, done, total)
        except (OSError, http.client.HTTPException) as exc:
            raise DatasetError(
                f"download of {url} was interrupted after {done} bytes ({exc}); run it again to resume "
                f"from {part}."
            ) from None
    if total is not None and done < total:
        raise DatasetError(
            f"download of {url} stopped at {done} of {total} bytes; run it again to resume from {part}."
        )
    return mode == "ab"


def _verify(path: Path, md5: str | None, size: int | None) -> str | None:
    """Why ``path`` is not the expected file, or None if it is."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"its size is {actual_size} bytes, expected {size}"
    if md5 is not None:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != md5.lower():
            return f"its MD5 is {digest.hexdigest()}, expected {md5.lower()}"
    return None


def _check_audiocaps_csv(path: Path) -> None:
    from vela_search.bench.datasets import read_csv

    header, rows = read_csv(path)
    missing = [c for c in ("youtube_id", "caption") if c not in header]
    if missing or not rows:
        raise DatasetError(
            f"{path} downloaded but is not an AudioCaps captions CSV (missing columns: "
            f"{', '.join(missing) or 'none'}; {len(rows)} rows). Delete it and check the source URL."
        )
