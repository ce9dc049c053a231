"""The speed benchmark: fast path equals the naive loop, report fields, FLOP formula, GPU-image imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vela_search.bench.flops import encoder_flops, item_flops, peak_tflops_for
from vela_search.bench.speed import PARITY_TOLERANCE_FP32, SpeedConfig, run_speed_benchmark
from vela_search.bench.synthetic import PAPER_PREFIX_TOKENS, paper_demo_set, synthetic_clip, synthetic_queries
from vela_search.embedding.shapes import SHAPES
from vela_search.errors import VelaError

REPO = Path(__file__).resolve().parents[2]


def small_config(**overrides) -> SpeedConfig:
    base = dict(
        model="tiny",
        device="cpu",
        demos=("default",),
        clip_seconds=(0.5, 2.0),
        clips=2,
        naive_clips=2,
        queries=2,
        naive_queries=1,
        search_vectors=500,
        search_k=5,
    )
    return SpeedConfig(**{**base, **overrides})


def test_fast_path_equals_naive_loop_and_report_is_complete(tiny_model_dir):
    # 10**12 search vectors do not fit: the search is skipped with the reason, the rest is kept.
    report = run_speed_benchmark(small_config(demos=("default",), search_vectors=10**12))
    assert report.parity_ok is True
    (run,) = report.runs
    assert run.demos == "default" and run.n_demos == 81 and run.prefix_tokens > 1000
    for run in report.runs:
        assert run.parity_tolerance == PARITY_TOLERANCE_FP32 and run.parity_ok is True
        assert [clip.clip_seconds for clip in run.audio] == [0.5, 2.0]
        for clip in run.audio:
            assert clip.skipped is None
            assert clip.clips_per_s > 0 and clip.naive_clips_per_s > 0
            assert clip.speedup_vs_naive == pytest.approx(clip.clips_per_s / clip.naive_clips_per_s)
            assert clip.parity_max_abs_diff < PARITY_TOLERANCE_FP32
            assert clip.parity_min_cosine > 1 - 1e-5
            assert 0 < clip.flops_per_clip < clip.naive_flops_per_clip
            assert clip.fraction_of_peak is None  # CPU: no peak table entry
        assert run.audio[0].item_tokens < run.audio[1].item_tokens  # 25 audio tokens per second
        assert run.text.latency_ms_median > 0 and run.text.parity_max_abs_diff < PARITY_TOLERANCE_FP32
        # CPU: no CUDA graphs, so no second (eager) latency to compare with.
        assert run.text.query_graphs["enabled"] is False and run.text.eager_latency_ms_median is None
    assert report.search is None and "fewer --search-vectors" in report.search_skipped
    assert report.device == "cpu" and report.dtype == "fp32" and report.notice
    json.dumps(report.to_dict())  # JSON-able as written by --json


def test_paper_size_prefix_without_faiss_librosa_or_soundfile(tiny_model_dir, tmp_path):
    """The GPU image has none of these: the speed path, paper demos included, must not need them.

    A 30 s clip (~775 tokens) does not fit behind the ~7.9k-token prefix: it is reported as skipped.
    """
    out = tmp_path / "report.json"
    code = textwrap.dedent(
        f"""
        import json, sys
        for name in ("faiss", "librosa", "soundfile", "soxr"):
            sys.modules[name] = None  # any import of them now fails
        import vela_search.cli.bench_cmd  # the command module must import too
        from vela_search.bench.speed import SpeedConfig, run_speed_benchmark
        report = run_speed_benchmark(SpeedConfig(
            model="tiny", device="cpu", demos=("paper",), clip_seconds=(2.0, 30.0), clips=2, naive_clips=1,
            queries=1, naive_queries=0, search_vectors=200))
        assert not any(sys.modules.get(m) for m in ("faiss", "librosa", "soundfile", "soxr"))
        open({str(out)!r}, "w").write(json.dumps(report.to_dict()))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert (run["n_demos"], run["n_audio_demos"]) == (100, 35)
    assert 7000 < run["prefix_tokens"] <= PAPER_PREFIX_TOKENS
    assert run["parity_ok"] is True
    fits, too_long = run["audio"]
    assert fits["skipped"] is None and fits["parity_max_abs_diff"] < PARITY_TOLERANCE_FP32
    assert too_long["clips_per_s"] is None and "does not fit" in too_long["skipped"]
    search = report["search"]
    assert search["faiss_latency_ms_median"] is None and "not installed" in search["faiss_note"]


def test_paper_demo_wavs_decode_to_the_in_memory_waveforms(tmp_path):
    import soundfile as sf

    demos, waves = paper_demo_set(tmp_path)
    assert (len(demos), demos.n_audio, demos.n_text) == (100, 35, 65)
    for demo in demos.demos:
        if demo.is_audio:
            decoded, rate = sf.read(demo.audio, dtype="float32")
            assert rate == 16_000 and len(decoded) == 5 * 16_000
            np.testing.assert_array_equal(decoded, waves[demo.audio])
    shorter, _ = paper_demo_set(tmp_path / "short", max_words=4)
    assert all(len(d.text.split()) <= 4 for d in shorter.demos if not d.is_audio)


def test_synthetic_inputs_are_deterministic():
    a, b = synthetic_clip(1.5, seed=3), synthetic_clip(1.5, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and len(a) == 24_000 and np.abs(a).max() <= 1.0
    assert not np.array_equal(a, synthetic_clip(1.5, seed=4))
    assert synthetic_queries(5, seed=1) == synthetic_queries(5, seed=1)
    assert all(8 <= len(q.split()) <= 16 for q in synthetic_queries(20, seed=2))


# ---------------------------------------------------------------------------------------------- FLOPs
def _config(shape) -> SimpleNamespace:
    text = SimpleNamespace(
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        intermediate_size=shape.intermediate_size,
    )
    audio = SimpleNamespace(
        d_model=shape.encoder_d_model,
        num_mel_bins=shape.num_mel_bins,
        encoder_layers=shape.encoder_layers,
        encoder_ffn_dim=shape.encoder_ffn_dim,
    )
    return SimpleNamespace(text_config=text, audio_config=audio)


def test_item_flops_by_hand():
    text = SimpleNamespace(
        hidden_size=8, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=16
    )
    audio = SimpleNamespace(d_model=4, num_mel_bins=2, encoder_layers=1, encoder_ffn_dim=8)
    config = SimpleNamespace(text_config=text, audio_config=audio)
    flops = item_flops(config, prefix_tokens=10, item_tokens=3, audio_samples=None)
    # per layer: q 8x8, k 8x4, v 8x4, o 8x8, mlp 3x8x16 = 64+32+32+64+384 = 576 weights
    assert flops["llm_linear"] == 2 * 2 * 576 * 3
    assert flops["llm_attention"] == 4 * 8 * 2 * (10 * 3 + 3 * 4 / 2)
    assert flops["encoder"] == 0 and flops["total"] == flops["llm_linear"] + flops["llm_attention"]
    # 0.1 s: 10 mel frames -> 5 encoder positions -> 2 audio tokens
    enc = encoder_flops(audio, 8, 1600)
    conv = 2 * 3 * (2 * 4 * 10 + 4 * 4 * 5)
    layer = 2 * 5 * (4 * 16 + 2 * 4 * 8) + 4 * 4 * 25
    assert enc == conv + layer + 2 * 2 * 4 * 8
    assert encoder_flops(audio, 8, 1600, stock=True) == encoder_flops(audio, 8, 30 * 16_000)


def test_item_flops_of_the_7b_shape_match_the_known_floor():
    """~5.7 TFLOP per 10 s clip behind the ~7.9k-token prefix (platform notes), within the formula's scope."""
    config = _config(SHAPES["qwen2-audio-7b"])
    flops = item_flops(config, prefix_tokens=7870, item_tokens=265, audio_samples=160_000)
    assert 5.0e12 < flops["total"] < 5.8e12
    assert flops["llm_linear"] == pytest.approx(2 * 6.476e9 * 265, rel=1e-3)


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_peak_table(name, peak):
    assert peak_tflops_for(name)[0] == peak


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"clip_seconds": (31.0,)}, "clip-seconds"),
        ({"clip_seconds": ()}, "clip-seconds"),
        ({"demos": ()}, "demos"),
        ({"clips": 0}, "clips"),
        ({"naive_clips": -1}, "naive-clips"),
        ({"search_vectors": -5}, "search-vectors"),
        ({"peak_tflops": 0.0}, "peak-tflops"),
    ],
)
def test_invalid_settings_are_refused_before_loading(overrides, message):
    with pytest.raises(VelaError, match=message):
        run_speed_benchmark(small_config(model="no/such-model", **overrides))
