"""The on-disk index: sharded FAISS vectors with Parquet metadata, committed atomically in generations.

The store knows vectors, global ids and metadata rows, nothing of audio or models. See docs/format.md.
"""

from __future__ import annotations

from .faiss_ops import IndexTrainingError
from .index import AudioIndex, SearchHit
from .integrity import IndexDamagedError, IndexWriteError
from .layout import FORMAT_VERSION
from .tables import FILE_STATUSES, FILES_SCHEMA
from .writer import IndexWriter

__all__ = [
    "FILES_SCHEMA",
    "FILE_STATUSES",
    "FORMAT_VERSION",
    "AudioIndex",
    "IndexDamagedError",
    "IndexTrainingError",
    "IndexWriteError",
    "IndexWriter",
    "SearchHit",
]
