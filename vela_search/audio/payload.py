"""The audio payload of a file: its bytes without the metadata tags, digested beside the whole file.

A tag edit (a BWF description, an ID3 title) changes a file's bytes but not its sound. The indexer keys
content by the whole file's sha256; it also records a digest of the *audio payload* so that a file whose
whole digest changed but whose payload did not keeps its vectors and only has its words read again.

The payload is found from the container's structure, reading headers only:

- RIFF/RF64/BW64 WAV: the ``fmt `` and ``data`` chunks (``bext``, ``iXML``, ``LIST``/INFO, ``id3 `` and
  every other chunk left out); AIFF/AIFC: ``COMM`` and ``SSND``;
- MP3: the bytes between the leading ID3v2 tag(s) and the trailing APEv2/ID3v1 tags;
- FLAC: the STREAMINFO block and the audio frames after the last metadata block;
- MP4/M4A: the ``mdat`` boxes.

Other formats (Ogg, whose comment edits re-page the stream, among them) and files whose structure does not
parse have no payload digest: a change of their bytes re-embeds them, as before. Both digests are taken in
one pass over the file.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import BinaryIO

__all__ = ["digest_file", "payload_ranges"]

_BLOCK = 1 << 20
Ranges = list[tuple[int, int]]


def digest_file(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """The hex sha256 of the whole file and of its audio payload (None where the format has none).

    Raises:
        OSError: the file cannot be read.
    """
    whole = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            ranges = payload_ranges(fh, size, str(path))
        except (struct.error, ValueError):
            ranges = None
        fh.seek(0)
        audio = hashlib.sha256() if ranges else None
        pending = list(ranges or ())
        offset = 0
        while block := fh.read(_BLOCK):
            whole.update(block)
            end = offset + len(block)
            while audio is not None and pending and pending[0][0] < end:
                start, stop = pending[0]
                audio.update(block[max(start, offset) - offset : min(stop, end) - offset])
                if stop > end:
                    break
                pending.pop(0)
            offset = end
    return whole.hexdigest(), audio.hexdigest() if audio is not None else None


def payload_ranges(fh: BinaryIO, size: int, name: str = "") -> Ranges | None:
    """Sorted ``(start, end)`` byte ranges of the audio payload of an open file, or None.

    Raises:
        struct.error, ValueError: a damaged structure (the caller treats it as no payload).
    """
    fh.seek(0)
    head = fh.read(12)
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return _chunks(fh, size, "<", {b"fmt ", b"data"}, rf64=head[:4] != b"RIFF")
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _chunks(fh, size, ">", {b"COMM", b"SSND"}, rf64=False)
    if head[4:8] == b"ftyp":
        return _boxes(fh, size)
    start = _skip_id3v2(fh)
    fh.seek(start)
    if fh.read(4) == b"fLaC":
        return _flac(fh, size, start + 4)
    if name.lower().endswith(".mp3"):
        end = _strip_tail_tags(fh, size)
        return [(start, end)] if end > start else None
    return None


def _chunks(fh: BinaryIO, size: int, order: str, keep: set[bytes], *, rf64: bool) -> Ranges | None:
    """The contents of the ``keep`` chunks of a RIFF/AIFF file (RF64: the data size from ``ds64``)."""
    out: Ranges = []
    found: set[bytes] = set()
    pos, data_size = 12, None
    while pos + 8 <= size:
        fh.seek(pos)
        cid, length = struct.unpack(order + "4sI", fh.read(8))
        if cid == b"ds64":
            data_size = struct.unpack("<Q", fh.read(16)[8:16])[0]
        if rf64 and cid == b"data" and length == 0xFFFFFFFF:
            if data_size is None:
                raise ValueError("RF64 data chunk without ds64")
            length = data_size
        if cid in keep:
            found.add(cid)
            out.append((pos + 8, min(pos + 8 + length, size)))
        pos += 8 + length + (length & 1)
    return out if found == keep else None


def _boxes(fh: BinaryIO, size: int) -> Ranges | None:
    """The contents of an MP4 file's top-level ``mdat`` boxes."""
    out: Ranges = []
    pos = 0
    while pos + 8 <= size:
        fh.seek(pos)
        length, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if length == 1:
            length, header = struct.unpack(">Q", fh.read(8))[0], 16
        elif length == 0:
            length = size - pos
        if length < header:
            raise ValueError("bad MP4 box size")
        if kind == b"mdat":
            out.append((pos + header, min(pos + length, size)))
        pos += length
    return out or None


def _skip_id3v2(fh: BinaryIO) -> int:
    """The offset after the ID3v2 tag(s) at the start of a file (0 if none)."""
    pos = 0
    while True:
        fh.seek(pos)
        head = fh.read(10)
        if len(head) < 10 or head[:3] != b"ID3":
            return pos
        body = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        pos += 10 + body + (10 if head[5] & 0x10 else 0)


def _strip_tail_tags(fh: BinaryIO, size: int) -> int:
    """The end of an MP3 stream: before a trailing ID3v1 tag and an APEv2 tag."""
    end = size
    if end >= 128:
        fh.seek(end - 128)
        if fh.read(3) == b"TAG":
            end -= 128
    if end >= 32:
        fh.seek(end - 32)
        footer = fh.read(32)
        if footer[:8] == b"APETAGEX":
            length, _items, flags = struct.unpack("<III", footer[12:24])
            end -= length + (32 if flags & 0x80000000 else 0)
    return max(end, 0)


def _flac(fh: BinaryIO, size: int, pos: int) -> Ranges | None:
    """STREAMINFO and the frames after the last metadata block of a FLAC stream starting at ``pos``."""
    out: Ranges = []
    while pos + 4 <= size:
        fh.seek(pos)
        header = fh.read(4)
        kind, length = header[0] & 0x7F, int.from_bytes(header[1:4], "big")
        if kind == 0:
            out.append((pos + 4, pos + 4 + length))
        pos += 4 + length
        if header[0] & 0x80:
            out.append((pos, size))
            return out if len(out) == 2 else None
    return None
