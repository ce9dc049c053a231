"""One small index for the service tests, built once per session by `vela-search index`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from audio_factory import tone, write_audio

from .helpers import HTML_NAME, SR, index_command


@pytest.fixture(scope="session")
def serve_collection(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    """Audio (three short tones, a 40 s file cut into windows, a file named with HTML) and its index."""
    base = tmp_path_factory.mktemp("serve")
    audio = base / "audio"
    (audio / "tones").mkdir(parents=True)
    write_audio(audio / "tones" / "t220.wav", tone(3, freq=220), SR)
    write_audio(audio / "tones" / "t660.wav", tone(2, freq=660), SR)
    write_audio(audio / "tones" / "t1320.flac", tone(4, freq=1320), SR)
    write_audio(audio / "long.wav", np.concatenate([tone(10, freq=f) for f in (220, 440, 880, 1760)]), SR)
    write_audio(audio / HTML_NAME, tone(1.5, freq=990), SR)
    index = base / "idx"
    run = subprocess.run(
        index_command("index", str(audio), "--index", str(index), "--model", "tiny", "--demos", "none"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return audio, index
