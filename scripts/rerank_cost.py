"""Measure what re-ranking costs per candidate: the judge's forward, and decoding a candidate's segment.

The judge part runs ``AudioJudge.judge`` on N synthetic clips of ``--seconds`` each behind one query (a
warm-up call first, then the median of ``--repeat`` calls), next to the time of embedding the query text
alone (what a search without re-ranking spends on the model). The decode part reads N ``--seconds``
segments at spread offsets of a 20-minute FLAC file with ``decode_audio`` (skipped where soundfile is not
installed). Usage (results in docs/benchmarks.md):

    python scripts/rerank_cost.py --model tiny --device cpu --candidates 20
    python scripts/rerank_cost.py --model shape:qwen2-audio-7b --device cuda --candidates 20 --no-decode
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vela_search.embedding.embedder import VelaEmbedder
from vela_search.embedding.judge import AudioJudge, JudgeReference

SR = 16_000
QUERY = "rain on a tin roof, no thunder"


def clips(n: int, seconds: float) -> list[np.ndarray]:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    return [
        (0.3 * np.sin(2 * np.pi * (180 + 37 * i) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        for i in range(n)
    ]


def timed(fn, device: torch.device, repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def decode_cost(n: int, seconds: float) -> float | None:
    """Median seconds to decode one ``seconds`` segment of a 20-minute FLAC file (None: no soundfile)."""
    try:
        import soundfile as sf

        from vela_search.audio import decode_audio
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.flac"
        with sf.SoundFile(path, "w", 44_100, 2, "PCM_16") as f:  # a typical library file: 44.1 kHz stereo
            block = np.random.default_rng(1).standard_normal((44_100 * 60, 2)).astype(np.float32) * 0.1
            for _ in range(20):
                f.write(block)
        starts = np.linspace(0, 20 * 60 - seconds, n)
        times = []
        for start in starts:
            begin = time.perf_counter()
            decode_audio(path, start_s=float(start), end_s=float(start) + seconds)
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantize", default=None)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-decode", action="store_true", help="skip the decode measurement")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    emb = VelaEmbedder.from_pretrained(
        args.model, demos="none", device=args.device, dtype=args.dtype, quantize=args.quantize
    )
    device = emb.backbone.device
    judge = AudioJudge.for_embedder(emb)
    reference = JudgeReference.for_text(QUERY)
    batch = clips(args.candidates, args.seconds)
    judge_s = timed(lambda: judge.judge(reference, batch), device, args.repeat)
    query_s = timed(lambda: emb.embed_text([QUERY]), device, args.repeat)
    decode_s = None if args.no_decode else decode_cost(args.candidates, args.seconds)
    result = {
        "model": args.model,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dtype": str(emb.backbone.dtype).removeprefix("torch."),
        "quantize": args.quantize,
        "candidates": args.candidates,
        "clip_seconds": args.seconds,
        "batch_tokens": judge.batch_tokens,
        "judge_ms_total": 1000 * judge_s,
        "judge_ms_per_candidate": 1000 * judge_s / args.candidates,
        "query_embedding_ms": 1000 * query_s,
        "decode_ms_per_candidate": None if decode_s is None else 1000 * decode_s,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
