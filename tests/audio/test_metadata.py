"""Words read from files the tests write: BWF bext + iXML, RIFF INFO, ID3, Vorbis comments, MP4 tags,
hostile metadata, and UCS file names."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from audio_factory import tone, write_audio, write_pyav

from vela_search.audio.decode import decode_audio
from vela_search.audio.metadata import MAX_FIELD_CHARS, read_words, words_from_json
from vela_search.audio.ucs import name_fields


def _chunk(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def bext_chunk(description: bytes, originator: bytes) -> bytes:
    """A bext chunk (EBU 3285 v1): fixed fields, then an empty coding history."""
    body = description.ljust(256, b"\0")[:256] + originator.ljust(32, b"\0")[:32]
    body += b"REF123".ljust(32, b"\0") + b"2024-05-01" + b"12:00:00" + struct.pack("<Q", 0)
    body += struct.pack("<H", 1) + b"\0" * 64 + b"\0" * 10 + b"\0" * 180
    return _chunk(b"bext", body)


def info_chunk(**fields: bytes) -> bytes:
    """A LIST/INFO chunk, e.g. ``info_chunk(ICMT=b"comment", INAM=b"title")``."""
    return _chunk(b"LIST", b"INFO" + b"".join(_chunk(k.encode(), v + b"\0") for k, v in fields.items()))


def add_riff_chunks(path: Path, *chunks: bytes, declared_extra: int = 0) -> Path:
    """Append chunks to a WAV file and fix the RIFF size (``declared_extra``: lie about the last chunk)."""
    data = bytearray(path.read_bytes()) + b"".join(chunks)
    if declared_extra:
        last = len(data) - len(chunks[-1])
        size = struct.unpack_from("<I", data, last + 4)[0]
        struct.pack_into("<I", data, last + 4, size + declared_extra)
    struct.pack_into("<I", data, 4, len(data) - 8)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    return write_audio(tmp_path / "DOORWood_Creak Slow_ACME_Take3.wav", tone(0.5), 16000)


def test_bwf_bext_and_ixml(wav: Path) -> None:
    ixml = b"<BWFXML><PROJECT>Harbour Nights</PROJECT><SCENE>12</SCENE><TAKE>3</TAKE>"
    ixml += b"<NOTE>Schoeps MK4 close</NOTE></BWFXML>"
    add_riff_chunks(wav, bext_chunk(b"old oak door creaks slowly", b"Jane Recordist"), _chunk(b"iXML", ixml))
    words = read_words(str(wav))
    assert words.fields["description"] == "old oak door creaks slowly"
    assert words.fields["originator"] == "Jane Recordist"
    assert words.fields["project"] == "Harbour Nights"
    assert words.fields["note"] == "Schoeps MK4 close"
    assert words.fields["category"] == "DOOR" and words.fields["subcategory"] == "Wood"
    assert words.fields["library"] == "ACME" and words.fields["fx_name"] == "Creak Slow"
    assert not words.warnings
    assert words_from_json(words.to_json()) == words.fields


def test_riff_info(wav: Path) -> None:
    add_riff_chunks(wav, info_chunk(ICMT=b"gravel footsteps", INAM=b"Walk Gravel"))
    fields = read_words(str(wav)).fields
    assert fields["comment"] == "gravel footsteps"
    assert "Walk Gravel" in fields.values()


def test_id3_in_mp3(tmp_path: Path) -> None:
    from mutagen.id3 import COMM, ID3, TALB, TIT2, TXXX

    path = write_audio(tmp_path / "x.mp3", tone(0.5), 16000)
    tags = ID3()
    tags.add(TIT2(encoding=3, text="Thunder Close"))
    tags.add(TALB(encoding=3, text="Storm Library"))
    tags.add(COMM(encoding=3, lang="eng", desc="", text="rolling thunder over hills"))
    tags.add(TXXX(encoding=3, desc="Microphone", text="MKH 416"))
    tags.save(str(path))
    fields = read_words(str(path)).fields
    assert fields["title"] == "Thunder Close"
    assert fields["album"] == "Storm Library"
    assert fields["comment"] == "rolling thunder over hills"
    assert fields["microphone"] == "MKH 416"


@pytest.mark.parametrize("ext", ["ogg", "flac"])
def test_vorbis_comments(tmp_path: Path, ext: str) -> None:
    import mutagen

    path = write_audio(tmp_path / f"x.{ext}", tone(0.5), 16000)
    audio = mutagen.File(str(path))
    audio["DESCRIPTION"] = "rain on a tin roof"
    audio["LIBRARY"] = "Wet Sounds"
    audio.save()
    fields = read_words(str(path)).fields
    assert fields["description"] == "rain on a tin roof"
    assert fields["library"] == "Wet Sounds"


def test_mp4_tags(tmp_path: Path) -> None:
    from mutagen.mp4 import MP4

    path = write_pyav(tmp_path / "x.m4a", tone(0.5), 16000)
    audio = MP4(str(path))
    audio["\xa9nam"] = "Crowd Cheer"
    audio["\xa9cmt"] = "stadium crowd cheering"
    audio.save()
    fields = read_words(str(path)).fields
    assert fields["title"] == "Crowd Cheer"
    assert fields["comment"] == "stadium crowd cheering"


def test_hostile_metadata_is_cut_or_skipped_and_the_audio_still_decodes(tmp_path: Path) -> None:
    huge = write_audio(tmp_path / "huge.wav", tone(0.5), 16000)
    add_riff_chunks(huge, info_chunk(ICMT=b"wind " * 2_000_000))  # a 10 MB comment
    words = read_words(str(huge))
    assert len(words.fields["comment"]) == MAX_FIELD_CHARS
    assert any("cut from" in w for w in words.warnings)

    bad_utf8 = write_audio(tmp_path / "bad.wav", tone(0.5), 16000)
    add_riff_chunks(bad_utf8, bext_chunk(b"caf\xe9 \xff\xfe ambience\x01\x02", b"\xc3\x28"))
    fields = read_words(str(bad_utf8)).fields
    assert "ambience" in fields["description"] and "\x01" not in fields["description"]

    truncated = write_audio(tmp_path / "truncated.wav", tone(0.5), 16000)
    add_riff_chunks(truncated, _chunk(b"iXML", b"<BWFXML><PROJECT>x"), declared_extra=5000)
    junk = write_audio(tmp_path / "junk.wav", tone(0.5), 16000)
    add_riff_chunks(junk, _chunk(b"iXML", bytes(range(256)) * 40), _chunk(b"bext", b"\xff" * 7))
    for path in (truncated, junk):
        words = read_words(str(path))
        assert words.fields["name"]  # the name's words survive whatever the chunks hold
    for path in (huge, bad_utf8, truncated, junk):
        assert len(decode_audio(str(path))) == 8000


def test_binary_junk_in_id3_frames(tmp_path: Path) -> None:
    from mutagen.id3 import ID3, TIT2

    path = write_audio(tmp_path / "x.mp3", tone(0.5), 16000)
    tags = ID3()
    tags.add(TIT2(encoding=3, text="\x00\x07\x1b junk \ud7ff" + "\x00" * 50))
    tags.save(str(path))
    assert read_words(str(path)).fields["title"].startswith("junk")


def test_ucs_names() -> None:
    fields = name_fields("/lib/AMBForst-Night_Crickets Close_BigLib_Summer_st mk4.wav")
    assert fields["category"] == "AMB" and fields["subcategory"] == "Forst"
    assert fields["user_category"] == "Night" and fields["fx_name"] == "Crickets Close"
    assert fields["library"] == "BigLib" and fields["source"] == "Summer"
    plain = name_fields("/lib/my_rainSound-01.wav")
    assert plain == {"name": "my rain Sound 01"}
