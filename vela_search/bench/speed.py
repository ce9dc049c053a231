"""Speed benchmark: embedder throughput against the naive Vela loop, FLOP rate, and search latency.

One run loads the model once and, for each demo setting and clip length, measures:

- **clips/s** of the embedder's fast path (``embed_items``: shared demo prefix, length-aware audio encoder,
  token-sized batches) on synthetic audio generated in memory, end to end (feature extraction included);
- the **naive loop** (``embed_naive``: demos + item re-run in one full forward per item, stock encoder) on a
  subset of the same clips, the **ratio** fast/naive, and a **parity check** that both give the same vectors
  (max abs difference; at fp32 it must stay below :data:`PARITY_TOLERANCE_FP32`);
- the **FLOPs per clip** of the fast path (:func:`vela_search.bench.flops.item_flops`) and, on a GPU whose
  peak is known (:data:`vela_search.bench.flops.PEAK_BF16_TFLOPS`), the fraction of the chip's dense bf16
  matrix rate it reaches;
- **text-query latency** (one caption at a time, as a search does), batched text throughput, and the naive
  loop for a few queries.

Then **search latency** over N synthetic unit vectors: an exact top-k with torch (one matmul + topk, fp16 on
a GPU) and, where faiss is installed, the store's FAISS search (``SQfp16``, exact) on the CPU.

Nothing on this path imports faiss, librosa or soundfile unless it is installed and needed, so the benchmark
runs on a bare GPU image (torch + transformers). The paper-size demo prefix (``--demos paper``) uses
synthetic audio demos written with the stdlib ``wave`` module and handed to the embedder from memory.
"""

from __future__ import annotations

import datetime as dt
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vela_search.bench.flops import encoder_flops, item_flops, peak_tflops_for
from vela_search.bench.search_speed import SearchRun, measure_search
from vela_search.bench.synthetic import (
    paper_embedder,
    synthetic_clip,
    synthetic_queries,
)
from vela_search.bench.timing import device_name, dtype_name, percentile, sync, timed
from vela_search.errors import TokenBudgetError, VelaError

__all__ = ["PARITY_TOLERANCE_FP32", "SpeedConfig", "SpeedReport", "measure_search", "run_speed_benchmark"]

SAMPLE_RATE = 16_000
# Fast path vs naive loop at fp32 (CPU): the shared prefix and the length-aware encoder are exact rewrites,
# so only float reassociation separates them.
PARITY_TOLERANCE_FP32 = 1e-4


@dataclass
class SpeedConfig:
    """What ``run_speed_benchmark`` measures, and on what.

    Attributes:
        model: ``tiny``, ``shape:qwen2-audio-7b`` (random weights in the real shapes), a Hub id or a
            directory.
        adapter: Optional LoRA adapter directory.
        demos: Demo settings to measure, each ``default``, ``none``, ``paper`` (synthetic paper-size prefix:
            35 audio demos x 5 s + 65 text demos) or a JSONL file.
        clip_seconds: Clip lengths to measure (each at most 30 s).
        clips: Synthetic clips per measurement of the fast path.
        naive_clips: Clips run through the naive loop (a subset of the same clips; 0 skips it).
        queries: Text queries for the latency measurement.
        naive_queries: Queries run through the naive loop (0 skips it).
        search_vectors: Synthetic vectors for the search latency (0 skips it).
        search_k: Top-k of the search.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
        quantize: ``4bit``, ``8bit`` or None.
        batch_tokens: Suffix tokens per batch (None: the embedder's default for the device).
        peak_tflops: The chip's dense matrix peak in TFLOP/s, overriding
            :data:`~vela_search.bench.flops.PEAK_BF16_TFLOPS`.
        threads: CPU threads for torch (None: torch's default). On a shared machine fewer threads than
            cores avoids OpenMP oversubscription, which can slow small CPU forwards by 10-30x.
        seed: Seed of the synthetic audio, queries and vectors.
    """

    model: str = "tiny"
    adapter: str | None = None
    demos: tuple[str, ...] = ("default",)
    clip_seconds: tuple[float, ...] = (10.0,)
    clips: int = 32
    naive_clips: int = 4
    queries: int = 32
    naive_queries: int = 3
    search_vectors: int = 100_000
    search_k: int = 10
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    batch_tokens: int | None = None
    peak_tflops: float | None = None
    threads: int | None = None
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`VelaError` naming the first invalid setting."""
        if not self.demos:
            raise VelaError("give at least one --demos setting")
        if not self.clip_seconds:
            raise VelaError("give at least one --clip-seconds value")
        for seconds in self.clip_seconds:
            if not 0 < seconds <= 30:
                raise VelaError(f"--clip-seconds must lie in (0, 30] (the encoder reads 30 s), got {seconds}")
        for name in ("clips", "queries"):
            if getattr(self, name) < 1:
                raise VelaError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("naive_clips", "naive_queries", "search_vectors"):
            if getattr(self, name) < 0:
                raise VelaError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.search_k < 1:
            raise VelaError(f"--search-k must be at least 1, got {self.search_k}")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise VelaError(f"--peak-tflops must be positive, got {self.peak_tflops}")
        if self.threads is not None and self.threads < 1:
            raise VelaError(f"--threads must be at least 1, got {self.threads}")


@dataclass
class ClipRun:
    """Audio throughput for one clip length behind one demo prefix.

    ``warmup_s`` is the first pass over one batch, which also computes the demo prefix; ``flops_per_clip``
    and ``naive_flops_per_clip`` follow :func:`vela_search.bench.flops.item_flops`; ``skipped`` holds the
    reason when the clip does not fit behind the prefix (all rates are then None).
    """

    clip_seconds: float
    clips: int
    item_tokens: int
    clips_per_s: float | None = None
    ms_per_clip: float | None = None
    warmup_s: float | None = None
    naive_clips: int = 0
    naive_clips_per_s: float | None = None
    speedup_vs_naive: float | None = None
    parity_max_abs_diff: float | None = None
    parity_min_cosine: float | None = None
    flops_per_clip: float | None = None
    flops_breakdown: dict[str, float] = field(default_factory=dict)
    naive_flops_per_clip: float | None = None
    achieved_tflops: float | None = None
    fraction_of_peak: float | None = None
    skipped: str | None = None


@dataclass
class TextRun:
    """Text-query latency behind one demo prefix.

    ``latency_*`` and ``queries_per_s``: one query per call, as a search does; ``batch_texts_per_s``: all
    queries in one call; ``naive_*``: the naive loop, one query at a time. ``query_graphs``: whether the
    single queries were replayed as CUDA graphs (and which buckets, or why not); when they were,
    ``eager_latency_*`` is the same queries with graphs off, in the same run.
    """

    queries: int
    latency_ms_median: float
    latency_ms_p90: float
    queries_per_s: float
    batch_texts_per_s: float
    query_graphs: dict[str, Any] = field(default_factory=dict)
    eager_latency_ms_median: float | None = None
    eager_latency_ms_p90: float | None = None
    naive_queries: int = 0
    naive_latency_ms_median: float | None = None
    speedup_vs_naive: float | None = None
    parity_max_abs_diff: float | None = None


@dataclass
class DemoRun:
    """Everything measured behind one demo setting."""

    demos: str
    n_demos: int
    n_audio_demos: int
    prefix_tokens: int
    fingerprint: dict[str, Any]
    audio: list[ClipRun]
    text: TextRun | None
    parity_tolerance: float | None
    parity_ok: bool | None


@dataclass
class SpeedReport:
    """The result of :func:`run_speed_benchmark` (``to_dict()`` for JSON)."""

    model: str
    device: str
    device_name: str
    threads: int
    dtype: str
    quantize: str | None
    peak_tflops: float | None
    peak_source: str | None
    runs: list[DemoRun]
    search: SearchRun | None
    search_skipped: str | None
    wall_s: float
    date: str
    versions: dict[str, str]
    notice: str | None
    config: dict[str, Any]

    @property
    def parity_ok(self) -> bool | None:
        """False if an fp32 parity check failed, True if all checked ones passed, None if none was checked."""
        checked = [r.parity_ok for r in self.runs if r.parity_ok is not None]
        return all(checked) if checked else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["parity_ok"] = self.parity_ok
        return out


ProgressCallback = Callable[[str], None]


# ------------------------------------------------------------------------------------------ the runs
def run_speed_benchmark(config: SpeedConfig, *, progress: ProgressCallback | None = None) -> SpeedReport:
    """Load the model once and measure every demo setting, clip length, text queries and search.

    Args:
        config: What to measure.
        progress: Called with a short description before each step.

    Returns:
        The report; ``report.parity_ok`` is False when the fast path's vectors left the fp32 tolerance.

    Raises:
        VelaError: Invalid settings, or the model cannot be loaded (``ModelLoadError``).
    """
    import torch

    from vela_search.embedding.shapes import SHAPE_NOTICE, is_shape_model

    config.validate()
    say = progress or (lambda _msg: None)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    from vela_search.embedding.embedder import VelaEmbedder

    cls = VelaEmbedder
    say(f"loading {config.model}")
    base = cls.from_pretrained(
        config.model,
        adapter=config.adapter,
        demos="none",
        device=config.device,
        dtype=config.dtype,
        quantize=config.quantize,
        batch_tokens=config.batch_tokens,
    )
    backbone = base.backbone
    device = backbone.device
    chip = device_name(device)
    dtype = dtype_name(backbone.dtype)
    peak, peak_source = _peak(config, device, chip, dtype)
    runs = _measure_demo_sets(cls, base, config, peak, say)
    search, search_skipped = _measure_search(config, backbone, say)

    import transformers

    notice = base.notice or (SHAPE_NOTICE if is_shape_model(config.model) else None)
    return SpeedReport(
        model=backbone.model_ref,
        device=str(device),
        device_name=chip,
        threads=torch.get_num_threads(),
        dtype=dtype,
        quantize=backbone.quantization,
        peak_tflops=peak,
        peak_source=peak_source,
        runs=runs,
        search=search,
        search_skipped=search_skipped,
        wall_s=time.perf_counter() - started,
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        versions={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        notice=notice,
        config=asdict(config),
    )


def _peak(config: SpeedConfig, device: Any, chip: str, dtype: str) -> tuple[float | None, str | None]:
    """The chip's peak TFLOP/s for the MFU figure, and where it comes from (None: not known)."""
    if config.peak_tflops is not None:
        return config.peak_tflops, "--peak-tflops"
    if device.type == "cuda" and dtype in ("bf16", "fp16"):
        return peak_tflops_for(chip)
    return None, None


def _measure_demo_sets(
    cls: Any, base: Any, config: SpeedConfig, peak: float | None, say: ProgressCallback
) -> list[DemoRun]:
    """Measure each demo setting of ``config`` with embedders of class ``cls`` on the backbone of ``base``
    (the embedder without demos, loaded once)."""
    import torch

    from vela_search.embedding.demos import DemoSet

    backbone = base.backbone
    runs: list[DemoRun] = []
    with tempfile.TemporaryDirectory(prefix="vela-speed-") as scratch:
        for spec in config.demos:
            if spec == "paper":
                directory = Path(scratch) / "paper-demos"
                emb = paper_embedder(
                    cls, backbone, directory, seed=config.seed, batch_tokens=config.batch_tokens
                )
            elif spec == "none":
                emb = base
            else:
                emb = cls(backbone, DemoSet.load(spec), batch_tokens=config.batch_tokens, demos_spec=spec)
            runs.append(_measure_demos(emb, spec, config, peak, say))
            del emb
            if backbone.device.type == "cuda":
                torch.cuda.empty_cache()
    return runs


def _measure_search(
    config: SpeedConfig, backbone: Any, say: ProgressCallback
) -> tuple[SearchRun | None, str | None]:
    """Search speed over vectors of the model's size, or why it was skipped (both None: not asked)."""
    if not config.search_vectors:
        return None, None
    say(f"search over {config.search_vectors:,} vectors")
    try:
        search = measure_search(
            config.search_vectors,
            backbone.hidden_size,
            config.search_k,
            device=backbone.device,
            seed=config.seed,
        )
    except VelaError as exc:  # too large for this machine: keep the embedding figures
        return None, str(exc)
    return search, None


def _measure_demos(
    emb: Any, spec: str, config: SpeedConfig, peak: float | None, say: ProgressCallback
) -> DemoRun:
    import torch

    from vela_search.embedding.embedder import EmbedItem

    device = emb.backbone.device
    tolerance = PARITY_TOLERANCE_FP32 if emb.backbone.dtype == torch.float32 else None
    say(f"demos {spec}: preparing")
    prefix_tokens = emb.prefix_length
    diffs: list[float] = []

    audio_runs = []
    for seconds in config.clip_seconds:
        say(f"demos {spec}: {seconds:g} s clips")
        clips = [synthetic_clip(seconds, seed=config.seed + i) for i in range(config.clips)]
        items = [EmbedItem("audio", wave=w) for w in clips]
        run = _measure_clips(emb, items, seconds, prefix_tokens, config, peak)
        if run.parity_max_abs_diff is not None:
            diffs.append(run.parity_max_abs_diff)
        audio_runs.append(run)

    say(f"demos {spec}: text queries")
    text = _measure_text(emb, config)
    if text.parity_max_abs_diff is not None:
        diffs.append(text.parity_max_abs_diff)
    sync(device)
    return DemoRun(
        demos=spec,
        n_demos=len(emb.demos),
        n_audio_demos=emb.demos.n_audio,
        prefix_tokens=prefix_tokens,
        fingerprint=emb.fingerprint.to_dict(),
        audio=audio_runs,
        text=text,
        parity_tolerance=tolerance,
        parity_ok=None if tolerance is None or not diffs else max(diffs) < tolerance,
    )


def _measure_clips(
    emb: Any, items: list[Any], seconds: float, prefix_tokens: int, config: SpeedConfig, peak: float | None
) -> ClipRun:
    device = emb.backbone.device
    item_tokens = emb.token_count(items[0])
    run = ClipRun(clip_seconds=seconds, clips=len(items), item_tokens=item_tokens)
    try:
        emb.check_budget(items[:1])
    except TokenBudgetError as exc:
        run.skipped = str(exc)
        return run
    # Warm-up: computes the demo prefix on first use, and lets kernels and the allocator settle.
    _, run.warmup_s = timed(lambda: emb.embed_items(items[: min(len(items), emb.max_batch_items)]), device)
    vectors, elapsed = timed(lambda: emb.embed_items(items), device)
    run.clips_per_s = len(items) / elapsed
    run.ms_per_clip = 1000 * elapsed / len(items)

    cfg = emb.backbone.model.config
    samples = len(items[0].wave)
    flops = item_flops(cfg, prefix_tokens=prefix_tokens, item_tokens=item_tokens, audio_samples=samples)
    run.flops_per_clip = flops["total"]
    run.flops_breakdown = flops
    run.achieved_tflops = flops["total"] * run.clips_per_s / 1e12
    if peak:
        run.fraction_of_peak = run.achieved_tflops / peak
    # The naive loop runs demos and item as one sequence, every audio through the stock 30 s window.
    full = prefix_tokens + item_tokens
    naive = item_flops(cfg, prefix_tokens=0, item_tokens=full, audio_samples=samples, stock_encoder=True)
    demo_encoder = encoder_flops(cfg.audio_config, cfg.text_config.hidden_size, 0, stock=True)
    run.naive_flops_per_clip = naive["total"] + demo_encoder * emb.demos.n_audio

    n_naive = min(config.naive_clips, len(items))
    if n_naive:
        if device.type == "cuda":
            emb.embed_naive(items[:1])  # warm-up: kernels for the full-sequence shapes
        naive_vectors, naive_elapsed = timed(lambda: emb.embed_naive(items[:n_naive]), device)
        run.naive_clips = n_naive
        run.naive_clips_per_s = n_naive / naive_elapsed
        run.speedup_vs_naive = run.clips_per_s / run.naive_clips_per_s
        run.parity_max_abs_diff = float(np.abs(vectors[:n_naive] - naive_vectors).max())
        run.parity_min_cosine = float(np.min(np.sum(vectors[:n_naive] * naive_vectors, axis=1)))
    return run


def _measure_text(emb: Any, config: SpeedConfig) -> TextRun:
    from vela_search.embedding.embedder import EmbedItem

    device = emb.backbone.device
    queries = synthetic_queries(config.queries, seed=config.seed)
    latencies, singles = _query_latencies(emb, queries)
    _, batch_elapsed = timed(lambda: emb.embed_text(queries), device)
    run = TextRun(
        queries=len(queries),
        latency_ms_median=statistics.median(latencies),
        latency_ms_p90=percentile(latencies, 90),
        queries_per_s=1000 * len(latencies) / sum(latencies),
        batch_texts_per_s=len(queries) / batch_elapsed,
        query_graphs=emb.query_graph_state,
    )
    if run.query_graphs["captured_buckets"]:
        emb.query_graphs = False
        try:
            eager, _ = _query_latencies(emb, queries)
        finally:
            emb.query_graphs = True
        run.eager_latency_ms_median = statistics.median(eager)
        run.eager_latency_ms_p90 = percentile(eager, 90)
    n_naive = min(config.naive_queries, len(queries))
    if n_naive:
        items = [EmbedItem("caption", text=q) for q in queries[:n_naive]]
        if device.type == "cuda":
            emb.embed_naive(items[:1])
        naive_ms, naive_rows = [], []
        for item in items:
            row, elapsed = timed(lambda item=item: emb.embed_naive([item]), device)
            naive_ms.append(1000 * elapsed)
            naive_rows.append(row[0])
        run.naive_queries = n_naive
        run.naive_latency_ms_median = statistics.median(naive_ms)
        run.speedup_vs_naive = run.naive_latency_ms_median / run.latency_ms_median
        run.parity_max_abs_diff = float(np.abs(np.stack(singles[:n_naive]) - np.stack(naive_rows)).max())
    return run


def _query_latencies(emb: Any, queries: Sequence[str]) -> tuple[list[float], list[np.ndarray]]:
    """Per-query latency (ms) and vector, one query per call, after warm-up.

    With CUDA graphs on, the warm-up runs every query twice, so that every bucket's graph is captured
    before timing starts (a long-lived searcher's steady state).
    """
    warm_up = [*queries, *queries] if emb.query_graph_state["enabled"] else queries[:2]
    for q in warm_up:
        emb.embed_text([q])
    latencies, vectors = [], []
    for q in queries:
        vector, elapsed = timed(lambda q=q: emb.embed_text([q]), emb.backbone.device)
        latencies.append(1000 * elapsed)
        vectors.append(vector[0])
    return latencies, vectors
