"""The embedder at its edges: audio token counts, very short clips, control tokens typed by users, masked
calls of the prefix attention, the dtype in the fingerprint, and an input-dependent tiny model."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from tests.audio_factory import noise, tone, write_audio
from vela_search.embedding.attention import PrefixKV, vela_attention
from vela_search.embedding.batching import MIN_CLIP_SAMPLES, audio_token_count
from vela_search.embedding.demos import Demo, DemoSet
from vela_search.embedding.embedder import EmbedItem, VelaEmbedder
from vela_search.embedding.rendering import encode_prompt
from vela_search.errors import VelaError

CONTROL = ["<|AUDIO|>", "<|im_end|>", "<|audio_bos|>", "<|im_start|>", "<|endoftext|>", "<|audio_eos|>"]


# ------------------------------------------------------------------------------------ audio tokens
@pytest.mark.parametrize("samples", [16_400, 16_161, 16_001, 321, 481, 799, 47_999, 160 * 1000 + 1, 480_000])
def test_audio_token_count_matches_the_processor(tiny_embedder, samples):
    processor = tiny_embedder.backbone.processor
    wave = noise(samples / 16000, seed=1)
    enc = processor(text=["<|AUDIO|>"], audio=[wave], sampling_rate=16000, return_tensors="pt")
    real = int((enc["input_ids"] == tiny_embedder.backbone.model.config.audio_token_index).sum())
    assert audio_token_count(samples) == real, samples
    assert audio_token_count(16_400) == 26  # ceil(16400 / 160) = 103 frames -> 26 tokens, not 25


def test_budget_counts_the_tokens_the_clip_really_has(tiny_embedder):
    base = tiny_embedder.token_count(EmbedItem("audio", wave=noise(1.0)))
    assert tiny_embedder.token_count(EmbedItem("audio", wave=noise(16_400 / 16000))) == base + 1


# ------------------------------------------------------------------------------------ short clips
def test_very_short_clips_are_padded_and_stay_distinct(tiny_embedder):
    a = noise(200 / 16000, seed=1, amplitude=0.5)
    b = tone(200 / 16000, freq=3000.0)
    assert len(a) == len(b) == 200 < MIN_CLIP_SAMPLES
    vectors = tiny_embedder.embed_audio([a, b])
    assert np.isfinite(vectors).all()
    assert float(vectors[0] @ vectors[1]) < 0.99999, "two different 12 ms clips must not share a vector"
    assert (
        tiny_embedder.token_count(EmbedItem("audio", wave=a))
        > tiny_embedder.token_count(EmbedItem("caption", text="x")) - 100
    )  # counted with its padded length: at least one audio token
    np.testing.assert_allclose(
        vectors, tiny_embedder.embed_naive([EmbedItem("audio", wave=w) for w in (a, b)]), atol=1e-4
    )


def test_an_empty_clip_is_refused(tiny_embedder):
    with pytest.raises(VelaError, match="empty clip"):
        tiny_embedder.embed_items([EmbedItem("audio", wave=np.zeros(0, np.float32))])


# --------------------------------------------------------------------------------- control tokens
@pytest.mark.parametrize("typed", CONTROL)
def test_control_tokens_in_user_text_are_text(tiny_embedder, typed):
    tokenizer = tiny_embedder.backbone.processor.tokenizer
    special = set(tokenizer.get_added_vocab().values())
    text = f"a dog {typed} barks"
    ids = tiny_embedder._text_token_ids([EmbedItem("caption", text=text)])[0]
    plain = tiny_embedder._text_token_ids([EmbedItem("caption", text="a dog barks")])[0]
    # The template's own control tokens, and not one more.
    assert [i for i in ids if i in special] == [i for i in plain if i in special]
    # ... and the vector is not the one the control token would have given.
    suffix = tiny_embedder._suffix_text(EmbedItem("caption", text=text))
    as_control = tokenizer(suffix)["input_ids"]
    assert as_control != ids
    prefix = tiny_embedder._prefix_kv()
    with torch.no_grad():
        controlled = tiny_embedder._forward_prepared(tiny_embedder._padded_text_batch([as_control]), prefix)
    vector = tiny_embedder.embed_text([text])[0]
    assert float(controlled[0].numpy() @ vector) < 0.99999


def test_control_tokens_in_demos_are_text(tiny_model_dir):
    demos = DemoSet(
        demos=(Demo(word="<|AUDIO|>", text="a <|im_end|> dog"), Demo(word="rain", text="<|audio_bos|> rain")),
        source="typed-demos",
    )
    emb = VelaEmbedder.from_pretrained("tiny", demos=demos, device="cpu")
    ids, features = emb._prefix_input()
    audio_id = emb.backbone.model.config.audio_token_index
    assert features is None and int((ids == audio_id).sum()) == 0
    assert emb.embed_text(["dog"]).shape == (1, emb.dim)  # the prefix runs (no audio slot to fill)


def test_ordinary_prompts_tokenize_exactly_as_before(tiny_embedder_default_demos):
    emb = tiny_embedder_default_demos
    tokenizer = emb.backbone.processor.tokenizer
    templates = emb._templates
    assert (
        encode_prompt(tokenizer, templates.prefix, templates.prefix_user_spans)
        == tokenizer(templates.prefix)["input_ids"]
    )
    for text in ["dog barking.", "Rain, then thunder!\nand wind", "  spaces  "]:
        item = EmbedItem("caption", text=text)
        assert emb._text_token_ids([item])[0] == tokenizer(emb._suffix_text(item))["input_ids"]


# -------------------------------------------------------------------------------- attention masks
def _qkv(batch=2, heads=4, kv_heads=2, seq=6, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, heads, seq, dim, generator=g),
        torch.randn(batch, kv_heads, seq, dim, generator=g),
        torch.randn(batch, kv_heads, seq, dim, generator=g),
    )


def _mask(lengths, seq, *, left):
    pad = torch.zeros(len(lengths), seq, dtype=torch.bool)
    for row, n in enumerate(lengths):
        pad[row, seq - n :] = True if left else False
        if not left:
            pad[row, :n] = True
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    return (causal[None] & pad[:, None, :])[:, None]


def test_a_left_padded_mask_is_honoured_without_a_prefix():
    q, k, v = _qkv()
    module = types.SimpleNamespace(layer_idx=0)
    mask = _mask([6, 3], 6, left=True)  # row 1: three pads, then three tokens
    out, _ = vela_attention(module, q, k, v, mask, scaling=0.3)
    alone, _ = vela_attention(module, q[1:, :, 3:], k[1:, :, 3:], v[1:, :, 3:], None, scaling=0.3)
    torch.testing.assert_close(out[1, 3:], alone[0])
    full, _ = vela_attention(module, q[:1], k[:1], v[:1], None, scaling=0.3)
    torch.testing.assert_close(out[0], full[0])


def test_masks_behind_a_prefix_right_padded_work_left_padded_are_refused():
    q, k, v = _qkv()
    module = types.SimpleNamespace(layer_idx=0)
    g = torch.Generator().manual_seed(3)
    prefix = PrefixKV(
        keys={0: torch.randn(2, 5, 8, generator=g)}, values={0: torch.randn(2, 5, 8, generator=g)}
    )
    prefix.length = 5
    right, _ = vela_attention(module, q, k, v, _mask([6, 3], 6, left=False), scaling=0.3, vela_prefix=prefix)
    plain, _ = vela_attention(module, q, k, v, None, scaling=0.3, vela_prefix=prefix)
    torch.testing.assert_close(right[1, :3], plain[1, :3])
    torch.testing.assert_close(right[0], plain[0])
    with pytest.raises(ValueError, match="right-padded"):
        vela_attention(module, q, k, v, _mask([6, 3], 6, left=True), scaling=0.3, vela_prefix=prefix)


def test_the_language_model_runs_right_padding_and_refuses_left_padding(tiny_embedder):
    """transformers gives a custom attention no mask: a 2-D mask must not be silently ignored."""
    lm = tiny_embedder.backbone.language_model
    right = torch.tensor([[5, 6, 7, 8], [7, 8, 0, 0]])
    with torch.no_grad():
        padded = lm(
            input_ids=right, attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
        ).last_hidden_state
        alone = lm(input_ids=right[1:, :2]).last_hidden_state
        torch.testing.assert_close(padded[1, :2], alone[0], atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="right-padded"):
            lm(input_ids=right.flip(1), attention_mask=torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]]))
        with pytest.raises(ValueError, match="2-D padding mask"):
            lm(input_ids=right, attention_mask=torch.ones(2, 1, 4, 4, dtype=torch.bool))


# ---------------------------------------------------------------------------------- fingerprint
def test_fingerprint_records_the_dtype_and_writes_refuse_another(tiny_embedder, tmp_path):
    from vela_search.embedding.fingerprint import fingerprint_for_index
    from vela_search.errors import FingerprintMismatchError
    from vela_search.indexing.pipeline import _open_writer
    from vela_search.store import AudioIndex

    fp = tiny_embedder.fingerprint.to_dict()
    assert fp["dtype"] == "fp32"
    bf16 = tmp_path / "bf16"
    AudioIndex.create(bf16, fingerprint={**fp, "dtype": "bf16"}, dim=tiny_embedder.dim).close()
    with pytest.raises(FingerprintMismatchError, match="dtype"):
        _open_writer(bf16, tiny_embedder, rebuild=False, factory=None)
    # An index from before the dtype was recorded stays writable and keeps its fingerprint.
    legacy = tmp_path / "legacy"
    old = {k: v for k, v in fp.items() if k != "dtype"}
    AudioIndex.create(legacy, fingerprint=old, dim=tiny_embedder.dim).close()
    writer = _open_writer(legacy, tiny_embedder, rebuild=False, factory=None)
    try:
        assert "dtype" not in writer.fingerprint
    finally:
        writer.close()
    assert fingerprint_for_index(fp, None) == fp


def test_queries_may_use_another_dtype(tiny_embedder, tmp_path):
    from vela_search.search.index_embedder import check_compatible
    from vela_search.store import AudioIndex

    fp = tiny_embedder.fingerprint.to_dict()
    with AudioIndex.create(
        tmp_path / "i", fingerprint={**fp, "dtype": "bf16"}, dim=tiny_embedder.dim
    ) as index:
        check_compatible(index, tiny_embedder)  # no error


# -------------------------------------------------------------------------------- the tiny model
def test_tiny_vectors_depend_on_the_input_and_rank_near_duplicates_first(
    tiny_embedder_default_demos, tmp_path
):
    from vela_search.indexing.pipeline import index_paths
    from vela_search.search import Searcher
    from vela_search.store import AudioIndex

    emb = tiny_embedder_default_demos
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    clips = {
        "noise": noise(2.0, seed=3, amplitude=0.2),
        "tone": tone(2.0, freq=440.0, amplitude=0.4),
        "chirp": (0.4 * np.sin(2 * np.pi * (200 * t + 1200 * t**2))).astype(np.float32),
        "clicks": np.where(np.arange(32000) % 1600 < 40, 0.8, 0.0).astype(np.float32),
    }
    clips["tone_copy"] = (clips["tone"] * 0.8 + rng.standard_normal(32000) * 1e-4).astype(np.float32)
    clips["chirp_copy"] = (clips["chirp"] * 1.2 + rng.standard_normal(32000) * 1e-4).astype(np.float32)
    folder = tmp_path / "audio"
    folder.mkdir()
    for name, wave in clips.items():
        write_audio(folder / f"{name}.wav", wave, 16000, subtype="FLOAT")
    vectors = emb.embed_audio(list(clips.values()))
    off_diagonal = (vectors @ vectors.T)[~np.eye(len(clips), dtype=bool)]
    assert off_diagonal.min() < 0.99, "vectors hardly depend on the input"

    index_paths([folder], tmp_path / "index", emb)
    with AudioIndex.open(tmp_path / "index") as index:
        searcher = Searcher(index, emb)
        for name, twin in [("tone", "tone_copy"), ("chirp", "chirp_copy"), ("noise", None), ("clicks", None)]:
            hits = searcher.search_audio(folder / f"{name}.wav", k=len(clips))
            ranked = [h.path.rsplit("/", 1)[-1].removesuffix(".wav") for h in hits]
            assert ranked[0] == name, ranked
            if twin is not None:
                assert ranked[1] == twin, ranked
            assert all(-1.0 <= h.score <= 1.0 for h in hits)
