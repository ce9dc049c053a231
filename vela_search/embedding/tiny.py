"""A tiny random-weight Qwen2-Audio checkpoint, built offline, for tests and demos.

Model id ``tiny`` resolves to a directory built once into the cache by :func:`ensure_tiny_checkpoint`:
the real Qwen2-Audio architecture in miniature (2 LLM layers with grouped-query attention, a 2-layer
Whisper-style audio encoder), a real byte-level BPE tokenizer trained on a built-in corpus, Qwen2-Audio's
chat template and its Whisper feature extractor settings. It loads through exactly the same code path as
``Qwen/Qwen2-Audio-7B-Instruct``. Its weights are random, so its vectors carry no meaning.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TINY_MODEL_ID = "tiny"
# Bump when the recipe changes: the cache directory and the fingerprint follow it.
TINY_RECIPE_VERSION = "3"
TINY_NOTICE = "tiny random model: results carry no meaning"
# Spread of the random 2-D weights (8x the usual 0.02 initialisation; see _build_into).
_WEIGHT_STD = 0.16
# Size of the query and key biases that make half of the language model's heads attend to nearby tokens
# (see _add_local_heads), and how many of the lowest rotary frequencies carry them.
_LOCAL_BIAS = 4.0
_LOCAL_FREQUENCIES = 5

_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
]

# Words the tokenizer is trained on: the prompts, chat roles and everyday sound vocabulary, so that captions
# tokenize into a realistic number of pieces. Anything else still encodes (byte-level fallback).
_CORPUS_WORDS = """
system user assistant You are a helpful assistant. Audio Summarize above audio sentence passage request
in one word the a an and of to with while then as is are was were it its this that on in at by from for
into over under near dog dogs bark barks barking cat meows purring bird birds chirp chirping sing singing
crow rooster cow moo horse sheep goat frog croak insects buzz bee mosquito owl hoot duck quack chicken
cluck wolf howl lion roar car cars engine motor truck bus train horn honk siren ambulance police
motorcycle airplane jet helicopter boat traffic road street passes passing drives driving accelerates
brakes idling tires screech rain raining thunder storm wind blowing gust hail snow drizzle lightning
rumble water stream river waves ocean sea splash dripping drip faucet tap pouring flowing bubbling
waterfall man woman child children baby people crowd voice voices speaks speaking talks talking laughs
laughing cries crying shouts shouting whispers whispering sings cheering applause coughs sneezes
footsteps walking music piano guitar violin drum drums flute trumpet orchestra melody song plays playing
band bass chord tool tools hammer hammering drill drilling saw sawing chainsaw wrench sanding power
machine grinding alarm alarms clock ringing rings bell bells beeping beep doorbell smoke fire buzzer
phone telephone household kitchen door opens closes slams knock knocking dishes clatter vacuum cleaner
microwave blender washing dryer fan television keyboard typing chair creaks glass breaks shatters paper
rustles loud quiet soft distant close nearby background foreground repeatedly briefly slowly quickly many
several find recordings same sound source as kettle whistling long short first second followed by finally
""".split()


def tiny_cache_dir() -> Path:
    """The directory the tiny checkpoint is built into (``$VELA_CACHE_DIR`` or ``~/.cache/vela-search``)."""
    base = os.environ.get("VELA_CACHE_DIR") or os.path.join(Path.home(), ".cache", "vela-search")
    return Path(base) / f"tiny-qwen2-audio-v{TINY_RECIPE_VERSION}"


def _train_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # Repeat the corpus in a few casings so frequent words become single tokens deterministically.
    corpus = [" ".join(_CORPUS_WORDS), " ".join(w.capitalize() for w in _CORPUS_WORDS), *_CORPUS_WORDS]
    bpe.train_from_iterator(corpus, trainer=trainer)
    vocab = dict(sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]))
    merges = _bpe_merges(bpe)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": _SPECIAL_TOKENS[1:]})
    tokenizer.add_special_tokens({"pad_token": "<|endoftext|>"})
    return tokenizer


def _bpe_merges(bpe) -> list[tuple[str, str]]:
    import json

    model = json.loads(bpe.to_str())["model"]
    merges = model["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


def _build_into(directory: Path) -> None:
    import torch
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = _train_tokenizer()
    # Qwen2-Audio's real feature extractor settings (128 mel bins, 30 s windows at 16 kHz).
    feature_extractor = WhisperFeatureExtractor(
        feature_size=128,
        sampling_rate=16000,
        hop_length=160,
        chunk_length=30,
        n_fft=400,
        return_attention_mask=True,
    )
    processor = Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    audio_token_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    config = Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "d_model": 32,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "num_mel_bins": 128,
            # The encoder insists on exactly 3000 mel frames, i.e. 1500 source positions.
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "pad_token_id": tokenizer.pad_token_id,
        },
        audio_token_index=audio_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2AudioForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Random-init std 0.02 gives near-identical hidden states for every input (cosines ~0.999 even at
        # std 0.08, recipe 1). At std 0.16 (x8) attention and the MLPs are sharp enough for an input's
        # vector to depend on its content: a clip ranks itself and its near-duplicates first (tested in
        # tests/embedding/test_edges.py). Much larger spreads turn chaotic again (x16, x32 measured).
        generator = torch.Generator().manual_seed(0)
        for name, param in model.named_parameters():
            if param.ndim >= 2 and "embed_positions" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * _WEIGHT_STD)
        _add_local_heads(model)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    (directory / "TINY_MODEL.txt").write_text(
        f"{TINY_NOTICE}\nrecipe version {TINY_RECIPE_VERSION}; built by vela_search.embedding.tiny\n"
    )


def _add_local_heads(model) -> None:  # noqa: ANN001 - a Qwen2AudioForConditionalGeneration
    """Make the first key-value group of every language-model layer attend to the tokens just before.

    A text query's own words are a handful of tokens after a prefix of thousands (the demonstrations);
    random attention averages over all of them, so two different texts got cosines of ~0.99999 (recipe 2).
    Equal query and key biases on the lowest rotary frequencies add ``sum_f b^2 cos(d * theta_f)`` to the
    attention score of tokens ``d`` apart: largest and slowly falling for the last few dozen tokens, low and
    flat over the far prefix. Those heads then read the query's words (and an audio clip's last frames)
    and the other heads stay random. Measured on the sample set (tests/embedding/test_tiny.py).
    """
    import torch

    text = model.config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    group = text.num_attention_heads // text.num_key_value_heads
    half = head_dim // 2  # rotary pairs dimension i with i + half, at frequency theta_i (falling with i)
    pattern = torch.zeros(half)
    pattern[half - _LOCAL_FREQUENCIES :] = _LOCAL_BIAS
    bias = torch.cat([pattern, pattern])
    for layer in model.model.language_model.layers:
        attention = layer.self_attn
        attention.k_proj.bias[:head_dim] = bias
        attention.q_proj.bias[: head_dim * group] = bias.repeat(group)


def ensure_tiny_checkpoint(directory: str | Path | None = None) -> Path:
    """Build the tiny checkpoint if it is not there yet and return its directory.

    The build is deterministic (fixed seeds, fixed corpus) and offline. It is written into a temporary
    directory and renamed into place, so concurrent builders (parallel test processes) never see half a
    checkpoint.

    Args:
        directory: Where to build; defaults to :func:`tiny_cache_dir`.

    Returns:
        The checkpoint directory (``config.json``, weights, tokenizer and processor files).
    """
    target = Path(directory) if directory is not None else tiny_cache_dir()
    if (target / "config.json").exists() and (target / "TINY_MODEL.txt").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=target.parent))
    try:
        _build_into(staging)
        try:
            os.replace(staging, target)
        except OSError:
            # Another process finished first; its checkpoint is identical.
            if not (target / "config.json").exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
