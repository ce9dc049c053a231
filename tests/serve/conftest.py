"""One small index for the service tests, built once per session by `vela-search index` (in process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from audio_factory import tone, write_audio
from cli_in_process import vela

from .helpers import HTML_NAME, SR


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
    run = vela("index", str(audio), "--index", str(index), "--model", "tiny", "--demos", "none")
    assert run.returncode == 0, run.stderr
    return audio, index
