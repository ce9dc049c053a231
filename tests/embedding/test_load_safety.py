"""Whatever model an index's record names, loading never runs remote code and reads safetensors only."""

from __future__ import annotations

import shutil

import pytest

from vela_search.embedding.embedder import VelaEmbedder
from vela_search.errors import ModelLoadError


def _spy(monkeypatch, cls) -> list[dict]:  # noqa: ANN001
    calls: list[dict] = []
    original = cls.from_pretrained.__func__

    def recording(klass, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        calls.append(kwargs)
        return original(klass, *args, **kwargs)

    monkeypatch.setattr(cls, "from_pretrained", classmethod(recording))
    return calls


def test_backbone_loads_with_safetensors_only_and_no_remote_code(tiny_model_dir, monkeypatch):
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    model_calls = _spy(monkeypatch, Qwen2AudioForConditionalGeneration)
    processor_calls = _spy(monkeypatch, AutoProcessor)
    VelaEmbedder.from_pretrained(str(tiny_model_dir), demos="none", device="cpu")
    assert model_calls and all(
        c.get("use_safetensors") is True and c.get("trust_remote_code") is False for c in model_calls
    )
    assert processor_calls and all(c.get("trust_remote_code") is False for c in processor_calls)


def test_a_checkpoint_with_pickled_weights_only_is_refused(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    for weights in pickled.glob("*.safetensors"):
        torch.save(load_file(weights), pickled / "pytorch_model.bin")
        weights.unlink()
    for index in pickled.glob("*.safetensors.index.json"):
        index.unlink()
    with pytest.raises(ModelLoadError):
        VelaEmbedder.from_pretrained(str(pickled), demos="none", device="cpu")
