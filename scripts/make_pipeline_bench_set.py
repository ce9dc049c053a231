"""Write the file set used by `vela-search bench pipeline` in docs/benchmarks.md.

24 clips of 10 s at 44.1 kHz (tone + noise, alternating Ogg Vorbis and FLAC) and one 120 s FLAC: decoding
(resampling, Vorbis) is real work, and the long file exercises windowing.

Usage: python scripts/make_pipeline_bench_set.py OUT_DIR [COPIES]

COPIES > 1 adds copies of the set at lower volumes (c1-*, c2-*, ...: other content, so they are embedded,
not recorded as duplicates), for runs long enough to amortise a fixed start-up (`bench pipeline --ray`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from audio_factory import noise, tone, write_audio  # noqa: E402


def main(out: Path, copies: int = 1) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        prefix, gain = (f"c{copy}-" if copy else ""), 1.0 - 0.05 * copy
        for i in range(24):
            wave = tone(10.0, sr=44100, freq=200 + 20 * i) * 0.5 + noise(10.0, sr=44100, seed=i)
            write_audio(out / f"{prefix}clip{i:02d}.{'ogg' if i % 2 else 'flac'}", wave * gain, 44100)
        wave = tone(120.0, sr=44100, freq=330) * 0.5 + noise(120.0, sr=44100, seed=99)
        write_audio(out / f"{prefix}long.flac", wave * gain, 44100)


if __name__ == "__main__":
    main(
        Path(sys.argv[1] if len(sys.argv) > 1 else "pipeline-bench"),
        int(sys.argv[2]) if len(sys.argv) > 2 else 1,
    )
