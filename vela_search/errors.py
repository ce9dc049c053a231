"""User-facing errors.

Every error a user can cause (bad input, wrong flags, a locked index) is a `VelaError`: the CLI prints its
message without a traceback and exits with the error's `exit_code`. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

EXIT_INTERRUPTED = 130
"""Exit status of a run stopped by Ctrl-C: the shell's 128 + SIGINT."""


class VelaError(Exception):
    """Base class of errors whose message is meant for the user."""

    exit_code: int = 1


class RunInterrupted(VelaError):
    """Ctrl-C stopped a run; the message says what was kept and how to continue."""

    exit_code = EXIT_INTERRUPTED


class AudioDecodeError(VelaError):
    """An audio file is empty, truncated, not audio, unreadable, or decodes to NaN/inf."""


class DemoFileError(VelaError):
    """A demonstrations JSONL file is malformed (the message names the line)."""


class TokenBudgetError(VelaError):
    """Demo prefix + item does not fit in the model's positions."""


class ModelLoadError(VelaError):
    """A backbone, processor or adapter cannot be loaded."""


class StoreError(VelaError):
    """Base class of on-disk index errors."""


class IndexNotFoundError(StoreError):
    """No index exists at the given location."""


class IndexLockedError(StoreError):
    """Another live process holds the index's writer lock."""


class IndexFormatError(StoreError):
    """The index files are unreadable or of an unknown format version."""


class FingerprintMismatchError(StoreError):
    """Vectors from one embedder were about to be mixed with vectors from another."""


class EmptyIndexError(StoreError):
    """The index holds no searchable vectors."""


class QueryError(VelaError):
    """A query is empty, too long, or has invalid options."""


class TrainingDataError(VelaError):
    """A training file has no valid rows or cannot be read."""


class DatasetError(VelaError):
    """A benchmark dataset is missing or laid out unexpectedly."""
