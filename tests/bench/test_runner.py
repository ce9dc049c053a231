"""The retrieval benchmark runner on small synthetic datasets in the official layouts (tiny model, CPU)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vela_search.bench.datasets import PAPER_RESULTS, load_audiocaps, load_clotho
from vela_search.bench.metrics import modality_gap, retrieval_metrics
from vela_search.bench.runner import index_vectors, run_retrieval_benchmark
from vela_search.errors import DatasetError

from .dataset_factory import clotho_file_name, make_audiocaps, make_clotho, write_tone, youtube_id

METRIC_KEYS = {
    f"{d}_{m}" for d in ("t2a", "a2t") for m in ("R@1", "R@5", "R@10", "mAP@10", "median_rank", "mean_rank")
}


def test_clotho_scores_equal_an_independent_computation(tmp_path, tiny_embedder):
    dataset = load_clotho(make_clotho(tmp_path, 4, seconds=0.5))
    stages: list[tuple[str, int, int]] = []
    report = run_retrieval_benchmark(dataset, tiny_embedder, progress=lambda *a: stages.append(a))

    assert (report.dataset, report.split) == ("clotho", "evaluation")
    assert (report.n_clips, report.n_captions, report.n_missing, report.n_unreadable) == (4, 20, 0, 0)
    assert set(report.metrics) == METRIC_KEYS
    assert report.paper == PAPER_RESULTS["clotho"]
    assert report.fingerprint == tiny_embedder.fingerprint.to_dict()
    assert report.notice == tiny_embedder.notice
    assert report.clips_per_s > 0 and report.captions_per_s > 0
    assert stages[-1] == ("captions", 20, 20) and ("audio", 4, 4) in stages

    audio = tiny_embedder.embed_audio(dataset.audio_paths)
    text = tiny_embedder.embed_text(dataset.captions)
    expected = retrieval_metrics(text @ audio.T, dataset.caption_to_audio)
    assert report.metrics == pytest.approx(expected)
    assert report.modality_gap == pytest.approx(modality_gap(audio, text), abs=1e-6)


def test_audiocaps_missing_clips_are_counted_and_excluded(tmp_path, tiny_embedder):
    dataset = load_audiocaps(make_audiocaps(tmp_path, 4, n_missing=1, seconds=0.5))
    report = run_retrieval_benchmark(dataset, tiny_embedder)
    assert (report.n_clips, report.n_captions, report.n_missing) == (3, 15, 1)
    assert report.missing == [youtube_id(3)]
    assert report.paper == PAPER_RESULTS["audiocaps"]


def test_unreadable_clip_is_left_out_with_its_captions(tmp_path, tiny_embedder):
    root = make_clotho(tmp_path, 4, seconds=0.5)
    (root / "evaluation" / clotho_file_name(1)).write_bytes(b"RIFF\x00\x00 this is not audio")
    report = run_retrieval_benchmark(load_clotho(root), tiny_embedder)
    assert (report.n_clips, report.n_captions, report.n_unreadable) == (3, 15, 1)
    assert list(report.unreadable) == [clotho_file_name(1)]
    assert report.unreadable[clotho_file_name(1)]  # the decoder's reason


def test_every_clip_unreadable_is_a_dataset_error(tmp_path, tiny_embedder):
    root = make_clotho(tmp_path, 2, seconds=0.5)
    for i in range(2):
        (root / "evaluation" / clotho_file_name(i)).write_bytes(b"not audio at all")
    with pytest.raises(DatasetError, match="could be decoded"):
        run_retrieval_benchmark(load_clotho(root), tiny_embedder)


def test_clip_over_30_s_is_embedded_on_its_first_30_s(tmp_path, tiny_embedder):
    root = make_clotho(tmp_path, 2, seconds=0.5)
    long_clip = root / "evaluation" / clotho_file_name(0)
    write_tone(long_clip, 0, seconds=31.0)
    report = run_retrieval_benchmark(load_clotho(root), tiny_embedder)
    assert report.n_truncated == 1 and report.n_clips == 2

    from vela_search.audio import decode_audio

    first_30 = decode_audio(long_clip)[: 30 * 16_000]
    audio = tiny_embedder.embed_audio([first_30, root / "evaluation" / clotho_file_name(1)])
    text = tiny_embedder.embed_text(load_clotho(root).captions)
    assert report.modality_gap == pytest.approx(modality_gap(audio, text), abs=1e-6)


# ---------------------------------------------------------------------------------------- index reuse
def _build_index(root, embedder, paths, vectors, *, segments=None, fingerprint=None):
    """An index holding one whole-file segment per path (``segments[i]`` > 1 adds more windows)."""
    from vela_search.store import AudioIndex

    fingerprint = fingerprint or embedder.fingerprint.to_dict()
    index = AudioIndex.create(root, fingerprint=fingerprint, dim=embedder.dim)
    segments = segments or [1] * len(paths)
    with index.writer(fingerprint=fingerprint) as writer:
        for path, vector, count in zip(paths, vectors, segments, strict=True):
            where = os.path.abspath(path)
            rows = [{"path": where, "start_s": 5.0 * s, "end_s": 5.0 * s + 10} for s in range(count)]
            writer.add(np.repeat(vector[None], count, axis=0), rows)
            writer.put_files([{"path": where, "status": "indexed", "segments": count}])
        writer.commit()
    index.close()
    return AudioIndex.open(root)


def test_index_vectors_take_whole_file_segments_of_a_matching_index(tmp_path, tiny_embedder):
    dataset = load_clotho(make_clotho(tmp_path / "data", 3, seconds=0.5))
    stored = np.eye(3, tiny_embedder.dim, dtype=np.float32)
    index = _build_index(tmp_path / "idx", tiny_embedder, dataset.audio_paths, stored, segments=[1, 2, 1])
    try:
        found = index_vectors(index, tiny_embedder.fingerprint.to_dict(), dataset.audio_paths)
    finally:
        index.close()
    assert sorted(found) == [0, 2]  # clip 1 has two windows: not one whole-file vector
    np.testing.assert_allclose(found[0], stored[0])
    np.testing.assert_allclose(found[2], stored[2])


def test_index_with_another_fingerprint_is_not_used(tmp_path, tiny_embedder):
    dataset = load_clotho(make_clotho(tmp_path / "data", 2, seconds=0.5))
    other = dict(tiny_embedder.fingerprint.to_dict(), demos="another-demo-set")
    stored = np.eye(2, tiny_embedder.dim, dtype=np.float32)
    index = _build_index(tmp_path / "idx", tiny_embedder, dataset.audio_paths, stored, fingerprint=other)
    try:
        assert index_vectors(index, tiny_embedder.fingerprint.to_dict(), dataset.audio_paths) == {}
        report = run_retrieval_benchmark(dataset, tiny_embedder, index=index)
    finally:
        index.close()
    assert report.n_from_index == 0 and report.clips_per_s is not None


def test_runner_reuses_index_vectors(tmp_path, tiny_embedder):
    dataset = load_clotho(make_clotho(tmp_path / "data", 3, seconds=0.5))
    audio = tiny_embedder.embed_audio(dataset.audio_paths)
    index = _build_index(tmp_path / "idx", tiny_embedder, dataset.audio_paths, audio)
    try:
        report = run_retrieval_benchmark(dataset, tiny_embedder, index=index)
    finally:
        index.close()
    assert report.n_from_index == 3
    assert report.clips_per_s is None  # nothing was embedded
    text = tiny_embedder.embed_text(dataset.captions)
    stored = audio.astype(np.float16).astype(np.float32)  # the index keeps fp16
    expected = retrieval_metrics(text @ stored.T, dataset.caption_to_audio)
    assert report.metrics == pytest.approx(expected)
