"""Fixtures of the store tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from vela_search.store import AudioIndex

from .helpers import DIM, FP


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Directory of a new index."""
    return tmp_path / "idx"


@pytest.fixture
def index(root: Path) -> AudioIndex:
    """An empty index with the test fingerprint."""
    return AudioIndex.create(root, fingerprint=FP, dim=DIM)


@pytest.fixture(params=["compressed", "rabitq", "graph"])
def kind(request: pytest.FixtureRequest) -> str:
    """The automatic index kinds past exact search (compressed with PQ or RaBitQ codes, graph): the store
    tests of those kinds run for each (limits in `compressed_helpers.KIND_LIMITS`)."""
    return request.param
