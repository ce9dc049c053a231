"""Loading: tiny checkpoint, Hub ids offline, LoRA adapters, fingerprints, quantization."""

from __future__ import annotations

import numpy as np
import pytest

from vela_search.embedding import prompts
from vela_search.embedding.backbone import weights_digest
from vela_search.embedding.demos import DemoSet
from vela_search.embedding.embedder import VelaEmbedder
from vela_search.embedding.tiny import ensure_tiny_checkpoint
from vela_search.errors import ModelLoadError

TEXTS = ["dog barking then a car passes", "rain on a tin roof"]


def test_tiny_checkpoint_is_deterministic(tiny_model_dir, tmp_path):
    rebuilt = ensure_tiny_checkpoint(tmp_path / "again")
    assert weights_digest(rebuilt) == weights_digest(tiny_model_dir)
    assert (rebuilt / "tokenizer.json").read_text() == (tiny_model_dir / "tokenizer.json").read_text()


def test_tiny_embedder_carries_the_notice(tiny_embedder):
    assert tiny_embedder.is_tiny
    assert tiny_embedder.notice == "tiny random model: results carry no meaning"
    assert tiny_embedder.fingerprint.model.startswith("tiny@")


def test_hub_id_offline_gives_a_clear_error(tiny_model_dir):
    with pytest.raises(
        ModelLoadError, match="could not load model 'Qwen/Qwen2-Audio-7B-Instruct'.*--model tiny"
    ):
        VelaEmbedder.from_pretrained("Qwen/Qwen2-Audio-7B-Instruct", demos="none", device="cpu")


def test_not_a_model_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="neither a local checkpoint directory nor a Hub id"):
        VelaEmbedder.from_pretrained(str(tmp_path / "missing" / "model.bin"), demos="none")


def test_local_directory_loads_like_the_hub_path(tiny_model_dir):
    embedder = VelaEmbedder.from_pretrained(str(tiny_model_dir), demos="none", device="cpu")
    assert embedder.fingerprint.model == str(tiny_model_dir)
    assert embedder.embed_text(TEXTS).shape == (2, 64)


def _save_adapter(tiny_model_dir, path, *, zero: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    from vela_search.embedding.backbone import LLM_LORA_TARGETS

    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir)
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LLM_LORA_TARGETS, init_lora_weights=zero or False
    )
    peft_model = get_peft_model(model, config)
    assert not any("audio_tower" in name for name, _ in peft_model.named_parameters() if "lora_" in name)
    peft_model.save_pretrained(path)
    return path


def test_adapter_loading_and_fingerprint(tiny_model_dir, tmp_path):
    base = VelaEmbedder.from_pretrained("tiny", demos="none", device="cpu")
    zero = VelaEmbedder.from_pretrained(
        "tiny",
        adapter=_save_adapter(tiny_model_dir, tmp_path / "zero", zero=True),
        demos="none",
        device="cpu",
    )
    random = VelaEmbedder.from_pretrained(
        "tiny",
        adapter=_save_adapter(tiny_model_dir, tmp_path / "rand", zero=False),
        demos="none",
        device="cpu",
    )
    # A zero-initialised LoRA (B = 0) is the identity: same vectors as the base model.
    assert np.abs(zero.embed_text(TEXTS) - base.embed_text(TEXTS)).max() < 1e-6
    assert np.abs(random.embed_text(TEXTS) - base.embed_text(TEXTS)).max() > 1e-4
    prints = {base.fingerprint.adapter, zero.fingerprint.adapter, random.fingerprint.adapter}
    assert len(prints) == 3 and base.fingerprint.adapter is None
    assert set(base.fingerprint.differences(zero.fingerprint)) == {"adapter"}


def test_adapter_directory_must_be_peft(tmp_path):
    with pytest.raises(ModelLoadError, match="not a peft adapter directory"):
        VelaEmbedder.from_pretrained("tiny", adapter=tmp_path, demos="none")


def test_fingerprint_follows_demos_and_prompt_version(tiny_embedder, monkeypatch):
    other = VelaEmbedder(tiny_embedder.backbone, DemoSet.none())
    assert set(tiny_embedder.fingerprint.differences(other.fingerprint)) == {"demos"}
    before = tiny_embedder.fingerprint
    monkeypatch.setattr(prompts, "PROMPT_VERSION", "vela-prompts-test")
    after = tiny_embedder.fingerprint
    assert set(before.differences(after)) == {"prompt_version"}
    assert not before.compatible(after)
    assert "prompt_version" in before.describe_differences(after, mine="index", theirs="query")


def test_fingerprint_round_trips_through_json(tiny_embedder):
    import json

    from vela_search.embedding.fingerprint import Fingerprint

    data = json.loads(json.dumps(tiny_embedder.fingerprint.to_dict()))
    assert Fingerprint.from_dict(data) == tiny_embedder.fingerprint


def test_four_bit_loading_runs_on_cpu(tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    quantized = VelaEmbedder.from_pretrained("tiny", demos="none", device="cpu", quantize="4bit")
    assert quantized.fingerprint.quantization == "4bit"
    vectors = quantized.embed_text(TEXTS)
    assert vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    import bitsandbytes as bnb

    layers = quantized.backbone.language_model.modules()
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in layers)
    # The audio tower stays full precision.
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in quantized.backbone.core.audio_tower.modules())


def test_unreachable_hub_fails_fast_with_a_clear_error(tiny_model_dir, monkeypatch):
    import socket

    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache and .* cannot be reached"):
        VelaEmbedder.from_pretrained("someone/not-cached", demos="none", device="cpu")
