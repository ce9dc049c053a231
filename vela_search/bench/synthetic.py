"""Synthetic inputs for the speed benchmark: audio clips, caption-like queries and a paper-size demo set.

Everything is generated in memory with numpy and is deterministic for a seed. The paper-size demo set's
audio demos are written as 16-bit WAV files with the stdlib ``wave`` module (their bytes enter the demo
digest) and handed to the embedder from memory (each audio ``Demo`` carries its samples), so no audio decoder
(soundfile, librosa) is needed: GPU images often have none.
"""

from __future__ import annotations

import wave as wavfile
from pathlib import Path
from typing import Any

import numpy as np

from vela_search.errors import VelaError

__all__ = [
    "PAPER_AUDIO_DEMOS",
    "PAPER_AUDIO_DEMO_SECONDS",
    "PAPER_PREFIX_TOKENS",
    "PAPER_TEXT_DEMOS",
    "paper_demo_set",
    "paper_embedder",
    "synthetic_clip",
    "synthetic_queries",
]

SAMPLE_RATE = 16_000

# The paper's demonstration set: 100 demos, 65 text and 35 audio clips (5 s each here), ~7.9k tokens.
PAPER_TEXT_DEMOS = 65
PAPER_AUDIO_DEMOS = 35
PAPER_AUDIO_DEMO_SECONDS = 5.0
# The size of the prefix behind which the reference GPU numbers were measured; it leaves room for a 10 s
# clip (~265 tokens) in the 8,192 positions.
PAPER_PREFIX_TOKENS = 7870
_AUDIO_DEMO_WORDS = (
    "hum buzz chime whistle drone beep hiss rumble ring tone pulse click crackle whine siren ping gong "
    "flutter chirp rattle murmur tick swoosh thump clang drip roar squeak knock tap sweep warble honk "
    "purr zap"
).split()
_QUERY_WORDS = (
    "a dog barks while rain falls on the roof and a car passes slowly in the distance then birds sing near "
    "an open window as people talk quietly and a door closes with a loud bang before music plays softly"
).split()


def synthetic_clip(seconds: float, seed: int) -> np.ndarray:
    """A deterministic 16 kHz mono clip: a few gliding tones under a slow envelope, plus noise bursts.

    Args:
        seconds: Length of the clip.
        seed: Different seeds give different clips.

    Returns:
        float32 samples in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * SAMPLE_RATE)))
    t = np.arange(n) / SAMPLE_RATE
    clip = np.zeros(n)
    for _ in range(3):
        f0, f1 = rng.uniform(80, 4000, size=2)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * max(seconds, 1e-3)))
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 2) * t)
        clip += rng.uniform(0.05, 0.25) * np.sin(phase) * envelope
    bursts = rng.standard_normal(n) * (np.sin(2 * np.pi * rng.uniform(0.5, 3) * t) > 0.7)
    clip += 0.05 * bursts
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def synthetic_queries(n: int, seed: int) -> list[str]:
    """``n`` deterministic caption-like queries of 8-16 words."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_QUERY_WORDS, size=int(rng.integers(8, 17)))).capitalize() for _ in range(n)]


def _write_wav(path: Path, samples: np.ndarray) -> np.ndarray:
    """Write 16-bit PCM with the stdlib and return the samples exactly as a decoder reads them back."""
    pcm = np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wavfile.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return pcm.astype(np.float32) / 32768.0


def paper_demo_set(
    directory: str | Path, *, seed: int = 0, max_words: int | None = None
) -> tuple[Any, dict[Path, np.ndarray]]:
    """A synthetic demo set of the paper's size: 65 text demos and 35 audio demos of 5 s each.

    The text demos are the first 65 of the shipped default set (cut to ``max_words`` words each when given);
    the audio demos are synthetic clips written as WAV files into ``directory`` (their bytes enter the demo
    digest), spread evenly among the texts.

    Returns:
        ``(DemoSet, {audio path: waveform})``: the waveforms as decoded from the WAV files, so the embedder
        can take them from memory where no audio decoder is installed.
    """
    audio, waves = _paper_audio_demos(Path(directory), seed)
    return _interleave(_paper_text_demos(max_words), audio), waves


def _paper_text_demos(max_words: int | None) -> list[Any]:
    from vela_search.embedding.demos import Demo, DemoSet

    texts = [d for d in DemoSet.default().demos if not d.is_audio][:PAPER_TEXT_DEMOS]
    if len(texts) < PAPER_TEXT_DEMOS:
        raise VelaError(f"the default demo set has {len(texts)} text demos; the paper-size set needs 65")
    if max_words is None:
        return texts
    return [Demo(word=d.word, text=" ".join((d.text or "").split()[:max_words])) for d in texts]


def _paper_audio_demos(directory: Path, seed: int) -> tuple[list[Any], dict[Path, np.ndarray]]:
    from vela_search.embedding.demos import Demo

    directory.mkdir(parents=True, exist_ok=True)
    waves: dict[Path, np.ndarray] = {}
    audio = []
    for k in range(PAPER_AUDIO_DEMOS):
        path = (directory / f"demo_{k:02d}.wav").resolve()
        waves[path] = _write_wav(path, synthetic_clip(PAPER_AUDIO_DEMO_SECONDS, seed=10_000 + seed + k))
        audio.append(Demo(word=_AUDIO_DEMO_WORDS[k], audio=path, wave=waves[path]))
    return audio, waves


def _interleave(texts: list[Any], audio: list[Any]) -> Any:
    """The demos in one list, the audio ones spread evenly among the texts."""
    from vela_search.embedding.demos import DemoSet

    total = len(texts) + len(audio)
    audio_slots = {round(k * total / len(audio)) for k in range(len(audio))}
    text_iter, audio_iter = iter(texts), iter(audio)
    ordered = [next(audio_iter) if slot in audio_slots else next(text_iter) for slot in range(total)]
    return DemoSet(demos=tuple(ordered), source="paper")


def paper_embedder(
    cls: type, backbone: Any, directory: Path, *, seed: int = 0, batch_tokens: int | None = None
) -> Any:
    """An embedder behind the paper-size set, its captions shortened until the prefix is ~7.9k tokens.

    Token counts depend on the tokenizer (the tiny one splits words finer than Qwen's), and a prefix over
    ~7.9k tokens would leave no room for a 10 s clip in the 8,192 positions.

    Args:
        cls: The embedder class.
        backbone: The loaded backbone, shared with the caller's other embedders.
        directory: Where the demo WAV files are written.
        seed: Seed of the synthetic demo audio.
        batch_tokens: Passed to the embedder.
    """
    audio, waves = _paper_audio_demos(Path(directory), seed)
    for max_words in (None, *range(14, 2, -1)):
        emb = cls(
            backbone,
            _interleave(_paper_text_demos(max_words), audio),
            batch_tokens=batch_tokens,
            demos_spec="paper",
        )
        if _prefix_tokens(emb, waves.values()) <= PAPER_PREFIX_TOKENS:
            break
    return emb


def _prefix_tokens(emb: Any, demo_waves: Any) -> int:
    """Prefix length from the rendered text and the audio token counts, without extracting audio features."""
    from vela_search.embedding.batching import audio_token_count
    from vela_search.embedding.embedder import EmbedItem

    probe = EmbedItem("caption", text="probe")
    text_tokens = len(emb.full_prompt_ids(probe)) - emb.token_count(probe)
    # Each <|AUDIO|> token expands to the clip's audio tokens.
    return text_tokens + sum(audio_token_count(len(w)) - 1 for w in demo_waves)
