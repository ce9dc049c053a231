#!/usr/bin/env python
"""Generate the short synthetic sample clips shipped in ``data/samples/``.

The clips are sound-alikes made from sines, sweeps and shaped noise with a fixed seed, so the folder can be
rebuilt at any time. They exist to exercise the pipeline (mixed formats and sample rates); they are not
recordings.

Usage: python scripts/make_samples.py [--out data/samples]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

SEED = 20_261_126
README = (
    "Synthetic sound-alike clips (not recordings) generated deterministically by scripts/make_samples.py.\n"
)


def _shaped_noise(
    n: int, sr: int, rng: np.random.Generator, gain: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """White noise filtered in the frequency domain by ``gain(freqs_hz)``, normalised to unit peak."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum *= gain(np.fft.rfftfreq(n, 1 / sr))
    out = np.fft.irfft(spectrum, n)
    return out / np.max(np.abs(out))


def _normalise(x: np.ndarray, peak: float) -> np.ndarray:
    return (x * (peak / np.max(np.abs(x)))).astype(np.float32)


def bird_chirp(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Phrases of fast rising whistles with vibrato, like a small songbird."""
    out = np.zeros(round(3.0 * sr))
    onsets = [0.15, 0.35, 0.55, 0.75, 1.5, 1.62, 1.74, 1.86, 1.98, 2.5]
    for i, t0 in enumerate(onsets):
        dur = 0.09 if 1.4 < t0 < 2.1 else 0.14
        t = np.arange(round(dur * sr)) / sr
        f_lo, f_hi = (3200, 5600) if i % 2 == 0 else (3600, 6200)
        freq = f_lo + (f_hi - f_lo) * (t / dur) ** 1.5 + 180 * np.sin(2 * np.pi * 45 * t)
        phase = 2 * np.pi * np.cumsum(freq) / sr
        chirp = np.sin(phase) * np.hanning(len(t)) * rng.uniform(0.6, 1.0)
        i0 = round(t0 * sr)
        out[i0 : i0 + len(chirp)] += chirp
    return _normalise(out, 0.7)


def rain(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Broadband hiss (rain on a roof) with scattered droplet ticks."""
    n = round(4.0 * sr)

    def hiss_gain(f: np.ndarray) -> np.ndarray:
        # Gentle band: roll off the rumble below 300 Hz and tilt down above 2 kHz.
        return (f / (f + 300.0)) / np.sqrt(1.0 + (f / 2000.0) ** 2)

    out = 0.5 * _shaped_noise(n, sr, rng, hiss_gain)
    decay = np.exp(-np.arange(round(0.012 * sr)) / (0.002 * sr))
    for t0 in np.sort(rng.uniform(0, 3.95, 140)):
        tick = rng.standard_normal(len(decay)) * decay * rng.uniform(0.2, 0.9)
        i0 = round(t0 * sr)
        out[i0 : i0 + len(tick)] += tick
    fade = np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / (0.2 * sr))
    return _normalise(out * fade, 0.6)


def doorbell(sr: int, rng: np.random.Generator) -> np.ndarray:
    """A two-tone "ding-dong" (E5 then C5) with bell-like partials and exponential decay."""
    out = np.zeros(round(2.5 * sr))
    for t0, f0 in [(0.1, 659.25), (0.85, 523.25)]:
        t = np.arange(round(1.5 * sr)) / sr
        partials = [(1.0, 1.0, 1.0), (2.0, 0.45, 1.6), (2.76, 0.25, 2.4), (5.4, 0.1, 3.5)]
        note = sum(a * np.exp(-3.0 * k * t) * np.sin(2 * np.pi * f0 * r * t) for r, a, k in partials)
        note *= np.minimum(1.0, t / 0.004)  # soft attack, no click
        i0 = round(t0 * sr)
        end = min(len(out), i0 + len(note))
        out[i0:end] += note[: end - i0]
    out += 1e-3 * rng.standard_normal(len(out))
    return _normalise(out, 0.7)


def dog_bark(sr: int, rng: np.random.Generator) -> np.ndarray:
    """Three short barks: a falling harmonic tone mixed with noise, sharp attack, quick decay."""
    out = np.zeros(round(3.0 * sr))
    for t0, pitch in [(0.2, 480.0), (0.75, 520.0), (1.9, 450.0)]:
        dur = 0.22
        t = np.arange(round(dur * sr)) / sr
        f0 = pitch * (1.0 - 0.35 * t / dur)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        # Harmonics weighted around 1-1.5 kHz, like an open-mouthed bark's first formant.
        voiced = sum(np.sin(h * phase) / (1.0 + ((h * pitch - 1200.0) / 700.0) ** 2) for h in range(1, 12))
        breath = 0.4 * _shaped_noise(len(t), sr, rng, lambda f: 1.0 / (1.0 + ((f - 1500.0) / 900.0) ** 2))
        env = np.minimum(1.0, t / 0.006) * np.exp(-t / 0.07)
        i0 = round(t0 * sr)
        out[i0 : i0 + len(t)] += (voiced / np.max(np.abs(voiced)) + breath) * env
    return _normalise(out, 0.8)


def engine_hum(sr: int, rng: np.random.Generator) -> np.ndarray:
    """An idling engine slowly revving: a low harmonic series with firing-rate wobble and rumble noise."""
    n = round(4.0 * sr)
    t = np.arange(n) / sr
    firing = 32.0 + 10.0 * np.clip((t - 1.5) / 1.5, 0.0, 1.0) + 0.6 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(firing) / sr
    harmonics = sum(np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h**0.8 for h in range(1, 24))
    rumble = _shaped_noise(n, sr, rng, lambda f: 1.0 / (1.0 + (f / 250.0) ** 2))
    out = harmonics / np.max(np.abs(harmonics)) + 0.35 * rumble
    fade = np.minimum(1.0, np.minimum(np.arange(n), n - 1 - np.arange(n)) / (0.15 * sr))
    return _normalise(out * fade, 0.6)


# name, generator, sample rate, container, subtype
CLIPS = [
    ("bird_chirp.ogg", bird_chirp, 22_050, "OGG", "VORBIS"),
    ("rain.flac", rain, 16_000, "FLAC", "PCM_16"),
    ("doorbell.wav", doorbell, 16_000, "WAV", "PCM_16"),
    ("dog_bark.ogg", dog_bark, 44_100, "OGG", "VORBIS"),
    ("engine_hum.flac", engine_hum, 8_000, "FLAC", "PCM_16"),
]


def _ogg_crc(data: bytes) -> int:
    """CRC-32 as Ogg pages use it (polynomial 0x04C11DB7, not bit-reflected, initial value 0)."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _pin_ogg_serial(path: Path, serial: int) -> None:
    """Replace the random stream serial number libsndfile picks, so the file's bytes are reproducible."""
    data = bytearray(path.read_bytes())
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"{path}: unexpected bytes at offset {pos}, not an Ogg page")
        n_segments = data[pos + 26]
        size = 27 + n_segments + sum(data[pos + 27 : pos + 27 + n_segments])
        data[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        data[pos + 22 : pos + 26] = b"\0\0\0\0"
        data[pos + 22 : pos + 26] = _ogg_crc(bytes(data[pos : pos + size])).to_bytes(4, "little")
        pos += size
    path.write_bytes(bytes(data))


def make_samples(out_dir: Path) -> list[Path]:
    """Write every clip of `CLIPS` and the README into ``out_dir``; returns the clip paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, make, sr, container, subtype) in enumerate(CLIPS):
        wave = make(sr, np.random.default_rng(SEED + i))
        path = out_dir / name
        # Chunked writes: a single large write of an Ogg file can crash libsndfile.
        with sf.SoundFile(path, "w", samplerate=sr, channels=1, format=container, subtype=subtype) as f:
            for j in range(0, len(wave), 16_384):
                f.write(wave[j : j + 16_384])
        if container == "OGG":
            _pin_ogg_serial(path, SEED + i)
        written.append(path)
    (out_dir / "README.md").write_text(README, encoding="utf-8")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parent.parent / "data" / "samples"
    parser.add_argument("--out", type=Path, default=default_out, help="output folder (default: %(default)s)")
    args = parser.parse_args()
    for path in make_samples(args.out):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
