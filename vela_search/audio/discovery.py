"""Find audio files under files and directories; paths that cannot be searched are reported, not raised."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AUDIO_EXTENSIONS", "DiscoveryResult", "discover_audio_files"]

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm", ".wma", ".aif", ".aiff"}
)


@dataclass
class DiscoveryResult:
    """Audio files found under some roots, and the paths that could not be searched."""

    files: list[Path]
    problems: list[tuple[Path, str]]


def discover_audio_files(roots: Sequence[str | Path]) -> DiscoveryResult:
    """Find audio files (by extension, case-insensitive) under files and directories.

    Directories are searched recursively in sorted order, following symbolic links; a link back to one of
    its own ancestors is reported as a loop and not entered. Hidden entries (names starting with ".") are
    skipped. Missing roots, unreadable directories and broken links are reported in ``problems``, never
    raised. Paths are absolute (symbolic links are kept, not resolved), sorted and unique.
    """
    found: set[Path] = set()
    problems: list[tuple[Path, str]] = []
    for root in roots:
        top = Path(os.path.abspath(root))
        try:
            st = os.stat(top)
        except FileNotFoundError:
            problems.append((top, "broken symbolic link" if os.path.islink(top) else "does not exist"))
            continue
        except OSError as exc:
            problems.append((top, _os_reason(exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(top, (st.st_dev, st.st_ino), found, problems)
        elif stat.S_ISREG(st.st_mode):
            if top.suffix.lower() in AUDIO_EXTENSIONS:
                _add(top, found, problems)
            else:
                problems.append((top, f"not a supported audio file extension ('{top.suffix}')"))
        else:
            problems.append((top, "not a regular file or directory"))
    problems.sort(key=lambda item: (str(item[0]), item[1]))
    return DiscoveryResult(files=sorted(found, key=str), problems=problems)


def _add(path: Path, found: set[Path], problems: list[tuple[Path, str]]) -> None:
    """Keep an audio file, or report it when its name cannot be stored (not valid UTF-8)."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # The OS handed over bytes that are not UTF-8 (kept by Python as surrogate escapes). An index
        # stores paths as UTF-8 text, so the file is reported, shown with its bytes escaped, and the run
        # goes on with the other files.
        shown = Path(os.fsencode(name).decode("utf-8", "backslashreplace"))
        problems.append(
            (shown, "file name is not valid UTF-8: rename the file (e.g. with `convmv`) to index it")
        )
        return
    found.add(path)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return exc.strerror or str(exc)


def _walk(top: Path, top_key: tuple[int, int], found: set[Path], problems: list[tuple[Path, str]]) -> None:
    # Iterative depth-first walk; each entry carries its chain of ancestor directories (device, inode) so
    # that a link pointing back up the chain is caught as a loop while aliases elsewhere are still walked.
    stack: list[tuple[Path, dict[tuple[int, int], Path]]] = [(top, {top_key: top})]
    while stack:
        directory, ancestors = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            problems.append((directory, "permission denied: the directory cannot be listed"))
            continue
        except OSError as exc:
            problems.append((directory, f"cannot list directory: {_os_reason(exc)}"))
            continue
        subdirs: list[tuple[Path, dict[tuple[int, int], Path]]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = directory / entry.name
            try:
                st = os.stat(path)  # follows links
            except FileNotFoundError:
                problems.append((path, "broken symbolic link"))
                continue
            except OSError as exc:
                problems.append((path, _os_reason(exc)))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    problems.append((path, f"symbolic link loop: points back to '{ancestors[key]}'"))
                    continue
                subdirs.append((path, {**ancestors, key: path}))
            elif stat.S_ISREG(st.st_mode) and path.suffix.lower() in AUDIO_EXTENSIONS:
                _add(path, found, problems)
        stack.extend(reversed(subdirs))
