"""The `Searcher`: text, audio and vector queries over one index with the embedder that built it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vela_search.errors import QueryError
from vela_search.search.clips import load_query_clip
from vela_search.search.grouping import _file_key, _FilesLookup, _grouping_done, _make_hit
from vela_search.search.hits import Hit
from vela_search.search.index_embedder import check_compatible, load_index_embedder, notice_for_model
from vela_search.search.rerank import DEFAULT_RERANK
from vela_search.search.similar import segment_row, stored_file_vector, stored_segment_vector
from vela_search.search.validation import (
    DEFAULT_K,
    check_duration,
    check_fits,
    check_k,
    check_min_score,
    check_not_empty,
    check_text_query,
    normalize_glob,
)

if TYPE_CHECKING:
    from vela_search.embedding.embedder import EmbedItem, VelaEmbedder
    from vela_search.embedding.judge import JudgeReference
    from vela_search.embedding.judge_prompt import JudgePrompt
    from vela_search.store import AudioIndex, SearchHit

__all__ = ["Searcher"]


# Grouped search first asks the store for k * this many segments, then widens by _WIDEN while files are
# missing: a file contributes several overlapping windows, and most of them score alike.
_OVERFETCH = 8
_WIDEN = 4


class Searcher:
    """Answers queries over one index with the embedder that built it.

    Example:
        >>> searcher = Searcher.open("indexes/default")
        >>> for hit in searcher.search("dog barking then a car passes", k=5):
        ...     print(hit.rank, f"{hit.score:.3f}", hit.path, hit.start_s, hit.end_s)

    Reuse one Searcher for many queries: the model, the shared demonstration prefix and the shard copies
    are loaded once. Calls are serialised on the embedder, so a Searcher may be shared between threads.
    """

    def __init__(self, index: AudioIndex, embedder: VelaEmbedder | None) -> None:
        """Pair an open index with an embedder (None: searches with stored vectors only, no model).

        Raises:
            FingerprintMismatchError: the embedder is not the one the index was built with; the message
                names the differing fields and the fix.
        """
        if embedder is not None:
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
                index,
                model=model,
                adapter=adapter,
                demos=demos,
                device=device,
                dtype=dtype,
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
        if self.embedder is not None:
            return self.embedder.notice
        return notice_for_model(str(self.index.fingerprint.get("model") or ""))

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
            if self.embedder is not None:
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
        duration: tuple[float | None, float | None] | None = None,
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
            duration: only files whose length in seconds lies in ``(min, max)`` (inclusive; None for an open
                end), applied before top-k, e.g. ``(None, 2.0)`` for one-shots of up to 2 s.
            group: one hit per file (its best segment); False lists every segment.

        Raises:
            QueryError: empty query or instruction, bad mode, k out of bounds, or a query over the token
                limit (the message gives its token count and the limit).
            EmptyIndexError: the index holds no vectors.
        """
        return self.search_many(
            [query],
            mode=mode,
            instruction=instruction,
            k=k,
            min_score=min_score,
            path_glob=path_glob,
            duration=duration,
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
        duration: tuple[float | None, float | None] | None = None,
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
        min_score = check_min_score(min_score)
        if duration is not None:
            duration = check_duration(duration)  # before any embedding work
        if not queries:
            return []
        for query in queries:
            check_text_query(query, mode, instruction)
        check_not_empty(self.index)
        from vela_search.embedding.embedder import EmbedItem

        items = [EmbedItem(mode, text=q, instruction=instruction) for q in queries]
        vectors = self._embed(items)
        return self.search_vectors(
            vectors, k=k, min_score=min_score, path_glob=path_glob, duration=duration, group=group
        )

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
        duration: tuple[float | None, float | None] | None = None,
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
            k, min_score, path_glob, duration, group: as in :meth:`search`.

        Raises:
            QueryError: an invalid span or one longer than 30 s, k out of bounds.
            AudioDecodeError: the file cannot be decoded.
            EmptyIndexError: the index holds no vectors.
        """
        k = check_k(k)
        min_score = check_min_score(min_score)
        if duration is not None:
            duration = check_duration(duration)  # before any embedding work
        check_not_empty(self.index)
        from vela_search.embedding.embedder import EmbedItem

        wave = load_query_clip(source, start_s, end_s)
        vectors = self._embed([EmbedItem("audio", wave=wave)])
        return self.search_vectors(
            vectors, k=k, min_score=min_score, path_glob=path_glob, duration=duration, group=group
        )[0]

    def search_like(
        self,
        path: str | Path,
        start_s: float | None = None,
        end_s: float | None = None,
        *,
        k: int = DEFAULT_K,
        min_score: float | None = None,
        path_glob: str | None = None,
        duration: tuple[float | None, float | None] | None = None,
        group: bool = True,
    ) -> list[Hit]:
        """More like a file the index holds: search with its stored vectors, no model needed.

        For a file of up to 30 s this is query by example without embedding (its one stored vector); for a
        longer file, the normalised mean of its windows' vectors, or of those overlapping the span.

        Args:
            path: a file of the index (a copy's path works too).
            start_s: with ``end_s``, only the windows overlapping this span.
            end_s: end of the span.
            k, min_score, path_glob, duration, group: as in :meth:`search`.

        Raises:
            QueryError: the file is not in the index, no window overlaps the span, k out of bounds.
            EmptyIndexError: the index holds no vectors.
        """
        k = check_k(k)
        min_score = check_min_score(min_score)
        if duration is not None:
            duration = check_duration(duration)  # before any embedding work
        check_not_empty(self.index)
        with self._lock:
            vector = stored_file_vector(self.index, path, start_s=start_s, end_s=end_s)
        return self.search_vectors(
            vector, k=k, min_score=min_score, path_glob=path_glob, duration=duration, group=group
        )[0]

    def search_like_segment(
        self,
        segment_id: int,
        *,
        k: int = DEFAULT_K,
        min_score: float | None = None,
        path_glob: str | None = None,
        duration: tuple[float | None, float | None] | None = None,
        group: bool = True,
    ) -> list[Hit]:
        """More like one indexed segment (the ``segment_id`` of a hit): search with its stored vector.

        Raises:
            QueryError: no live segment has this id in the current snapshot, k out of bounds.
            EmptyIndexError: the index holds no vectors.
        """
        k = check_k(k)
        min_score = check_min_score(min_score)
        if duration is not None:
            duration = check_duration(duration)
        check_not_empty(self.index)
        with self._lock:
            vector = stored_segment_vector(self.index, segment_id)
        return self.search_vectors(
            vector, k=k, min_score=min_score, path_glob=path_glob, duration=duration, group=group
        )[0]

    def segment(self, segment_id: int) -> dict:
        """The metadata row of a live segment of the current snapshot (path, start_s, end_s, ...).

        Raises:
            QueryError: no live segment has this id.
        """
        with self._lock:
            return segment_row(self.index, segment_id)

    # ----------------------------------------------------------------------------------- vector queries
    def search_vectors(
        self,
        vectors: np.ndarray,
        *,
        k: int = DEFAULT_K,
        min_score: float | None = None,
        path_glob: str | None = None,
        duration: tuple[float | None, float | None] | None = None,
        group: bool = True,
    ) -> list[list[Hit]]:
        """Search with query vectors already embedded by this Searcher's embedder.

        Grouped search over-fetches segments from the store (k x 8, widened x 4 as needed) until it has
        k distinct files, the rest scores below ``min_score``, or the index is exhausted; every file's
        hit is then its best segment.

        Args:
            vectors: (n, dim) float32 unit vectors (a single (dim,) vector is one query).
            k, min_score, path_glob, duration, group: as in :meth:`search`.

        Returns:
            One list of hits per query.
        """
        k = check_k(k)
        min_score = check_min_score(min_score)
        path_glob = normalize_glob(path_glob)
        ranges = {"duration_s": check_duration(duration)} if duration is not None else None
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
                found = index.search(q[pending], fetch, path_glob=path_glob, ranges=ranges)
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

    # ------------------------------------------------------------------------------------------ re-ranking
    def rerank(
        self,
        hits: Sequence[Hit],
        reference: JudgeReference,
        *,
        n: int = DEFAULT_RERANK,
        prompt: JudgePrompt | str | Path | None = None,
        on_model_thread: Callable[[Callable[[], np.ndarray]], np.ndarray] | None = None,
    ) -> list[Hit]:
        """Re-order the top ``n`` hits by the audio LLM's judgement combined with their scores.

        The judge is this Searcher's model (same weights, adapter, quantization); see
        :mod:`vela_search.search.rerank` for the rule. Hits whose audio cannot be decoded keep their rank.

        Args:
            hits: hits of this Searcher, best first.
            reference: the query as the judge reads it (``JudgeReference.for_text(...)`` or a clip).
            n: how many of the top hits to judge (1..MAX_RERANK).
            prompt: the judge prompt (a JSON file or a ``JudgePrompt``; None: the default).
            on_model_thread: runs the judge's forward where the model runs (a server's model thread,
                between its embedding batches); None: here, under this Searcher's lock.

        Raises:
            QueryError: no model, or ``n`` out of bounds; TokenBudgetError: the query is too long.
        """
        from vela_search.embedding.judge import AudioJudge
        from vela_search.search.rerank import check_rerank, rerank_hits

        check_rerank(n)
        if self.embedder is None:
            raise QueryError("re-ranking needs the model: open the Searcher with its embedder")
        judge = AudioJudge.for_embedder(self.embedder, prompt)

        def locked(ref: JudgeReference, clips: list[np.ndarray]) -> np.ndarray:
            if on_model_thread is not None:
                return on_model_thread(lambda: judge.judge(ref, clips))
            with self._lock:
                return judge.judge(ref, clips)

        return rerank_hits(hits, reference, locked, n=n, vector_weight=judge.prompt.vector_weight)

    # ------------------------------------------------------------------------------------------ helpers
    def embed_query(self, query: str, *, mode: str = "caption", instruction: str | None = None) -> np.ndarray:
        """The unit vector a text query is searched with, shape (dim,)."""
        check_text_query(query, mode, instruction)
        from vela_search.embedding.embedder import EmbedItem

        return self._embed([EmbedItem(mode, text=query, instruction=instruction)])[0]

    def _embed(self, items: list[EmbedItem]) -> np.ndarray:
        emb = self.embedder
        if emb is None:
            raise QueryError(
                "this Searcher has no model: it searches with stored vectors (search_like, search_vectors) "
                "only; open it with Searcher.open(...) to embed queries"
            )
        with self._lock:
            for item in items:
                check_fits(emb, item)
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
