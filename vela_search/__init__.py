"""vela-search: audio-text vector search with Vela embeddings over sharded FAISS indexes.

The public API is imported lazily so that ``import vela_search`` (and ``vela-search --help``) stays instant:
torch, transformers and faiss load only when a class that needs them is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "VelaEmbedder": "vela_search.embedding.embedder",
    "EmbedItem": "vela_search.embedding.embedder",
    "DemoSet": "vela_search.embedding.demos",
    "Fingerprint": "vela_search.embedding.fingerprint",
    "AudioIndex": "vela_search.store",
    "Searcher": "vela_search.search",
    "Hit": "vela_search.search",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:  # re-exported lazily through __getattr__
    from vela_search.embedding.demos import DemoSet  # noqa: F401
    from vela_search.embedding.embedder import EmbedItem, VelaEmbedder  # noqa: F401
    from vela_search.embedding.fingerprint import Fingerprint  # noqa: F401
    from vela_search.search import Hit, Searcher  # noqa: F401
    from vela_search.store import AudioIndex  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vela_search' has no attribute {name!r}")
