"""Uploaded query clips: saved to a temporary file within the byte limit, then checked and decoded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import UploadFile

from vela_search.errors import AudioDecodeError, QueryError
from vela_search.serve.http_errors import UploadTooLargeError, too_large

__all__ = ["load_upload", "safe_suffix", "save_upload"]


def safe_suffix(filename: str | None) -> str:
    """The upload's extension when it looks like one (decoders of some formats go by it), else none."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ""


def save_upload(upload: UploadFile, path: Path, limit: int) -> None:
    """Copy ``upload`` to ``path``, refusing more than ``limit`` bytes and an empty file."""
    written = 0
    with path.open("wb") as out:
        while chunk := upload.file.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise UploadTooLargeError(too_large(limit))
            out.write(chunk)
    if written == 0:
        raise AudioDecodeError("the uploaded file is empty")


def load_upload(path: Path, name: str, start: float | None, end: float | None, max_seconds: float) -> Any:
    """The clip of the saved upload (its span), checked against the server's duration limit.

    Raises:
        UploadTooLargeError: a clip longer than ``max_seconds``.
        QueryError: a start past the clip's end.
        AudioDecodeError: not audio (the message names the upload as the client named it).
    """
    from vela_search.audio import audio_duration
    from vela_search.search import load_query_clip

    try:
        seconds = audio_duration(path)
        if seconds > max_seconds:
            raise UploadTooLargeError(
                f"the uploaded audio is {seconds:.1f} s long; this server takes clips of up to "
                f"{max_seconds:g} s"
            )
        if start is not None and start >= seconds:
            raise QueryError(f"start {start:g} s is past the end of the {seconds:.3f} s clip")
        return load_query_clip(path, start, end)
    except AudioDecodeError as exc:
        # The message names the upload as the client knows it, not the server's temporary file.
        message = str(exc).replace(f"'{path}'", repr(name)).replace(str(path), repr(name))
        raise AudioDecodeError(message) from None
