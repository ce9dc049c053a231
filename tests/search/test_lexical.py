"""The lexical index across a crash: an index run killed with SIGKILL (and a lexical build that died
half-way) leaves words and vectors that, after a rerun, answer like a clean run's."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import mutagen
import pytest
from audio_factory import noise, tone, write_audio
from indexing.helpers import cli_command, cli_env, generation, wait_for

from vela_search.indexing import index_paths
from vela_search.search import QueryRequest, Searcher, run_query
from vela_search.search.lexical import LEXICAL_DIR, LexicalIndex
from vela_search.store import AudioIndex

TINY = ["--model", "tiny", "--demos", "none", "--device", "cpu"]
ANIMALS = ("owl", "frog", "cricket", "wolf", "heron", "toad")
PLACES = ("marsh", "forest", "harbour", "canyon")


@pytest.fixture(scope="module")
def emb(tiny_model_dir):
    """The embedder that ``--model tiny --demos none`` loads (same fingerprint)."""
    from vela_search.embedding.embedder import VelaEmbedder

    return VelaEmbedder.from_pretrained("tiny", demos="none", device="cpu")


def _collection(directory: Path, n: int) -> None:
    directory.mkdir()
    for i in range(n):
        wave = tone(1.0, freq=200.0 + 37.0 * i) + noise(1.0, seed=i, amplitude=0.01)
        path = write_audio(directory / f"clip{i:03d}.flac", wave, 16000)
        audio = mutagen.File(str(path))
        audio["DESCRIPTION"] = f"{ANIMALS[i % 6]} calling near the {PLACES[i % 4]} take {i}"
        audio.save()


def _answers(index_dir: Path, emb) -> list[list[tuple[str, float]]]:  # noqa: ANN001
    out = []
    with AudioIndex.open(index_dir) as idx:
        searcher = Searcher(idx, emb)
        for text, mode, where in [
            ("owl marsh", "words", ()),
            ("heron", "hybrid", ()),
            ("frog calling", "caption", ()),
            ("calling", "words", ("description~forest",)),
        ]:
            hits = run_query(searcher, QueryRequest(text=text, mode=mode, where=where, k=8))
            out.append([(Path(h.path).name, round(h.score, 5)) for h in hits])
    return out


def test_kill_9_mid_run_then_rerun_answers_like_a_clean_run(tmp_path: Path, emb) -> None:
    audio, idx = tmp_path / "audio", tmp_path / "idx"
    _collection(audio, 16)
    with open(tmp_path / "log.txt", "wb") as log:
        proc = subprocess.Popen(
            cli_command("index", str(audio), "--index", str(idx), *TINY, "--commit-every", "1"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
        try:
            wait_for(lambda: generation(idx) >= 2, 180, "two commits", proc)
            with AudioIndex.open(idx) as partial:  # a reader builds the words of a partial generation
                built = LexicalIndex.for_index(partial)
                assert 0 < built.num_files < 16
            assert proc.poll() is None, "the run ended before it could be killed; make it longer"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # A lexical build killed half-way leaves a temporary folder of a dead process behind.
    stray = idx / LEXICAL_DIR / ".tmp-999999-deadbeef"
    stray.mkdir()
    (stray / "meta.json").write_text("{not json")

    index_paths([audio], idx, emb)
    index_paths([audio], tmp_path / "clean", emb)
    assert _answers(idx, emb) == _answers(tmp_path / "clean", emb)
    assert not stray.exists()
    with AudioIndex.open(idx) as final:
        assert LexicalIndex.for_index(final).num_files == 16
