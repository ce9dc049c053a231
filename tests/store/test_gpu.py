"""GPU search honours deletions and filters, proved with a stand-in GPU index that ignores its selector
(as FAISS's classic GPU indexes do); the FAISS build description; `to_gpu` without GPUs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vela_search.store import AudioIndex, faiss_ops, gpu

from .helpers import DIM, FP, brute_force, glob_mask, unit


class SelectorIgnoringIndex:
    """A CPU index behind the interface of a classic FAISS GPU index: it accepts search parameters and
    ignores their selector, and refuses k above the GPU limit."""

    def __init__(self, cpu: object) -> None:
        self.cpu = cpu
        self.ntotal = cpu.ntotal
        self.d = cpu.d
        self.widths: list[int] = []

    def search(self, queries: np.ndarray, k: int, params: object = None) -> tuple[np.ndarray, np.ndarray]:
        if k > gpu.GPU_MAX_K:
            raise RuntimeError("Error: 'k <= GPU_MAX_SELECTION_K' failed")
        self.widths.append(k)
        return self.cpu.search(queries, k)  # the selector in `params`, if any, is ignored


@pytest.fixture
def stand_ins(monkeypatch) -> list[SelectorIgnoringIndex]:
    """Every shard reader's `to_gpu` returns a stand-in GPU index; the list collects them."""
    made: list[SelectorIgnoringIndex] = []

    def to_gpu(index: object) -> SelectorIgnoringIndex:
        made.append(SelectorIgnoringIndex(index))
        return made[-1]

    monkeypatch.setattr(gpu, "to_gpu", to_gpu)
    return made


@pytest.fixture
def cpu_calls(monkeypatch) -> list[int]:
    """Counts the CPU searches (with their query counts) that GPU search falls back to."""
    calls: list[int] = []
    search = faiss_ops.search

    def counted(index, queries, k, allowed):  # noqa: ANN001, ANN202
        calls.append(len(queries))
        return search(index, queries, k, allowed)

    monkeypatch.setattr(faiss_ops, "search", counted)
    return calls


def _collection(root) -> tuple[np.ndarray, np.ndarray, list[dict]]:  # noqa: ANN001
    """Three shards of 60 rows over /birds and /cars with durations; ids 0..179. Returns the live ids,
    their vectors and rows after deleting every fifth id."""
    vectors = unit(180, seed=3)
    rows = [
        {"path": f"/{'birds' if i % 3 else 'cars'}/{i % 11}.wav", "duration_s": float(i % 9)}
        for i in range(180)
    ]
    index = AudioIndex.create(root, fingerprint=FP, dim=DIM)
    with index.writer(fingerprint=FP, max_shard_size=60) as w:
        w.add(vectors, rows)
        w.commit()
        w.delete(np.arange(0, 180, 5))
        w.commit()
    index.close()
    live = np.array([i for i in range(180) if i % 5])
    return live, vectors[live], [rows[i] for i in live]


def _expected(ids, vectors, rows, queries, k, keep=None):  # noqa: ANN001, ANN202
    keep = np.ones(len(ids), bool) if keep is None else keep
    return brute_force(ids[keep], vectors[keep], queries, k)[0].tolist()


def _hits(index: AudioIndex, queries: np.ndarray, k: int, **filters) -> list[list[int]]:
    return [[h.id for h in q] for q in index.search(queries, k, **filters)]


def test_a_stand_in_gpu_index_leaks_excluded_rows_when_trusted_with_a_selector():
    # What the store must not do: hand the GPU index the selector and take its top-k.
    cpu = faiss_ops.build("SQfp16", DIM)
    cpu.add(unit(50, seed=1))
    allowed = np.zeros(50, bool)
    allowed[::7] = True
    params = faiss_ops.faiss().SearchParameters(sel=faiss_ops.bitmap_selector(allowed))
    _, leaked = SelectorIgnoringIndex(cpu).search(unit(3, seed=2), 5, params)
    assert not allowed[leaked].all()
    _, positions = gpu.search(SelectorIgnoringIndex(cpu), cpu, unit(3, seed=2), 5, allowed)
    assert allowed[positions].all()


def test_gpu_search_honours_deletions_path_globs_and_duration_ranges(tmp_path, stand_ins, cpu_calls):
    live, vectors, rows = _collection(tmp_path / "idx")
    queries = unit(6, seed=9)
    k = 7
    with AudioIndex.open(tmp_path / "idx") as index:
        assert _hits(index, queries, k) == _expected(live, vectors, rows, queries, k)
        birds = glob_mask(rows, "/birds/*")
        assert _hits(index, queries, k, path_glob="/birds/*") == _expected(
            live, vectors, rows, queries, k, birds
        )
        short = np.array([r["duration_s"] <= 3 for r in rows])
        assert _hits(index, queries, k, ranges={"duration_s": (None, 3.0)}) == _expected(
            live, vectors, rows, queries, k, short
        )
        both = _hits(index, queries, k, path_glob="/cars/*", ranges={"duration_s": (2.0, 6.0)})
        cars = glob_mask(rows, "/cars/*") & np.array([2 <= r["duration_s"] <= 6 for r in rows])
        assert both == _expected(live, vectors, rows, queries, k, cars)
    # The searches ran on the stand-ins, each over-fetching within the GPU limit, and needed no CPU.
    assert len(stand_ins) == 3 and all(s.widths for s in stand_ins)
    assert max(w for s in stand_ins for w in s.widths) <= gpu.GPU_MAX_K
    assert cpu_calls == []


def test_queries_the_gpu_candidates_cannot_prove_are_searched_on_the_cpu(
    tmp_path, stand_ins, cpu_calls, monkeypatch
):
    # A GPU limit of 12 candidates with a filter keeping a third of the rows: some queries find their
    # k allowed rows among the 12 (answered on the GPU), the others are searched again on the CPU.
    monkeypatch.setattr(gpu, "GPU_MAX_K", 12)
    live, vectors, rows = _collection(tmp_path / "idx")
    queries = unit(40, seed=4)
    k = 4
    cars = glob_mask(rows, "/cars/*")
    with AudioIndex.open(tmp_path / "idx") as index:
        assert _hits(index, queries, k, path_glob="/cars/*") == _expected(
            live, vectors, rows, queries, k, cars
        )
    assert all(max(s.widths) == 12 for s in stand_ins)
    redone = sum(cpu_calls)
    assert 0 < redone < 3 * len(queries)  # per shard, only the queries that came short


def test_k_beyond_the_gpu_limit_and_gpu_errors_search_the_cpu(tmp_path, stand_ins, cpu_calls, monkeypatch):
    monkeypatch.setattr(gpu, "GPU_MAX_K", 5)
    live, vectors, rows = _collection(tmp_path / "idx")
    queries = unit(2, seed=6)
    with AudioIndex.open(tmp_path / "idx") as index:
        assert _hits(index, queries, 9) == _expected(live, vectors, rows, queries, 9)
        assert len(cpu_calls) == 3
        monkeypatch.setattr(
            SelectorIgnoringIndex, "search", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError)
        )
        assert _hits(index, queries, 3) == _expected(live, vectors, rows, queries, 3)
        assert len(cpu_calls) == 6


def test_an_ivf_index_that_runs_out_of_candidates_is_answered_on_the_gpu(cpu_calls):
    # IVF probes a few lists: fewer candidates than asked for prove the allowed ones are all there is.
    cpu = faiss_ops.build("IVF4,Flat", DIM)
    data = unit(400, seed=1)
    faiss_ops.train(cpu, data, "IVF4,Flat")
    cpu.add(data)
    faiss_ops.faiss().extract_index_ivf(cpu).nprobe = 1
    allowed = np.random.default_rng(0).random(400) < 0.5
    queries = unit(5, seed=2)
    scores, positions = gpu.search(SelectorIgnoringIndex(cpu), cpu, queries, 10, allowed)
    expected = faiss_ops.search(cpu, queries, 10, allowed)
    cpu_calls.clear()  # the reference search above
    assert np.array_equal(positions, expected[1]) and np.allclose(scores, expected[0])
    assert allowed[positions[positions >= 0]].all()


def test_to_gpu_returns_the_cpu_index_without_gpus():
    index = faiss_ops.build("SQfp16", DIM)
    index.add(unit(5))
    assert gpu.gpu_count() == 0  # the CPU build of FAISS, as installed for the tests
    assert gpu.to_gpu(index) is index
    ivfpq = faiss_ops.build("IVF2,PQ4", DIM)
    assert gpu.to_gpu(ivfpq) is ivfpq


def test_faiss_build_describes_the_installed_faiss():
    build = gpu.faiss_build()
    f = faiss_ops.faiss()
    assert build["version"] == f.__version__
    assert build["compile_options"] == f.get_compile_options().split()
    assert build["gpu_support"] == hasattr(f, "StandardGpuResources")
    assert build["gpus"] == gpu.gpu_count() and isinstance(build["cuvs"], bool)


@pytest.mark.gpu
def test_on_a_real_gpu_filtered_searches_match_the_cpu(tmp_path, monkeypatch):
    # Needs a GPU build of FAISS and a GPU (`python -m pytest -m gpu`); the default run deselects it.
    if gpu.gpu_count() == 0:
        pytest.skip("FAISS sees no GPU")
    live, vectors, rows = _collection(tmp_path / "idx")
    queries = unit(8, seed=5)
    filters = [{}, {"path_glob": "/birds/*"}, {"ranges": {"duration_s": (None, 3.0)}}]
    with AudioIndex.open(tmp_path / "idx") as index:
        on_gpu = [_hits(index, queries, 5, **f) for f in filters]
        assert all(r.search_index() is not r.index() for r in index.shard_readers())
    monkeypatch.setattr(gpu, "to_gpu", lambda index: index)
    with AudioIndex.open(tmp_path / "idx") as index:
        assert on_gpu == [_hits(index, queries, 5, **f) for f in filters]
    ivfpq = faiss_ops.build("IVF4,PQ4", DIM)
    faiss_ops.train(ivfpq, unit(600, seed=1), "IVF4,PQ4")
    ivfpq.add(unit(600, seed=1))
    assert gpu.to_gpu(ivfpq) is not ivfpq  # IVF-PQ moves to the GPU


class OverlapCountingIndex(SelectorIgnoringIndex):
    """A stand-in GPU index that records how many searches of any such index run at the same moment."""

    active = 0
    most = 0
    guard = threading.Lock()

    def search(self, queries: np.ndarray, k: int, params: object = None) -> tuple[np.ndarray, np.ndarray]:
        cls = OverlapCountingIndex
        with cls.guard:
            cls.active += 1
            cls.most = max(cls.most, cls.active)
        try:
            time.sleep(0.002)  # long enough for another thread to arrive
            return super().search(queries, k, params)
        finally:
            with cls.guard:
                cls.active -= 1


def _search_from_threads(indexes: list[AudioIndex], queries: np.ndarray) -> list[list[list[int]]]:
    """Each index searched by 3 threads at once, 5 times each; returns every answer."""
    jobs = [index for index in indexes for _ in range(3)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(lambda i=i: [_hits(i, queries, 5) for _ in range(5)]) for i in jobs]
        return [answer for f in futures for answer in f.result()]


def test_searches_of_two_indexes_never_share_the_gpu_resources_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "to_gpu", OverlapCountingIndex)
    monkeypatch.setattr(OverlapCountingIndex, "most", 0)
    _collection(tmp_path / "a")
    _collection(tmp_path / "b")
    queries = unit(4, seed=3)
    with AudioIndex.open(tmp_path / "a") as a, AudioIndex.open(tmp_path / "b") as b:
        answers = _search_from_threads([a, b], queries)
    assert OverlapCountingIndex.most == 1
    assert all(answer == answers[0] for answer in answers)  # same collection: same answers


@pytest.mark.gpu
def test_on_a_real_gpu_two_indexes_searched_from_several_threads_match_the_cpu(tmp_path, monkeypatch):
    # Needs a GPU build of FAISS and a GPU (`python -m pytest -m gpu`); the default run deselects it.
    if gpu.gpu_count() == 0:
        pytest.skip("FAISS sees no GPU")
    _collection(tmp_path / "a")
    _collection(tmp_path / "b")
    queries = unit(8, seed=6)
    with AudioIndex.open(tmp_path / "a") as a, AudioIndex.open(tmp_path / "b") as b:
        on_gpu = _search_from_threads([a, b], queries)
        assert all(r.search_index() is not r.index() for r in a.shard_readers() + b.shard_readers())
    monkeypatch.setattr(gpu, "to_gpu", lambda index: index)
    with AudioIndex.open(tmp_path / "a") as a:
        expected = _hits(a, queries, 5)
    assert all(answer == expected for answer in on_gpu)
