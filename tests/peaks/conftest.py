"""Fixtures of the peaks tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def emb(tiny_model_dir):
    """The tiny model without demos."""
    from vela_search.embedding.embedder import VelaEmbedder

    return VelaEmbedder.from_pretrained("tiny", demos="none", device="cpu")
