"""Search by words at library scale: a store of synthetic files with UCS-style names and descriptions, and
the latency of vector-only, words and hybrid search over it, one query at a time.

Every file has one vector (from :class:`~vela_search.bench.synthetic_vectors.ClusteredVectors`) and one
files row, landed through the real writer in commits of ``commit_every`` files; its words are a UCS name
(``AMBForst_<two words>_<library>_<take>``) and a 6-14 word description drawn (Zipf-like) from a
vocabulary of ~2,000 made-up words, stored in the ``words`` column as indexing stores them. The lexical
index is then built from the snapshot as a first search would build it (its time and size are reported).
Last, a commit that adds 0.1 % new files and removes as many is measured: the next generation's lexical
index is made from the previous build plus that delta, as a first search of it would make it.
Queries are one or two vocabulary words drawn the same way, and a fresh vector from the same mixture; the
three sides run through the product's search paths (``Searcher.search_vectors`` and
``search_with_words``), k files each, grouped per file.
"""

from __future__ import annotations

import json
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vela_search.bench.synthetic_vectors import ClusteredVectors, default_clusters
from vela_search.bench.timing import percentile
from vela_search.errors import VelaError

__all__ = ["WordsRun", "WordsSide", "measure_words"]

_FINGERPRINT_MODEL = "bench-words (synthetic clustered vectors and words)"
_CATEGORIES = ("AMB", "DOOR", "WATR", "WIND", "FOLY", "VEH", "ANML", "BIRD", "MACH", "CROWD", "RAIN", "FIRE")
_SYLLABLES = ("ka", "lo", "mi", "ru", "te", "sa", "no", "vi", "de", "po", "ga", "zu", "fe", "ri", "bo")
_WARMUP = 3


@dataclass
class WordsSide:
    """One way of searching, measured one query at a time."""

    mode: str
    queries: int
    latency_ms_p50: float
    latency_ms_p99: float
    mean_hits: float


@dataclass
class WordsRun:
    """What ``bench words`` measured."""

    files: int
    dim: int
    k: int
    build_s: float
    lexical_build_s: float
    vector_bytes: int
    lexical_bytes: int
    factory: str
    lexical_update_files: int = 0
    lexical_update_s: float = 0.0
    lexical_update_mode: str = ""
    sides: list[WordsSide] = field(default_factory=list)
    peak_rss_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-able values."""
        return asdict(self)


class _Words:
    """Deterministic synthetic vocabulary, names and descriptions."""

    def __init__(self, seed: int, size: int = 2000) -> None:
        self.rng = np.random.default_rng(seed)
        words = set()
        while len(words) < size:
            n = int(self.rng.integers(2, 4))
            words.add("".join(self.rng.choice(_SYLLABLES, n)))
        self.vocab = np.array(sorted(words))
        ranks = np.arange(1, size + 1, dtype=np.float64)
        self.p = (1.0 / ranks) / (1.0 / ranks).sum()
        self.libraries = [f"LIB{i:02d}" for i in range(50)]

    def draw(self, n: int) -> list[str]:
        return list(self.rng.choice(self.vocab, n, p=self.p))

    def fields(self, i: int) -> dict[str, str]:
        cat = _CATEGORIES[i % len(_CATEGORIES)]
        sub = self.draw(1)[0].capitalize()
        fx = " ".join(self.draw(2))
        lib = self.libraries[i % len(self.libraries)]
        return {
            "name": f"{cat} {sub} {fx} {lib} Take {i % 9}",
            "category": cat,
            "subcategory": sub,
            "fx_name": fx,
            "library": lib,
            "description": " ".join(self.draw(int(self.rng.integers(6, 15)))),
        }


def _rows(words: _Words, start: int, stop: int) -> tuple[list[dict], list[dict]]:
    """Segment rows (one per file, with its words) and files rows of files ``start`` to ``stop``."""
    paths = [f"/library/file-{i:08d}.wav" for i in range(start, stop)]
    rows = [
        {"path": p, "segment": 0, "start_s": 0.0, "end_s": 10.0, "duration_s": 10.0,
         "words": json.dumps(words.fields(i))}
        for i, p in zip(range(start, stop), paths, strict=True)
    ]  # fmt: skip
    files = [
        {"path": p, "size": 1, "mtime_ns": 0, "sha256": f"{i:064x}", "duration_s": 10.0,
         "status": "indexed", "segments": 1, "root": "/library"}
        for i, p in zip(range(start, stop), paths, strict=True)
    ]  # fmt: skip
    return rows, files


def _update(root: Path, n: int, dim: int, seed: int, generator: ClusteredVectors) -> tuple[int, float, str]:
    """Commit 0.1 % new files and remove as many old ones; the time the next lexical build takes and how
    it was made (``delta`` or ``full``)."""
    from vela_search.search.hybrid import lexical_for
    from vela_search.search.lexical import LEXICAL_DIR, snapshot_key
    from vela_search.store import AudioIndex

    count = max(1, n // 1000)
    rows, files = _rows(_Words(seed + 2), n, n + count)
    fingerprint = {"model": _FINGERPRINT_MODEL, "dim": dim}
    with AudioIndex.open(root, shards=False).writer(fingerprint=fingerprint) as writer:
        writer.add(generator.vectors(0, count), rows)  # any vectors: only the words are measured here
        writer.put_files(files)
        writer.delete(np.arange(count, dtype=np.int64))  # files 0..count-1 (one segment each) are gone
        writer.remove_files([f"/library/file-{i:08d}.wav" for i in range(count)])
        writer.commit()
    with AudioIndex.open(root) as index:
        mark = time.perf_counter()
        lexical_for(index)
        took = time.perf_counter() - mark
        done = json.loads((root / LEXICAL_DIR / snapshot_key(index) / "done.json").read_text())
    return count, took, str(done.get("built", {}).get("mode"))


def _build(
    root: Path, n: int, dim: int, seed: int, every: int, progress: Any
) -> tuple[float, ClusteredVectors]:
    from vela_search.store import AudioIndex

    generator = ClusteredVectors(dim, default_clusters(n), seed=seed)
    words = _Words(seed)
    fingerprint = {"model": _FINGERPRINT_MODEL, "dim": dim}
    AudioIndex.create(root, fingerprint=fingerprint, dim=dim).close()
    build_s = 0.0
    with AudioIndex.open(root, shards=False).writer(fingerprint=fingerprint) as writer:
        for start in range(0, n, every):
            stop = min(n, start + every)
            vectors = generator.vectors(start, stop)
            rows, files = _rows(words, start, stop)
            mark = time.perf_counter()
            writer.add(vectors, rows)
            writer.put_files(files)
            writer.commit()
            build_s += time.perf_counter() - mark
            if progress is not None:
                progress("build", stop, n)
    return build_s, generator


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _side(mode: str, run_one: Callable[[int], int], queries: int) -> WordsSide:
    for i in range(min(_WARMUP, queries)):
        run_one(i)
    times, hits = [], []
    for i in range(queries):
        mark = time.perf_counter()
        hits.append(run_one(i))
        times.append((time.perf_counter() - mark) * 1000)
    return WordsSide(mode, queries, round(percentile(times, 50), 3), round(percentile(times, 99), 3),
                     round(float(np.mean(hits)), 2))  # fmt: skip


def measure_words(
    files: int,
    *,
    dim: int = 256,
    queries: int = 200,
    k: int = 10,
    commit_every: int = 50_000,
    workdir: str | Path | None = None,
    keep: bool = False,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> WordsRun:
    """Build a store of ``files`` synthetic files with words and measure vector, words and hybrid search.

    Raises:
        VelaError: a count below 1, or k larger than the collection.
    """
    from vela_search.search import Searcher
    from vela_search.search.hybrid import lexical_for, search_with_words
    from vela_search.store import AudioIndex

    for name, value in (("files", files), ("dim", dim), ("queries", queries), ("k", k)):
        if value < 1:
            raise VelaError(f"{name} must be at least 1, got {value}")
    if k > files:
        raise VelaError(f"k ({k}) must not exceed the number of files ({files})")
    scratch = Path(tempfile.mkdtemp(prefix="vela-bench-words-", dir=workdir))
    try:
        root = scratch / "index"
        build_s, generator = _build(root, files, dim, seed, commit_every, progress)
        probes = generator.queries(queries)
        words = _Words(seed + 1)
        texts = [" ".join(words.draw(1 + i % 2)) for i in range(queries)]
        with AudioIndex.open(root) as index:
            mark = time.perf_counter()
            lexical_for(index)
            lexical_build_s = time.perf_counter() - mark
            searcher = Searcher(index, None)
            sides = [
                _side("vector", lambda i: len(searcher.search_vectors(probes[i], k=k)[0]), queries),
                _side(
                    "words",
                    lambda i: len(search_with_words(searcher, texts[i], mode="words", where=[], k=k)),
                    queries,
                ),
                _side(
                    "hybrid",
                    lambda i: len(
                        search_with_words(searcher, texts[i], mode="hybrid", where=[], k=k, vector=probes[i])
                    ),
                    queries,
                ),
            ]
            if progress is not None:
                progress("search", 1, 1)
            vector_bytes = sum(_folder_bytes(root / d) for d in ("shards",)) + sum(
                p.stat().st_size for p in root.glob("*.parquet")
            )
            lexical_bytes = _folder_bytes(root / "lexical")
            factory = str(index.index_info().get("factory") or index.factory)
        update_files, update_s, update_mode = _update(root, files, dim, seed, generator)
        notes = [f"index kept at {root}"] if keep else []
        return WordsRun(
            files=files,
            dim=dim,
            k=k,
            build_s=round(build_s, 2),
            lexical_build_s=round(lexical_build_s, 2),
            vector_bytes=vector_bytes,
            lexical_bytes=lexical_bytes,
            lexical_update_files=update_files,
            lexical_update_s=round(update_s, 2),
            lexical_update_mode=update_mode,
            factory=factory,
            sides=sides,
            peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            notes=notes,
        )
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
