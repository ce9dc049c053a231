"""The `Searcher`: text, audio and vector queries over one index with the embedder that built it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vela_search.errors import QueryError
from vela_search.search.clips import load_query_clip
from vela_search.search.grouping import FilesLookup, draw_grouped, file_key, make_hit
from vela_search.search.hits import Hit
from vela_search.search.index_embedder import check_compatible, load_index_embedder, notice_for_model
from vela_search.search.options import SearchOptions
from vela_search.search.rerank import DEFAULT_RERANK
from vela_search.search.similar import segment_row, stored_file_vector, stored_segment_vector
from vela_search.search.validation import DEFAULT_K, check_fits, check_not_empty, check_text_query

if TYPE_CHECKING:
    from vela_search.embedding.embedder import EmbedItem, VelaEmbedder
    from vela_search.embedding.judge import JudgeReference
    from vela_search.embedding.judge_prompt import JudgePrompt
    from vela_search.store import AudioIndex, SearchHit

__all__ = ["Searcher"]


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
        # Built with the snapshot (by whoever opens or refreshes it), so no query pays for it.
        self._files = FilesLookup(index.files())

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
        latest = self.index.refreshed()  # reads only what the new generation adds
        if latest is self.index:
            return False
        try:
            if self.embedder is not None:
                check_compatible(latest, self.embedder)
            files = FilesLookup(latest.files())
        except BaseException:
            latest.close()
            raise
        with self._lock:
            old, self.index, self._files = self.index, latest, files
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
        nprobe: int | None = None,
        refine: int | None = None,
        exact: bool = False,
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
            nprobe: compressed indexes only: IVF lists probed first, 1..MAX_NPROBE (default: the value
                the index was tuned for; more is slower and finds more). A filter that leaves too few
                candidates widens it automatically, so it never costs hits.
            refine: compressed indexes only: candidates re-scored exactly with the stored vectors,
                1..MAX_REFINE (default: the tuned re-rank depth, at least 10 x k).
            exact: scan every stored vector instead of the compressed codes (exact, slower on large
                indexes). All three are ignored by indexes searched exactly anyway.

        Raises:
            QueryError: empty query or instruction, bad mode, k, nprobe or refine out of bounds, or a
                query over the token limit (the message gives its token count and the limit).
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
            nprobe=nprobe,
            refine=refine,
            exact=exact,
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
        nprobe: int | None = None,
        refine: int | None = None,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """Search with many text queries at once (embedded in shared batches, searched together).

        Same arguments as :meth:`search`, ``queries`` in place of one query.

        Returns:
            One list of hits per query, in order.
        """
        if isinstance(queries, str):
            raise TypeError("search_many takes a sequence of queries; use search() for one")
        options = self._checked(
            k=k,
            min_score=min_score,
            path_glob=path_glob,
            duration=duration,
            group=group,
            nprobe=nprobe,
            refine=refine,
            exact=exact,
        )
        if not queries:
            return []
        for query in queries:
            check_text_query(query, mode, instruction)
        from vela_search.embedding.embedder import EmbedItem

        items = [EmbedItem(mode, text=q, instruction=instruction) for q in queries]
        vectors = self.embed(items)
        return self.search_checked(vectors, options)

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
        nprobe: int | None = None,
        refine: int | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """Query by example: embed an audio clip as audio and search with it.

        Without a span, a file of up to 30 s is used whole (as ``vela-search index`` embeds it) and a
        longer one over its first 10 s window. With ``start_s``/``end_s`` that span is used (``start_s``
        alone: a 10 s window from there); a span may be at most 30 s.

        Args:
            source: an audio file (any supported format) or a 16 kHz mono float32 waveform.
            start_s: start of the span in seconds.
            end_s: end of the span in seconds.
            k, min_score, path_glob, duration, group, nprobe, refine, exact: as in :meth:`search`.

        Raises:
            QueryError: an invalid span or one longer than 30 s, k out of bounds.
            AudioDecodeError: the file cannot be decoded.
            EmptyIndexError: the index holds no vectors.
        """
        options = self._checked(
            k=k,
            min_score=min_score,
            path_glob=path_glob,
            duration=duration,
            group=group,
            nprobe=nprobe,
            refine=refine,
            exact=exact,
        )
        from vela_search.embedding.embedder import EmbedItem

        wave = load_query_clip(source, start_s, end_s)
        vectors = self.embed([EmbedItem("audio", wave=wave)])
        return self.search_checked(vectors, options)[0]

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
        nprobe: int | None = None,
        refine: int | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """More like a file the index holds: search with its stored vectors, no model needed.

        For a file of up to 30 s this is query by example without embedding (its one stored vector); for a
        longer file, the normalised mean of its windows' vectors, or of those overlapping the span.

        Args:
            path: a file of the index (a copy's path works too).
            start_s: with ``end_s``, only the windows overlapping this span.
            end_s: end of the span.
            k, min_score, path_glob, duration, group, nprobe, refine, exact: as in :meth:`search`.

        Raises:
            QueryError: the file is not in the index, no window overlaps the span, k out of bounds.
            EmptyIndexError: the index holds no vectors.
        """
        options = self._checked(
            k=k,
            min_score=min_score,
            path_glob=path_glob,
            duration=duration,
            group=group,
            nprobe=nprobe,
            refine=refine,
            exact=exact,
        )
        return self.search_checked(self.file_vector(path, start_s, end_s), options)[0]

    def search_like_segment(
        self,
        segment_id: int,
        *,
        k: int = DEFAULT_K,
        min_score: float | None = None,
        path_glob: str | None = None,
        duration: tuple[float | None, float | None] | None = None,
        group: bool = True,
        nprobe: int | None = None,
        refine: int | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """More like one indexed segment (the ``segment_id`` of a hit): search with its stored vector.

        Raises:
            QueryError: no live segment has this id in the current snapshot, k out of bounds.
            EmptyIndexError: the index holds no vectors.
        """
        options = self._checked(
            k=k,
            min_score=min_score,
            path_glob=path_glob,
            duration=duration,
            group=group,
            nprobe=nprobe,
            refine=refine,
            exact=exact,
        )
        return self.search_checked(self.segment_vector(segment_id), options)[0]

    def file_vector(
        self, path: str | Path, start_s: float | None = None, end_s: float | None = None
    ) -> np.ndarray:
        """The vector :meth:`search_like` searches with for an indexed file (or the span of it).

        Raises:
            QueryError: the file is not in the index, or no window overlaps the span.
        """
        with self._lock:
            return stored_file_vector(self.index, path, start_s=start_s, end_s=end_s)

    def segment_vector(self, segment_id: int) -> np.ndarray:
        """The stored vector of a live segment of the current snapshot.

        Raises:
            QueryError: no live segment has this id.
        """
        with self._lock:
            return stored_segment_vector(self.index, segment_id)

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
        nprobe: int | None = None,
        refine: int | None = None,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """Search with query vectors already embedded by this Searcher's embedder.

        Grouped search draws segments from the store k x 8 at a time, leaving out the files it has,
        until it has k distinct files, the rest scores below ``min_score``, or the index is exhausted
        (see :func:`draw_grouped`); every file's hit is then its best segment. Every hit carries the
        generation of the snapshot that produced it (``Hit.generation``).

        Args:
            vectors: (n, dim) float32 unit vectors (a single (dim,) vector is one query).
            k, min_score, path_glob, duration, group, nprobe, refine, exact: as in :meth:`search`.

        Returns:
            One list of hits per query.
        """
        return self.search_checked(
            vectors,
            self._checked(
                k=k,
                min_score=min_score,
                path_glob=path_glob,
                duration=duration,
                group=group,
                nprobe=nprobe,
                refine=refine,
                exact=exact,
            ),
        )

    def _checked(self, **options: object) -> SearchOptions:
        """Every search method's checks, in one place: the options, then a non-empty index.

        Raises:
            QueryError: an option out of bounds (see `SearchOptions.checked`).
            EmptyIndexError: the index holds no vectors.
        """
        checked = SearchOptions.checked(**options)
        check_not_empty(self.index)
        return checked

    def search_checked(self, vectors: np.ndarray, options: SearchOptions) -> list[list[Hit]]:
        """Search with query vectors and options checked where the request entered (not again here).

        ``options`` come from :meth:`SearchOptions.checked` (e.g. a
        :class:`~vela_search.search.request.CheckedQuery`'s); the ``search_*`` methods above check their
        keywords into one first.

        Raises:
            EmptyIndexError: the snapshot holds no vectors.
        """
        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        store_options = options.store_options()
        with self._lock:  # a refresh waits: it closes the snapshot being searched
            index = self.index  # one snapshot answers the whole call, and names its generation
            check_not_empty(index)
            if options.group:
                found = draw_grouped(index, q, options.k, options.min_score, store_options)
            else:
                found = index.search(q, min(index.num_vectors, options.k), **store_options)
            files = self._files
        return [self._hits(hits, options, files, index.generation) for hits in found]

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

        return self.embed([EmbedItem(mode, text=query, instruction=instruction)])[0]

    def embed(self, items: list[EmbedItem]) -> np.ndarray:
        """The unit vectors of ``items`` (texts checked already), shape (n, dim).

        Raises:
            QueryError: no model, or a text that does not fit behind the prefix (only the model can tell).
        """
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

    def _hits(
        self, found: list[SearchHit], options: SearchOptions, files: FilesLookup, generation: int
    ) -> list[Hit]:
        chosen: list[SearchHit] = []
        seen: set[str] = set()
        for hit in found:  # best first
            if options.min_score is not None and hit.score < options.min_score:
                break
            if options.group:
                key = file_key(hit.row)
                if key in seen:
                    continue
                seen.add(key)
            chosen.append(hit)
            if len(chosen) == options.k:
                break
        files.prefetch([str(h.row.get("path")) for h in chosen])
        return [
            make_hit(h, rank, files, options.path_glob, generation) for rank, h in enumerate(chosen, start=1)
        ]
