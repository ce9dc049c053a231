"""Search: a query (caption, long text, instruction or audio clip) → the index's embedder → store → hits.

A :class:`Searcher` holds one index snapshot and the embedder that built it, checked by fingerprint, and is
meant to be reused: the model, the demonstrations' key/value prefix and the store's (GPU) copies of the
shards are loaded once, so only the first query pays for them. By default hits are grouped per file (the
best segment of each file, with its timestamps); ``group=False`` lists every matching segment.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.errors import EmptyIndexError, FingerprintMismatchError, ModelLoadError, QueryError

if TYPE_CHECKING:
    from vela_search.embedding.embedder import EmbedItem, VelaEmbedder
    from vela_search.indexing.spec import EmbedderSpec
    from vela_search.store import AudioIndex, SearchHit

__all__ = [
    "AUDIO_QUERY_WINDOW_S",
    "DEFAULT_K",
    "MAX_AUDIO_QUERY_S",
    "MAX_K",
    "TEXT_MODES",
    "Hit",
    "Searcher",
    "check_compatible",
    "check_k",
    "check_not_empty",
    "check_text_query",
    "embedder_spec",
    "format_timestamp",
    "load_index_embedder",
    "load_query_clip",
    "normalize_glob",
    "relative_to_root",
]

DEFAULT_K = 10
# Past this, a "top-k" is an export; the grouped over-fetch would read most of the metadata anyway.
MAX_K = 1000
TEXT_MODES: tuple[str, ...] = ("caption", "long", "instruction")
# A long query file is embedded over its first window, the default window of `vela-search index`.
AUDIO_QUERY_WINDOW_S = 10.0
# What the audio encoder reads at most (and the longest file `vela-search index` keeps as one segment).
MAX_AUDIO_QUERY_S = 30.0
# Grouped search first asks the store for k * this many segments, then widens by _WIDEN while files are
# missing: a file contributes several overlapping windows, and most of them score alike.
_OVERFETCH = 8
_WIDEN = 4

_FIELD_LABELS = {
    "model": "model",
    "weights": "model weights",
    "adapter": "adapter",
    "prompt_version": "prompt version",
    "demos": "demos",
    "dim": "dimension",
    "quantization": "quantization",
}


# ------------------------------------------------------------------------------------------------- hits


@dataclass(frozen=True)
class Hit:
    """One search result: a segment of a file, or the best segment of a file when grouped.

    Attributes:
        path: the file (as stored in the index; absolute when indexed from an absolute root).
        start_s: start of the segment in seconds.
        end_s: end of the segment in seconds.
        score: cosine similarity of the query and the segment (unit vectors), in [-1, 1]; comparable only
            between results of one index and embedder.
        duration_s: duration of the whole file in seconds (None when unknown).
        segment_id: the segment's id in the index.
        rank: 1 for the best hit.
        paths: every indexed path with the same content (``path`` first), duplicates included.
        root: the directory the file was indexed from, when recorded.
        file: the file's row of the index's files table (size, mtime_ns, sha256, status, ...), or {}.
    """

    path: str
    start_s: float
    end_s: float
    score: float
    duration_s: float | None
    segment_id: int
    rank: int
    paths: tuple[str, ...] = ()
    root: str | None = None
    file: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def display_path(self) -> str:
        """``path`` relative to the indexed root when it lies inside it, else ``path`` itself."""
        return relative_to_root(self.path, self.root)

    def to_dict(self) -> dict[str, Any]:
        """The hit as JSON-able values (the form ``vela-search query --json`` prints)."""
        return {
            "rank": self.rank,
            "score": self.score,
            "path": self.path,
            "display_path": self.display_path,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "duration_s": self.duration_s,
            "segment_id": self.segment_id,
            "paths": list(self.paths),
            "root": self.root,
        }


def relative_to_root(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` (POSIX separators kept as stored) when inside it, else ``path``."""
    if not root:
        return path
    try:
        return PurePath(path).relative_to(PurePath(root)).as_posix()
    except ValueError:
        return path


def format_timestamp(seconds: float | None) -> str:
    """Seconds as ``mm:ss`` (``h:mm:ss`` from one hour), rounded to the nearest second; ``-`` when None."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


# ------------------------------------------------------------------------------------------ validation


def normalize_glob(path_glob: str | None) -> str | None:
    """The pattern matched against stored (absolute) paths.

    A pattern anchored at the root (``/data/birds/*``) or starting with ``*`` is used as given; any other
    one is relative and may match from any directory down: ``birds/*.flac`` becomes ``*/birds/*.flac`` and
    ``kettle.wav`` becomes ``*/kettle.wav``, so a path as the results table shows it works as a filter.

    Raises:
        QueryError: an empty pattern.
    """
    if path_glob is None:
        return None
    if not path_glob.strip():
        raise QueryError("the path filter (--where) is empty; give a glob such as '*/birds/*'")
    if path_glob.startswith(("/", "*")) or PurePath(path_glob).is_absolute():
        return path_glob
    return "*/" + path_glob.removeprefix("./")



def check_k(k: int) -> int:
    """Return ``k`` if it is an integer in ``1..MAX_K``.

    Raises:
        QueryError: otherwise, naming the bounds.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        raise QueryError(f"k (-k) must be an integer from 1 to {MAX_K}, got {k!r}")
    return int(k)


def _check_min_score(min_score: float | None) -> float | None:
    if min_score is None:
        return None
    try:
        value = float(min_score)
    except (TypeError, ValueError):
        raise QueryError(f"min_score must be a number, got {min_score!r}") from None
    if math.isnan(value):
        raise QueryError("min_score must be a number, got NaN")
    return value


def check_text_query(query: str, mode: str = "caption", instruction: str | None = None) -> str:
    """Validate a text query without a model: non-empty text, a known mode, an instruction where needed.

    Returns:
        The mode.

    Raises:
        QueryError: an empty or whitespace-only query or instruction, an unknown mode, or an instruction
            outside instruction mode.
    """
    if mode not in TEXT_MODES:
        raise QueryError(f"unknown query mode {mode!r}; use one of {', '.join(TEXT_MODES)} (or search_audio)")
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is empty; give some words to search for")
    if mode == "instruction":
        if instruction is None or not instruction.strip():
            raise QueryError("instruction mode needs a non-empty instruction, e.g. --instruction "
                             "'find recordings with the same sound source as:'")
    elif instruction is not None:
        raise QueryError(f"an instruction applies to instruction mode only, not to {mode} mode")
    return mode


# ------------------------------------------------------------------------------ which embedder to load


def embedder_spec(
    index: AudioIndex,
    *,
    model: str | None = None,
    adapter: str | Path | None = None,
    demos: str | Path | None = None,
) -> EmbedderSpec:
    """Work out how to load the embedder an index was built with; given arguments override it.

    ``vela-search index`` records how it loaded the embedder (``embedder.json``, see
    :mod:`vela_search.indexing.spec`). Without that record the fingerprint still names the model (a Hub id
    with its commit, a local directory, or the tiny model) and the quantization, and the shipped default
    demo set and "none" are recognised by digest; an adapter or a custom demo file must then be given.

    Raises:
        ModelLoadError: the index needs an adapter or demo file it does not record, and none was given.
    """
    from vela_search.indexing.spec import EmbedderSpec, recorded_spec

    fp = dict(index.fingerprint)
    recorded = recorded_spec(index.root, fp)
    revision = None
    if model is None:
        if recorded is not None:
            model, revision = recorded.model, recorded.revision
        else:
            model, revision = _model_from_ref(str(fp.get("model") or ""))
        if model is None:
            raise ModelLoadError(f"index {index.root} does not record its model; pass --model")
    if adapter is None and fp.get("adapter"):
        adapter = recorded.adapter if recorded is not None else None
        if adapter is None or not Path(adapter).is_dir():
            where = f" (recorded as {adapter}, which no longer exists)" if adapter else ""
            raise ModelLoadError(
                f"index {index.root} was built with a LoRA adapter (digest {str(fp['adapter'])[:12]}…)"
                f"{where}; pass the same adapter directory with --adapter DIR"
            )
    if demos is None:
        demos = _demos_from_digest(fp.get("demos"))
        if demos is None:
            demos = recorded.demos if recorded is not None else None
            if demos is None or not Path(demos).is_file():
                where = f" (recorded as {demos!r}, which is not a file)" if demos else ""
                raise ModelLoadError(
                    f"index {index.root} was built with a custom demo set (digest "
                    f"{str(fp.get('demos'))[:12]}…){where}; pass the same file with --demos FILE"
                )
    return EmbedderSpec(
        model=str(model),
        revision=revision,
        adapter=None if adapter is None else str(adapter),
        demos=str(demos),
        quantize=fp.get("quantization"),
    )


def load_index_embedder(
    index: AudioIndex,
    *,
    model: str | None = None,
    adapter: str | Path | None = None,
    demos: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_tokens: int | None = None,
) -> VelaEmbedder:
    """Load the embedder of :func:`embedder_spec` (the index's own, unless overridden).

    Raises:
        ModelLoadError: the model, adapter or demos cannot be found or loaded.
    """
    from vela_search.embedding.embedder import VelaEmbedder

    spec = embedder_spec(index, model=model, adapter=adapter, demos=demos)
    _precheck(index, spec)
    return VelaEmbedder.from_pretrained(
        spec.model,
        adapter=spec.adapter,
        demos=spec.demos,
        device=device,
        dtype=dtype,
        quantize=spec.quantize,
        revision=spec.revision,
        batch_tokens=batch_tokens,
    )


def _precheck(index: AudioIndex, spec: EmbedderSpec) -> None:
    """Compare the demos and adapter digests before the (slow) model load; the rest is checked after."""
    from vela_search.embedding.backbone import adapter_digest
    from vela_search.embedding.demos import DemoSet

    fp = index.fingerprint
    demo_set = DemoSet.load(spec.demos)
    diffs = {"demos": demo_set.digest if len(demo_set) else "none"}
    if spec.adapter is not None and Path(spec.adapter).expanduser().is_dir():
        diffs["adapter"] = adapter_digest(Path(spec.adapter).expanduser().resolve())
    elif spec.adapter is None:
        diffs["adapter"] = None
    differing = {name: value for name, value in diffs.items() if name in fp and fp[name] != value}
    if differing:
        raise _mismatch_error(index, differing)


def _model_from_ref(ref: str) -> tuple[str | None, str | None]:
    """A fingerprint's model reference as (model, revision) for ``from_pretrained``."""
    if not ref:
        return None, None
    if ref.startswith("tiny@recipe-"):
        return "tiny", None
    if ref.startswith("shape:") or Path(ref).is_dir():
        return ref, None
    if "@" in ref:
        name, revision = ref.rsplit("@", 1)
        return name, revision
    return ref, None


def _demos_from_digest(digest: Any) -> str | None:
    if digest == "none":
        return "none"
    from vela_search.embedding.demos import DemoSet
    from vela_search.errors import DemoFileError

    try:
        if digest == DemoSet.default().digest:
            return "default"
    except DemoFileError:
        pass
    return None


# --------------------------------------------------------------------------------------------- searcher


class Searcher:
    """Answers queries over one index with the embedder that built it.

    Example:
        >>> searcher = Searcher.open("indexes/default")
        >>> for hit in searcher.search("dog barking then a car passes", k=5):
        ...     print(hit.rank, f"{hit.score:.3f}", hit.path, hit.start_s, hit.end_s)

    Reuse one Searcher for many queries: the model, the shared demonstration prefix and the shard copies
    are loaded once. Calls are serialised on the embedder, so a Searcher may be shared between threads.
    """

    def __init__(self, index: AudioIndex, embedder: VelaEmbedder) -> None:
        """Pair an open index with an embedder.

        Raises:
            FingerprintMismatchError: the embedder is not the one the index was built with; the message
                names the differing fields and the fix.
        """
        check_compatible(index, embedder)
        self.index = index
        self.embedder = embedder
        self._lock = threading.RLock()
        self._files: _FilesLookup | None = None

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        *,
        model: str | None = None,
        adapter: str | Path | None = None,
        demos: str | Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int | None = None,
    ) -> Searcher:
        """Open the index at ``index_dir`` and load its embedder (or the one given, which must match).

        Args:
            index_dir: the index directory.
            model: Hub id, local directory or ``tiny``; default: the model the index records.
            adapter: LoRA adapter directory; default: the index's, when it records where it was.
            demos: ``default``, ``none`` or a JSONL file; default: the index's.
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            dtype: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
            batch_tokens: suffix tokens per embedding batch (default: sized from free GPU memory on CUDA).

        Raises:
            IndexNotFoundError: no index at ``index_dir``.
            EmptyIndexError: the index holds no vectors (checked before the model is loaded).
            ModelLoadError: the embedder cannot be found or loaded.
            FingerprintMismatchError: the given model/adapter/demos differ from the index's.
        """
        from vela_search.store import AudioIndex

        index = AudioIndex.open(index_dir)
        try:
            check_not_empty(index)
            embedder = load_index_embedder(
                index, model=model, adapter=adapter, demos=demos, device=device, dtype=dtype,
                batch_tokens=batch_tokens,
            )
            return cls(index, embedder)
        except BaseException:
            index.close()
            raise

    def close(self) -> None:
        """Close the index snapshot (the embedder stays usable)."""
        self.index.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def notice(self) -> str | None:
        """A warning that belongs beside every result (the tiny random model's), or None."""
        return self.embedder.notice

    def refresh(self) -> bool:
        """Switch to the index's latest committed generation, if a newer one exists.

        Returns:
            True when the snapshot changed.

        Raises:
            FingerprintMismatchError: the index was rebuilt with another embedder.
        """
        from vela_search.store import AudioIndex

        latest = AudioIndex.open(self.index.root)
        if latest.generation == self.index.generation:
            latest.close()
            return False
        try:
            check_compatible(latest, self.embedder)
        except BaseException:
            latest.close()
            raise
        with self._lock:
            old, self.index, self._files = self.index, latest, None
        old.close()
        return True

    # ------------------------------------------------------------------------------------- text queries
    def search(
        self,
        query: str,
        *,
        mode: str = "caption",
        instruction: str | None = None,
        k: int = DEFAULT_K,
        min_score: float | None = None,
        path_glob: str | None = None,
        group: bool = True,
    ) -> list[Hit]:
        """Search with one text query.

        Args:
            query: the text. Never truncated: one too long for the model is refused.
            mode: ``caption`` (a short description, the default), ``long`` (a passage of any length the
                model's positions allow) or ``instruction`` (a request, with ``instruction``).
            instruction: the request that precedes the text in instruction mode, e.g. "find recordings
                with the same sound source as:".
            k: hits to return, 1..MAX_K (files when grouped, segments otherwise).
            min_score: drop hits scoring below this.
            path_glob: only files whose path matches this fnmatch pattern, applied before top-k. ``*``
                also matches ``/``; a pattern not starting with ``/`` or ``*`` may match from any
                directory down (``birds/*.flac`` means ``*/birds/*.flac``). See :func:`normalize_glob`.
            group: one hit per file (its best segment); False lists every segment.

        Raises:
            QueryError: empty query or instruction, bad mode, k out of bounds, or a query over the token
                limit (the message gives its token count and the limit).
            EmptyIndexError: the index holds no vectors.
        """
        return self.search_many(
            [query], mode=mode, instruction=instruction, k=k, min_score=min_score, path_glob=path_glob,
            group=group,
        )[0]

    def search_many(
        self,
        queries: Sequence[str],
        *,
        mode: str = "caption",
        instruction: str | None = None,
        k: int = DEFAULT_K,
        min_score: float | None = None,
        path_glob: str | None = None,
        group: bool = True,
    ) -> list[list[Hit]]:
        """Search with many text queries at once (embedded in shared batches, searched together).

        Same arguments as :meth:`search`, ``queries`` in place of one query.

        Returns:
            One list of hits per query, in order.
        """
        if isinstance(queries, str):
            raise TypeError("search_many takes a sequence of queries; use search() for one")
        k = check_k(k)
        min_score = _check_min_score(min_score)
        if not queries:
            return []
        for query in queries:
            check_text_query(query, mode, instruction)
        check_not_empty(self.index)
        from vela_search.embedding.embedder import EmbedItem

        items = [EmbedItem(mode, text=q, instruction=instruction) for q in queries]
        vectors = self._embed(items)
        return self.search_vectors(vectors, k=k, min_score=min_score, path_glob=path_glob, group=group)

    # ------------------------------------------------------------------------------------ audio queries
    def search_audio(
        self,
        source: str | Path | np.ndarray,
        start_s: float | None = None,
        end_s: float | None = None,
        *,
        k: int = DEFAULT_K,
        min_score: float | None = None,
        path_glob: str | None = None,
        group: bool = True,
    ) -> list[Hit]:
        """Query by example: embed an audio clip as audio and search with it.

        Without a span, a file of up to 30 s is used whole (as ``vela-search index`` embeds it) and a
        longer one over its first 10 s window. With ``start_s``/``end_s`` that span is used (``start_s``
        alone: a 10 s window from there); a span may be at most 30 s.

        Args:
            source: an audio file (any supported format) or a 16 kHz mono float32 waveform.
            start_s: start of the span in seconds.
            end_s: end of the span in seconds.
            k, min_score, path_glob, group: as in :meth:`search`.

        Raises:
            QueryError: an invalid span or one longer than 30 s, k out of bounds.
            AudioDecodeError: the file cannot be decoded.
            EmptyIndexError: the index holds no vectors.
        """
        k = check_k(k)
        min_score = _check_min_score(min_score)
        check_not_empty(self.index)
        from vela_search.embedding.embedder import EmbedItem

        wave = load_query_clip(source, start_s, end_s)
        vectors = self._embed([EmbedItem("audio", wave=wave)])
        return self.search_vectors(vectors, k=k, min_score=min_score, path_glob=path_glob, group=group)[0]

    # ----------------------------------------------------------------------------------- vector queries
    def search_vectors(
        self,
        vectors: np.ndarray,
        *,
        k: int = DEFAULT_K,
        min_score: float | None = None,
        path_glob: str | None = None,
        group: bool = True,
    ) -> list[list[Hit]]:
        """Search with query vectors already embedded by this Searcher's embedder.

        Grouped search over-fetches segments from the store (k x 8, widened x 4 as needed) until it has
        k distinct files, the rest scores below ``min_score``, or the index is exhausted; every file's
        hit is then its best segment.

        Args:
            vectors: (n, dim) float32 unit vectors (a single (dim,) vector is one query).
            k, min_score, path_glob, group: as in :meth:`search`.

        Returns:
            One list of hits per query.
        """
        k = check_k(k)
        min_score = _check_min_score(min_score)
        path_glob = normalize_glob(path_glob)
        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        with self._lock:
            index = self.index
            total = index.num_vectors
            if total == 0:
                check_not_empty(index)
            fetch = min(total, k if not group else k * _OVERFETCH)
            results: list[list[SearchHit] | None] = [None] * len(q)
            pending = list(range(len(q)))
            while pending:
                found = index.search(q[pending], fetch, path_glob=path_glob)
                still = []
                for i, hits in zip(pending, found, strict=True):
                    results[i] = hits
                    if group and not _grouping_done(hits, k, fetch, total, min_score):
                        still.append(i)
                if not still:
                    break
                pending, fetch = still, min(total, fetch * _WIDEN)
            files = self._files_lookup()
        return [self._hits(hits or [], k, min_score, path_glob, group, files) for hits in results]

    # ------------------------------------------------------------------------------------------ helpers
    def embed_query(
        self, query: str, *, mode: str = "caption", instruction: str | None = None
    ) -> np.ndarray:
        """The unit vector a text query is searched with, shape (dim,)."""
        check_text_query(query, mode, instruction)
        from vela_search.embedding.embedder import EmbedItem

        return self._embed([EmbedItem(mode, text=query, instruction=instruction)])[0]

    def _embed(self, items: list[EmbedItem]) -> np.ndarray:
        emb = self.embedder
        with self._lock:
            prefix = emb.prefix_length
            for item in items:
                if item.is_audio:
                    continue
                count = emb.token_count(item)
                if prefix + count > emb.max_positions:
                    room = emb.max_positions - prefix
                    where = f" after the {prefix}-token shared prefix (system turn, demos)" if prefix else ""
                    raise QueryError(
                        f"the query is {count} tokens but at most {room} fit{where} (the model has "
                        f"{emb.max_positions} positions); shorten the query: it is never truncated"
                    )
            return emb.embed_items(items)

    def _files_lookup(self) -> _FilesLookup:
        if self._files is None:
            self._files = _FilesLookup(self.index.files())
        return self._files

    def _hits(
        self,
        found: list[SearchHit],
        k: int,
        min_score: float | None,
        path_glob: str | None,
        group: bool,
        files: _FilesLookup,
    ) -> list[Hit]:
        chosen: list[SearchHit] = []
        seen: set[str] = set()
        for hit in found:  # best first
            if min_score is not None and hit.score < min_score:
                break
            if group:
                key = _file_key(hit.row)
                if key in seen:
                    continue
                seen.add(key)
            chosen.append(hit)
            if len(chosen) == k:
                break
        return [_make_hit(h, rank, files, path_glob) for rank, h in enumerate(chosen, start=1)]


def check_compatible(index: AudioIndex, embedder: VelaEmbedder) -> None:
    """Refuse an embedder whose vectors are not comparable with the index's.

    Raises:
        FingerprintMismatchError: naming each differing field (model, adapter, prompt version, demos,
            ...) with both values, and the fix.
    """
    from vela_search.store.manifest import normalize_fingerprint

    mine = normalize_fingerprint(embedder.fingerprint.to_dict())
    differing = {name: value for name, value in mine.items() if index.fingerprint.get(name) != value}
    if not differing and int(index.dim) != int(embedder.dim):
        differing["dim"] = embedder.dim
    if differing:
        raise _mismatch_error(index, differing)


def _mismatch_error(index: AudioIndex, differing: dict[str, Any]) -> FingerprintMismatchError:
    stored = index.fingerprint
    diffs = "; ".join(
        f"{_FIELD_LABELS.get(name, name)} (index: {_short(stored.get(name))}, query: {_short(value)})"
        for name, value in differing.items()
    )
    return FingerprintMismatchError(
        f"index {index.root} was built with a different embedder than the one loaded for this query: "
        f"{diffs}. Its scores would be meaningless. Query with the index's own embedder (leave out "
        "--model/--adapter/--demos to load the one the index records, or pass the values used for "
        "`vela-search index`), or re-embed the collection with the new one: `vela-search index PATH "
        "--rebuild` with the new --model/--adapter/--demos."
    )


def check_not_empty(index: AudioIndex) -> None:
    """Raise :class:`EmptyIndexError` when the index holds no searchable vectors."""
    if index.num_vectors == 0:
        files = index.files()
        failed = 0
        if files.num_rows:
            failed = sum(1 for s in files["status"].to_pylist() if s == "failed")
        why = f" ({failed} file(s) failed to index; see `vela-search info`)" if failed else ""
        raise EmptyIndexError(
            f"index {index.root} holds no vectors{why}; add audio with `vela-search index PATH`"
        )


def load_query_clip(
    source: str | Path | np.ndarray, start_s: float | None = None, end_s: float | None = None
) -> np.ndarray:
    """The 16 kHz mono clip a query by example is embedded from (see :meth:`Searcher.search_audio`).

    Raises:
        QueryError: an invalid span, or one longer than 30 s.
        AudioDecodeError: the file cannot be decoded.
    """
    from vela_search.audio import SAMPLE_RATE, audio_duration, decode_audio, load_waveform

    if start_s is not None and (not math.isfinite(start_s) or start_s < 0):
        raise QueryError(f"--start must be a number of seconds >= 0, got {start_s}")
    if end_s is not None and (not math.isfinite(end_s) or end_s <= (start_s or 0.0)):
        raise QueryError(f"--end ({end_s}) must be after --start ({start_s or 0.0})")
    span_given = start_s is not None or end_s is not None
    if span_given:
        start = start_s or 0.0
        end = end_s if end_s is not None else start + AUDIO_QUERY_WINDOW_S
        if end - start > MAX_AUDIO_QUERY_S + 1e-9:
            raise QueryError(
                f"the query span {start:g}-{end:g} s is {end - start:g} s long; the audio encoder reads at "
                f"most {MAX_AUDIO_QUERY_S:g} s, so choose a span of up to {MAX_AUDIO_QUERY_S:g} s"
            )
    if isinstance(source, np.ndarray):
        wave = load_waveform(source)
        seconds = len(wave) / SAMPLE_RATE
        if span_given:
            if start >= seconds:
                raise QueryError(f"--start {start:g} s is past the end of the {seconds:.3f} s clip")
            wave = wave[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        elif seconds > MAX_AUDIO_QUERY_S:
            wave = wave[: round(AUDIO_QUERY_WINDOW_S * SAMPLE_RATE)]
        return np.ascontiguousarray(wave)
    if span_given:
        return decode_audio(source, start_s=start, end_s=end)
    if audio_duration(source) <= MAX_AUDIO_QUERY_S:
        # Decoded whole, exactly as indexing embeds a file of up to 30 s: the same file scores ~1.0.
        return decode_audio(source)
    return decode_audio(source, start_s=0.0, end_s=AUDIO_QUERY_WINDOW_S)


# ---------------------------------------------------------------------------------------- internals


def _short(value: Any) -> str:
    text = "none" if value is None else str(value)
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def _file_key(row: dict) -> str:
    # Content is indexed once however many paths hold it, so the stored path identifies the file.
    return str(row.get("path") or row.get("content_sha256") or row.get("id"))


def _grouping_done(
    hits: list[SearchHit], k: int, fetch: int, total: int, min_score: float | None
) -> bool:
    """Whether a grouped query has its answer from ``hits`` (the store's top ``fetch``)."""
    if len(hits) < fetch or fetch >= total:
        return True  # the store had no more candidates (filter or index exhausted)
    if min_score is not None and hits and hits[-1].score < min_score:
        return True  # everything further down scores lower still
    return len({_file_key(h.row) for h in hits}) >= k


class _FilesLookup:
    """The files table as lookups: path → row, content digest → every path holding it."""

    def __init__(self, table: Any) -> None:
        self.rows: dict[str, dict] = {}
        self.by_content: dict[str, list[str]] = {}
        for row in table.to_pylist():
            self.rows[row["path"]] = row
            if row.get("sha256") and row.get("status") != "failed":
                self.by_content.setdefault(row["sha256"], []).append(row["path"])

    def paths(self, path: str, content: str | None) -> list[str]:
        others = sorted(p for p in self.by_content.get(content or "", []) if p != path)
        return [path, *others]


def _make_hit(hit: SearchHit, rank: int, files: _FilesLookup, path_glob: str | None) -> Hit:
    row = hit.row
    path = str(row.get("path"))
    file_row = files.rows.get(path, {})
    content = row.get("content_sha256") or file_row.get("sha256")
    paths = files.paths(path, content)
    for extra in row.get("paths") or []:
        if extra not in paths:
            paths.append(extra)
    if path_glob:
        # The filter may have matched a duplicate's path rather than the stored one: show that one.
        from vela_search.store.shards import compile_glob

        pattern = compile_glob(path_glob)
        matching = [p for p in paths if pattern.match(p)]
        if matching and matching[0] != path:
            path = matching[0]
            paths = [path, *(p for p in paths if p != path)]
            file_row = files.rows.get(path, file_row)
    duration = row.get("duration_s")
    if duration is None:
        duration = file_row.get("duration_s")
    root = row.get("root") or file_row.get("root")
    return Hit(
        path=path,
        start_s=float(row.get("start_s") or 0.0),
        end_s=float(row["end_s"]) if row.get("end_s") is not None else float("nan"),
        score=float(hit.score),
        duration_s=None if duration is None else float(duration),
        segment_id=int(hit.id),
        rank=rank,
        paths=tuple(paths),
        root=None if root is None else str(root),
        file=dict(file_row),
    )
