"""The shared-prefix fast path equals a plain full-sequence forward of demos + item."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vela_search.embedding.demos import Demo, DemoSet
from vela_search.embedding.embedder import EmbedItem, VelaEmbedder


def _wave(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


ITEMS = [
    EmbedItem("audio", wave=_wave(2.0, 1)),
    EmbedItem("audio", wave=_wave(10.0, 2)),
    EmbedItem("caption", text="dog barking then a car passes"),
    EmbedItem("long", text=" ".join(["Rain falls on a tin roof while thunder rumbles far away."] * 12)),
    EmbedItem(
        "instruction",
        text="a kettle whistling",
        instruction="Find recordings with the same sound source as:",
    ),
]


@pytest.fixture(scope="module")
def stock_model(tiny_model_dir):
    """The tiny checkpoint loaded plainly, eager attention, no vela code involved."""
    from transformers import Qwen2AudioForConditionalGeneration

    return Qwen2AudioForConditionalGeneration.from_pretrained(
        tiny_model_dir, attn_implementation="eager"
    ).eval()


def _plain_forward(
    stock_model, embedder: VelaEmbedder, item: EmbedItem, demo_waves: list[np.ndarray]
) -> np.ndarray:
    processor = embedder.backbone.processor
    waves = demo_waves + ([item.wave] if item.is_audio else [])
    text = [embedder.full_prompt(item)]
    with torch.no_grad():
        if waves:
            enc = processor(text=text, audio=waves, sampling_rate=16000, return_tensors="pt")
            out = stock_model.model(
                input_ids=enc["input_ids"],
                input_features=enc["input_features"],
                feature_attention_mask=enc["feature_attention_mask"],
                use_cache=False,
            )
        else:
            enc = processor.tokenizer(text, return_tensors="pt")
            out = stock_model.model(input_ids=enc["input_ids"], use_cache=False)
    last = out.last_hidden_state[0, -1]
    return torch.nn.functional.normalize(last, dim=-1).numpy()


@pytest.mark.parametrize("item", ITEMS, ids=lambda it: it.mode)
def test_text_demos_prefix_matches_full_forward(tiny_embedder, stock_model, item):
    fast = tiny_embedder.embed_items([item])[0]
    plain = _plain_forward(stock_model, tiny_embedder, item, [])
    assert np.abs(fast - plain).max() < 1e-4


def test_audio_and_text_demos_prefix_matches_full_forward(tiny_model_dir, stock_model, tmp_path):
    import soundfile as sf

    demo_waves = [_wave(3.0, 7), _wave(5.0, 8)]
    lines = []
    for i, wave in enumerate(demo_waves):
        sf.write(tmp_path / f"demo{i}.wav", wave, 16000, subtype="FLOAT")
        lines.append(f'{{"audio": "demo{i}.wav", "word": "tone{i}"}}')
    lines.append('{"text": "A bell rings twice", "word": "bell"}')
    (tmp_path / "demos.jsonl").write_text("\n".join(lines) + "\n")
    embedder = VelaEmbedder.from_pretrained("tiny", demos=tmp_path / "demos.jsonl", device="cpu")
    decoded = [sf.read(tmp_path / f"demo{i}.wav", dtype="float32")[0] for i in range(2)]
    fast = embedder.embed_items(ITEMS)
    for row, item in zip(fast, ITEMS, strict=True):
        plain = _plain_forward(stock_model, embedder, item, decoded)
        assert np.abs(row - plain).max() < 1e-4, item.mode
    # The item's audio follows the demos' clips in the chat template's numbering.
    assert "Audio 3:" in embedder.full_prompt(ITEMS[0])


def test_no_demos_prefix_matches_full_forward(tiny_model_dir, stock_model):
    embedder = VelaEmbedder.from_pretrained("tiny", demos=DemoSet.none(), device="cpu")
    fast = embedder.embed_items(ITEMS)
    for row, item in zip(fast, ITEMS, strict=True):
        assert np.abs(row - _plain_forward(stock_model, embedder, item, [])).max() < 1e-4


def test_naive_loop_matches_fast_path(tiny_embedder):
    fast = tiny_embedder.embed_items(ITEMS)
    naive = tiny_embedder.embed_naive(ITEMS)
    assert np.abs(fast - naive).max() < 1e-4


def test_prompts_follow_the_method(tiny_embedder):
    demo = DemoSet(demos=(Demo(word="dog", text="A dog barks"),), source="t")
    assert len(demo) == 1
    prompt = tiny_embedder.full_prompt(EmbedItem("audio", wave=_wave(1.0, 0)))
    assert "<|audio_bos|><|AUDIO|><|audio_eos|>\nSummarize above audio in one word:" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    caption = tiny_embedder.full_prompt(EmbedItem("caption", text="a dog barks"))
    assert caption.endswith(
        "a dog barks\nSummarize above sentence in one word:<|im_end|>\n<|im_start|>assistant\n"
    )
    long = tiny_embedder.full_prompt(EmbedItem("long", text="a passage"))
    assert "a passage\nSummarize above passage in one word:" in long
    request = tiny_embedder.full_prompt(
        EmbedItem("instruction", text="a kettle", instruction="Same source as:")
    )
    assert "Same source as:\na kettle\nSummarize above request in one word:" in request
    # Demonstrations are earlier turns: user content + instruction, then the assistant's word.
    assert (
        "A dog can be heard close by\nSummarize above sentence in one word:<|im_end|>\n"
        "<|im_start|>assistant\ndog<|im_end|>" in prompt
    )
