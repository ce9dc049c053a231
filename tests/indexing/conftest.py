"""Fixtures of the indexing tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def emb(tiny_model_dir):
    """The tiny model without demos: the same fingerprint as ``--model tiny --demos none`` on the CLI."""
    from vela_search.embedding.embedder import VelaEmbedder

    return VelaEmbedder.from_pretrained("tiny", demos="none", device="cpu")
