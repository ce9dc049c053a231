"""Demo files: parsing, validation messages, digests."""

from __future__ import annotations

import pytest

from vela_search.embedding.demos import DEFAULT_DEMOS_PATH, DemoSet
from vela_search.errors import DemoFileError


def _write(tmp_path, text: str):
    path = tmp_path / "demos.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_text_and_audio_demos(tmp_path):
    (tmp_path / "clip.wav").write_bytes(b"RIFF")
    path = _write(
        tmp_path, '{"text": "A dog barks", "word": "dog"}\n\n{"audio": "clip.wav", "word": "kettle"}\n'
    )
    demos = DemoSet.from_jsonl(path)
    assert len(demos) == 2 and demos.n_text == 1 and demos.n_audio == 1
    assert demos.demos[1].audio == (tmp_path / "clip.wav").resolve()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok", "word": "dog"}\n{"text": "x", "word": \n', "line 2: not valid JSON"),
        ('{"text": "A dog barks", "word": ""}\n', "line 1: 'word' is missing or empty"),
        ('{"text": "A dog barks", "word": "big dog"}\n', "line 1: 'word' must be one word"),
        ('{"text": "   ", "word": "dog"}\n', "line 1: 'text' is empty"),
        ('{"word": "dog"}\n', "line 1: give exactly one of 'text' or 'audio'"),
        ('{"text": "a", "audio": "a.wav", "word": "dog"}\n', "line 1: give exactly one"),
        ('["dog"]\n', "line 1: expected a JSON object"),
        ('{"audio": "missing.wav", "word": "dog"}\n', "missing.wav does not exist"),
    ],
)
def test_errors_name_the_line(tmp_path, content, message):
    with pytest.raises(DemoFileError, match=message.replace("(", r"\(")):
        DemoSet.from_jsonl(_write(tmp_path, content))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DemoFileError, match="does not exist"):
        DemoSet.from_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DemoFileError, match="holds no demonstrations"):
        DemoSet.from_jsonl(_write(tmp_path, "\n\n"))


def test_digest_follows_content_and_audio_bytes(tmp_path):
    (tmp_path / "clip.wav").write_bytes(b"one")
    path = _write(tmp_path, '{"audio": "clip.wav", "word": "kettle"}\n')
    first = DemoSet.from_jsonl(path).digest
    assert DemoSet.from_jsonl(path).digest == first
    (tmp_path / "clip.wav").write_bytes(b"two")
    assert DemoSet.from_jsonl(path).digest != first
    text_a = DemoSet.from_jsonl(_write(tmp_path, '{"text": "A dog barks", "word": "dog"}\n')).digest
    text_b = DemoSet.from_jsonl(_write(tmp_path, '{"text": "A dog barks", "word": "bark"}\n')).digest
    assert text_a != text_b


def test_specs_resolve():
    assert len(DemoSet.load("none")) == 0
    default = DemoSet.load("default")
    assert DEFAULT_DEMOS_PATH.exists() and len(default) >= 60 and default.n_audio == 0
    assert DemoSet.load(None).digest == default.digest


def test_audio_demo_samples_in_memory_replace_decoding(tiny_embedder, tmp_path):
    import numpy as np

    from vela_search.embedding.demos import Demo
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.errors import AudioDecodeError

    junk = tmp_path / "clip.wav"
    junk.write_bytes(b"not audio at all")
    wave = (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    in_memory = DemoSet(demos=(Demo(word="hum", audio=junk, wave=wave),), source="t")
    vectors = VelaEmbedder(tiny_embedder.backbone, in_memory).embed_text(["a hum"])
    assert vectors.shape == (1, 64)
    from_file = DemoSet(demos=(Demo(word="hum", audio=junk),), source="t")
    with pytest.raises(AudioDecodeError):
        VelaEmbedder(tiny_embedder.backbone, from_file).embed_text(["a hum"])
