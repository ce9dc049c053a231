"""Audio payload digests: a tag edit keeps a file's payload digest, an audio edit changes it, and formats
without a payload (or a damaged structure) have none."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from audio_factory import noise, tone, write_audio, write_pyav

from vela_search.audio.payload import digest_file


def _retag_wav(path: Path, description: bytes) -> None:
    """Append a bext chunk (a BWF description edit) and fix the RIFF size."""
    body = description.ljust(602, b"\0")
    data = bytearray(path.read_bytes()) + b"bext" + struct.pack("<I", len(body)) + body
    struct.pack_into("<I", data, 4, len(data) - 8)
    path.write_bytes(bytes(data))


def _retag(path: Path, **tags: str) -> None:
    import mutagen

    audio = mutagen.File(str(path))
    if audio.tags is None:
        audio.add_tags()
    for key, value in tags.items():
        audio[key] = value
    audio.save()


def _retag_mp3(path: Path, title: str) -> None:
    from mutagen.id3 import ID3, TIT2

    tags = ID3()
    tags.add(TIT2(encoding=3, text=title))
    tags.save(str(path))


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "m4a", "aiff"])
def test_a_tag_edit_keeps_the_payload_digest_and_an_audio_edit_changes_it(tmp_path: Path, ext: str) -> None:
    write = write_pyav if ext == "m4a" else write_audio
    path = write(tmp_path / f"a.{ext}", tone(0.5), 16000)
    whole, audio = digest_file(path)
    assert audio is not None
    if ext == "wav":
        _retag_wav(path, b"a creaking door")
    elif ext == "mp3":
        _retag_mp3(path, "Creaking Door")
    elif ext == "m4a":
        _retag(path, **{"\xa9nam": "Creaking Door"})
    elif ext == "aiff":
        data = bytearray(path.read_bytes()) + b"NAME" + struct.pack(">I", 4) + b"door"
        struct.pack_into(">I", data, 4, len(data) - 8)
        path.write_bytes(bytes(data))
    else:
        _retag(path, DESCRIPTION="a creaking door")
    retagged_whole, retagged_audio = digest_file(path)
    assert retagged_whole != whole and retagged_audio == audio
    other = write(tmp_path / f"b.{ext}", noise(0.5, seed=3), 16000)
    assert digest_file(other)[1] != audio


def test_ogg_and_damaged_files_have_no_payload_digest(tmp_path: Path) -> None:
    ogg = write_audio(tmp_path / "a.ogg", tone(0.5), 16000)
    assert digest_file(ogg)[1] is None
    wav = write_audio(tmp_path / "a.wav", tone(0.5), 16000)
    wav.write_bytes(wav.read_bytes()[:30])  # cut inside the fmt chunk: no data chunk
    assert digest_file(wav)[1] is None
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"")
    assert digest_file(junk)[1] is None
