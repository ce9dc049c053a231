"""Indexing on a Ray cluster: decoding and embedding spread over Ray workers, planning and writing kept here.

The driver (this process) plans the run exactly as :func:`~vela_search.indexing.index_paths` does and
keeps the single writer, the lock and the commit rules (:func:`~vela_search.indexing.pipeline.run_index`).
Only the files to embed become a Ray Dataset:

1. ``decode_files`` runs as CPU tasks: each file is decoded and cut into windows (the same
   :func:`~vela_search.audio.iter_segments` as the single-process path); a file that cannot be decoded
   becomes a failure row instead of failing the job.
2. :class:`WindowEmbedder` runs in an actor pool (one actor per GPU, or a small CPU pool): each actor loads
   the embedder and computes its demo prefix once, then embeds batches of windows. Ray restarts an actor
   that dies and retries its batch on the replacement.
3. The vectors stream back to the driver, which lands a file (vectors, files rows, tombstones, together)
   only when every one of its windows has arrived, and commits between files. A window that arrives twice
   (a retried batch) is kept once.

The store never learns that Ray exists. Ray is an optional extra: ``pip install "vela-search[ray]"``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.audio import AudioSegment, iter_segments
from vela_search.errors import VelaError
from vela_search.indexing.options import IndexOptions, Segmentation
from vela_search.indexing.pipeline import EmbedderSource, run_index
from vela_search.indexing.plan import EmbedJob, failure_reason
from vela_search.indexing.report import IndexReport
from vela_search.indexing.run import IndexRun, Landing
from vela_search.indexing.spec import EmbedderSpec

if TYPE_CHECKING:
    from vela_search.embedding.demos import DemoSet
    from vela_search.embedding.embedder import EmbedItem, VelaEmbedder

INSTALL_HINT = '--ray needs Ray, which is not installed: pip install "vela-search[ray]"'
# Files per decoding task: enough to amortise a task's start, few enough to spread a small run.
FILES_PER_DECODE_TASK = 4
# Windows a decoding task hands on at a time (bounds a long file's memory in flight).
WINDOWS_PER_DECODE_CHUNK = 16
# Windows per embedding call in an actor (the embedder splits them into token-sized batches).
DEFAULT_BATCH_WINDOWS = 32


class RayNotInstalledError(VelaError):
    """``--ray`` was asked for but Ray is not installed."""


def import_ray() -> Any:
    """Import Ray and Ray Data, or raise :class:`RayNotInstalledError` naming what to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the part this module uses
    except ImportError as exc:
        raise RayNotInstalledError(INSTALL_HINT) from exc
    return ray


# ------------------------------------------------------------------------------------------ the embedder
@dataclass(frozen=True)
class EmbedderRecipe:
    """How a worker loads the driver's embedder: its spec, its demo set and its batch settings.

    The demo set travels as an object (a few KB; audio demos name files, which workers must see at the
    same paths). ``fingerprint`` is checked on the worker after loading, so that a worker whose model or
    adapter files differ fails loudly instead of writing incomparable vectors.
    """

    spec: EmbedderSpec
    demos: DemoSet
    dtype: str
    batch_tokens: int | None
    max_batch_items: int
    fingerprint: dict[str, Any]

    @classmethod
    def from_embedder(cls, embedder: VelaEmbedder, *, dtype: str = "auto") -> EmbedderRecipe:
        """The recipe of a loaded embedder (``dtype`` as for ``from_pretrained``, resolved per worker)."""
        # A CPU driver's batch size is its own; a GPU worker sizes batches from its free memory.
        batch_tokens = embedder.batch_tokens if embedder.backbone.device.type == "cuda" else None
        return cls(
            spec=EmbedderSpec.from_embedder(embedder),
            demos=embedder.demos,
            dtype=dtype,
            batch_tokens=batch_tokens,
            max_batch_items=embedder.max_batch_items,
            fingerprint=embedder.fingerprint.to_dict(),
        )

    def load(self, device: str) -> VelaEmbedder:
        """Load the embedder on ``device`` and check that it is the driver's.

        Raises:
            VelaError: the loaded embedder's fingerprint differs from the driver's.
        """
        from vela_search.embedding.embedder import VelaEmbedder

        spec = self.spec
        embedder = VelaEmbedder.from_pretrained(
            spec.model,
            revision=spec.revision,
            adapter=spec.adapter,
            demos=self.demos,
            device=device,
            dtype=self.dtype,
            quantize=spec.quantize,
            batch_tokens=self.batch_tokens,
            max_batch_items=self.max_batch_items,
        )
        differences = embedder.fingerprint.describe_differences(
            self.fingerprint, mine="worker", theirs="driver"
        )
        if differences:
            raise VelaError(
                f"worker {socket.gethostname()} loaded a different embedder than the driver ({differences}); "
                "every node needs the same model, adapter and demo files"
            )
        return embedder


# ------------------------------------------------------------------------------------ Ray Data functions
def decode_files(batch: dict[str, np.ndarray], *, window_s: float, hop_s: float) -> Iterator[dict[str, Any]]:
    """Decode files into window rows, then one end row per file (a CPU task of the Dataset).

    A window row has ``segment >= 0`` and its samples; the end row has ``segment == -1``, the file's
    window ``count`` and, when decoding failed, the ``error`` (the reason exactly as the single-process
    path records it). Failures are returned, never raised: one broken file must not fail the job.
    """
    for job, path in zip(batch["job"], batch["path"], strict=True):
        rows: list[tuple[int, float, float, np.ndarray]] = []
        count, error = 0, ""
        started = time.perf_counter()
        try:
            for seg in iter_segments(str(path), window_s=window_s, hop_s=hop_s):
                rows.append((count, seg.start_s, seg.end_s, seg.samples))
                count += 1
                if len(rows) >= WINDOWS_PER_DECODE_CHUNK:
                    yield _window_rows(int(job), rows)
                    rows = []
        except Exception as exc:  # noqa: BLE001 - every per-file error becomes a failure row
            error = failure_reason(exc, str(path))
        if rows:
            yield _window_rows(int(job), rows)
        yield {
            "job": np.array([job], np.int64),
            "segment": np.array([-1], np.int64),
            "start_s": np.zeros(1),
            "end_s": np.zeros(1),
            "samples": _ragged([np.empty(0, np.float32)]),
            "count": np.array([count], np.int64),
            "error": np.array([error], dtype=object),
            "decode_s": np.array([time.perf_counter() - started]),
        }


def _window_rows(job: int, rows: list[tuple[int, float, float, np.ndarray]]) -> dict[str, Any]:
    n = len(rows)
    return {
        "job": np.full(n, job, np.int64),
        "segment": np.array([r[0] for r in rows], np.int64),
        "start_s": np.array([r[1] for r in rows], np.float64),
        "end_s": np.array([r[2] for r in rows], np.float64),
        "samples": _ragged([r[3] for r in rows]),
        "count": np.full(n, -1, np.int64),
        "error": np.array([""] * n, dtype=object),
        "decode_s": np.zeros(n),
    }


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """An object array of 1-D float32 arrays (windows differ in length)."""
    out = np.empty(len(arrays), dtype=object)
    for i, array in enumerate(arrays):
        out[i] = np.asarray(array, np.float32)
    return out


def embed_windows(embedder: VelaEmbedder, items: list[EmbedItem]) -> tuple[np.ndarray, list[str]]:
    """Embed windows together; when that raises, each alone, so one bad window fails only its own file.

    Returns:
        The vectors (zeros for a window that failed) and, per window, the reason it failed ("" if not).
    """
    try:
        return embedder.embed_items(items), [""] * len(items)
    except Exception:  # noqa: BLE001 - retried item by item below; what fails alone is reported
        pass
    vectors = np.zeros((len(items), embedder.dim), np.float32)
    reasons = [""] * len(items)
    for i, item in enumerate(items):
        try:
            vectors[i] = embedder.embed_items([item])[0]
        except Exception as exc:  # noqa: BLE001 - becomes the failure row of the window's file
            reasons[i] = f"the model could not embed a window: {type(exc).__name__}: {exc}".splitlines()[0]
    return vectors, reasons


class WindowEmbedder:
    """The embedding actor: loads the embedder and its demo prefix once, then embeds batches of windows.

    Args:
        recipe: how to load the driver's embedder.
        threads: torch threads on a CPU worker (None: leave torch's default).
    """

    def __init__(self, recipe: EmbedderRecipe, threads: int | None = None) -> None:
        import ray
        import torch

        started = time.perf_counter()
        on_gpu = bool(ray.get_gpu_ids())
        if threads is not None and not on_gpu:
            torch.set_num_threads(threads)
        self.embedder = recipe.load("cuda" if on_gpu else "cpu")
        self.embedder.refresh_prefix(now=True)  # the demo prefix, computed once for every batch
        self.worker = f"{socket.gethostname()}:{os.getpid()} ({'cuda' if on_gpu else 'cpu'})"
        self.load_s = time.perf_counter() - started
        self.ready_at = time.time()  # wall clock: the driver compares it with its own
        self.loads_reported = False

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from vela_search.embedding.embedder import EmbedItem

        windows = np.flatnonzero(batch["segment"] >= 0)
        vectors = np.zeros((len(batch["segment"]), self.embedder.dim), np.float32)
        window_errors = np.array([""] * len(vectors), dtype=object)
        started = time.perf_counter()
        if len(windows):
            items = [EmbedItem("audio", wave=np.asarray(batch["samples"][i], np.float32)) for i in windows]
            vectors[windows], window_errors[windows] = embed_windows(self.embedder, items)
        busy = time.perf_counter() - started
        n = len(vectors)
        # The model load is reported once per actor (a restarted actor reports its own).
        load = 0.0 if self.loads_reported else self.load_s
        self.loads_reported = True
        return {
            "job": batch["job"],
            "segment": batch["segment"],
            "start_s": batch["start_s"],
            "end_s": batch["end_s"],
            "count": batch["count"],
            "error": batch["error"],
            "window_error": window_errors,
            "decode_s": batch["decode_s"],
            "vector": vectors,
            "worker": np.array([self.worker] * n, dtype=object),
            "embed_s": np.full(n, busy / n),
            "load_s": np.array([load] + [0.0] * (n - 1)),
            "ready_at": np.full(n, self.ready_at),
        }


# ------------------------------------------------------------------------------------------- the driver
@dataclass
class WorkerThroughput:
    """What one embedding actor did: windows embedded and seconds spent embedding them."""

    worker: str
    segments: int = 0
    busy_s: float = 0.0
    load_s: float = 0.0

    @property
    def segments_per_s(self) -> float:
        return self.segments / self.busy_s if self.busy_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "segments_per_s": self.segments_per_s}


@dataclass
class ClusterTiming:
    """Where a Ray run's time went (seconds; ``decode_s``, ``embed_s`` and ``load_s`` summed over workers).

    Attributes:
        workers: embedding actors in the pool.
        wall_s: the embedding stage, from building the Dataset to the last file landed.
        first_result_s: until the first vectors came back (actor start and model load included).
        first_actor_ready_s: until the first actor had loaded the embedder (process start, imports, load).
        decode_s: decoding in the CPU tasks.
        embed_s: embedding in the actors.
        load_s: actors loading the embedder and computing the prefix.
        land_s: the driver landing files and committing.
        commit_s: the driver's commits (part of ``land_s``); while one runs, no result is taken in.
        commit_max_s: the longest commit.
        duplicates_dropped: windows that arrived twice (retried batches) and were kept once.
    """

    workers: int = 0
    wall_s: float = 0.0
    first_result_s: float = 0.0
    first_actor_ready_s: float = 0.0
    decode_s: float = 0.0
    embed_s: float = 0.0
    load_s: float = 0.0
    land_s: float = 0.0
    commit_s: float = 0.0
    commit_max_s: float = 0.0
    duplicates_dropped: int = 0
    per_worker: dict[str, WorkerThroughput] = field(default_factory=dict)

    @property
    def idle_fraction(self) -> float:
        """Share of the workers' time not spent embedding, from the first actor ready to the last file
        landed (0 when nothing was measured): what a driver that stops taking results in costs the pool."""
        ready = self.first_actor_ready_s or self.first_result_s
        span = (self.wall_s - ready) * max(self.workers, 1)
        busy = sum(w.busy_s for w in self.per_worker.values())
        return max(0.0, 1.0 - busy / span) if span > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "per_worker"}
        data["per_worker"] = [w.to_dict() for w in self.per_worker.values()]
        data["idle_fraction"] = self.idle_fraction
        return data


@dataclass
class _Arrivals:
    """A file's windows as they come back, in any order."""

    job: EmbedJob
    windows: dict[int, tuple[float, float, np.ndarray]] = field(default_factory=dict)
    count: int | None = None
    error: str | None = None
    landed: bool = False

    @property
    def complete(self) -> bool:
        return self.count is not None and (self.error is not None or len(self.windows) >= self.count)

    def landing(self) -> Landing:
        """The file as the single-process path lands it: segments in order, their vectors alongside."""
        landing = Landing(self.job, decoded=True, error=self.error)
        if self.error is None:
            for index in range(self.count or 0):
                start, end, vector = self.windows[index]
                landing.segments.append(AudioSegment(start, end, np.empty(0, np.float32)))
                landing.vectors.append(vector)
            landing.embedded = len(landing.vectors)
        return landing


def default_workers(resources: dict[str, float]) -> int:
    """One embedding actor per GPU of the cluster; without GPUs, a quarter of its CPUs (1 to 4)."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus
    return max(1, min(4, int(resources.get("CPU", 1)) // 4))


def _actor_resources(resources: dict[str, float], workers: int) -> tuple[dict[str, float], int | None]:
    """Ray resources of one embedding actor, and its torch threads on a CPU cluster.

    A CPU actor reserves half a CPU at most, so that the decoding tasks (one CPU each) always find one (a
    pool that takes every CPU deadlocks: nothing decodes) and Ray Data does not fuse decoding into the
    actors (it fuses stages with equal resources); its torch threads share the cluster's CPUs between actors.
    """
    if resources.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}, None
    cpus = float(resources.get("CPU", 1))
    share = max(0.1, min(0.5, (cpus - 1) / workers))
    return {"num_cpus": share}, max(1, int(cpus // workers))


def check_address(address: str) -> None:
    """Refuse what is not a cluster address (``auto``, ``ray://host:port``, ``host:port``) before any work.

    Raises:
        VelaError: naming the accepted forms.
    """
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        return
    raise VelaError(
        f"--ray-address takes a cluster address ('auto', 'ray://head:10001' or 'head:6379'), not {address!r}"
    )


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected: to ``address`` (``auto``, ``ray://host:10001``, ``host:6379``), or a local Ray started
    here when None. A session already open in this process is used as it is (and left open)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address is not None:
        options["address"] = address
    try:
        ray.init(**options)
    except ConnectionError as exc:
        raise VelaError(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def index_paths_on_ray(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: str | os.PathLike[str],
    embedder: EmbedderSource,
    options: IndexOptions | None = None,
    *,
    ray: RaySettings | None = None,
    timing: ClusterTiming | None = None,
    **settings: Any,
) -> IndexReport:
    """Index like :func:`~vela_search.indexing.index_paths`, decoding and embedding on a Ray cluster.

    The result is the same index: the same segments, vectors, files table and report (plus per-worker
    throughput in ``report.workers``). The driver's ``embedder`` gives the fingerprint the index is
    checked against; each actor loads the same embedder from its recipe (model, adapter, demos), so every
    node must see the model, adapter, demo and audio files at the same paths (shared storage).

    Example:
        >>> emb = VelaEmbedder.from_pretrained("tiny", demos="none", device="cpu")  # doctest: +SKIP
        >>> on = RaySettings(address="auto")  # doctest: +SKIP
        >>> report = index_paths_on_ray(["/data/audio"], "/data/idx", emb, ray=on)  # doctest: +SKIP
        >>> [w["segments_per_s"] for w in report.workers]  # doctest: +SKIP

    Args:
        embedder: as for :func:`~vela_search.indexing.index_paths` (a loader is called only when there
            is something to embed; Ray is joined only then too).
        options: the run's settings, as for :func:`~vela_search.indexing.index_paths`; ``settings`` (its
            field names) override single fields.
        ray: the cluster and the actor pool (:class:`RaySettings`; default: a local Ray, default pool).
        timing: filled with where the embedding stage's time went (for the benchmark).

    Raises:
        RayNotInstalledError: Ray is not installed.
        VelaError: as :func:`~vela_search.indexing.index_paths`, or the cluster cannot be reached.
    """
    from dataclasses import replace

    options = replace(options or IndexOptions(), **settings)
    ray = ray or RaySettings()
    ray.validate()
    import_ray()  # a missing extra is reported before anything else
    timing = timing if timing is not None else ClusterTiming()

    def stage(run: IndexRun, jobs: list[EmbedJob]) -> None:
        recipe = EmbedderRecipe.from_embedder(run.embedder, dtype=ray.dtype)
        # Ray is joined only when there is something to embed: a locked index or a rerun with nothing new
        # never waits for it.
        with ray_session(ray.address) as session:
            _embed_on_ray(session, run, jobs, recipe, ray, run.segmentation, timing)

    report = run_index(paths, index_dir, embedder, stage, options)
    report.workers = [w.to_dict() for w in timing.per_worker.values()]
    return report


@dataclass(frozen=True)
class RaySettings:
    """Where and how a Ray run embeds.

    Attributes:
        address: the cluster (``auto``, ``ray://head:10001``, ``head:6379``); None starts a local Ray on
            this machine. A Ray session already open in this process is used instead.
        workers: embedding actors (default :func:`default_workers`: one per GPU, or a small CPU pool).
        dtype: the workers' dtype (``auto``: bf16 on a GPU, fp32 on the CPU).
        threads: torch threads of each CPU actor (default: the cluster's CPUs shared between the actors).
        batch_windows: windows per embedding call in an actor.
    """

    address: str | None = None
    workers: int | None = None
    dtype: str = "auto"
    threads: int | None = None
    batch_windows: int = DEFAULT_BATCH_WINDOWS

    def validate(self) -> None:
        """Refuse an empty pool or batch, and what is not a cluster address.

        Raises:
            VelaError: naming the bad setting.
        """
        if self.workers is not None and self.workers < 1:
            raise VelaError(f"--workers must be at least 1, got {self.workers}")
        if self.batch_windows < 1:
            raise VelaError(f"batch_windows must be at least 1, got {self.batch_windows}")
        if self.address is not None:
            check_address(self.address)


def _embed_on_ray(
    ray: Any,
    run: IndexRun,
    jobs: list[EmbedJob],
    recipe: EmbedderRecipe,
    settings: RaySettings,
    segmentation: Segmentation,
    timing: ClusterTiming,
) -> None:
    """The embedding stage on Ray: files → decode tasks → embedding actors → landed on the driver."""
    from ray.data import ActorPoolStrategy, DataContext

    started, started_at = time.perf_counter(), time.time()
    context = DataContext.get_current()
    context.enable_progress_bars = False  # the run's own progress bar reports
    # ... and Ray Data would announce every execution and warn about the disabled bars on every run.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    resources = ray.cluster_resources()
    pool = settings.workers or default_workers(resources)
    actor_options, shared_threads = _actor_resources(resources, pool)
    threads = settings.threads if settings.threads is not None else shared_threads
    timing.workers = pool

    files = [{"job": i, "path": job.file.path} for i, job in enumerate(jobs)]
    dataset = (
        ray.data.from_items(files, override_num_blocks=max(1, math.ceil(len(files) / FILES_PER_DECODE_TASK)))
        .map_batches(
            decode_files,
            batch_size=FILES_PER_DECODE_TASK,
            fn_kwargs={"window_s": segmentation.window_s, "hop_s": segmentation.hop_s},
            num_cpus=1,
        )
        .map_batches(
            WindowEmbedder,
            batch_size=settings.batch_windows,
            compute=ActorPoolStrategy(size=pool),
            fn_constructor_kwargs={"recipe": recipe, "threads": threads},
            **actor_options,
        )
    )
    arrivals = [_Arrivals(job) for job in jobs]
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if not timing.first_result_s:
                timing.first_result_s = time.perf_counter() - started
                timing.first_actor_ready_s = max(0.0, float(np.min(batch["ready_at"])) - started_at)
            landing_started = time.perf_counter()
            _take(run, arrivals, batch, timing)
            timing.land_s += time.perf_counter() - landing_started
    except Exception as exc:
        reason = worker_start_error(exc)
        if reason is None:
            raise
        raise VelaError(f"an embedding worker could not start: {reason}") from exc
    timing.wall_s = time.perf_counter() - started
    missing = [a.job.file.path for a in arrivals if not a.landed]
    if missing:  # cannot happen unless Ray lost rows: never commit an incomplete file
        raise RuntimeError(f"{len(missing)} files did not come back from the cluster: {missing[:3]}")


# The last line of a worker's traceback when it raised one of this project's user errors.
_USER_ERROR_LINE = re.compile(r"^vela_search\.errors\.\w+: (.+)$", re.MULTILINE)


def worker_start_error(exc: BaseException) -> str | None:
    """The user error (a :class:`VelaError`, e.g. a model missing on that node) that kept an embedding actor
    from starting, found in what Ray raised on the driver; None for anything else.

    Ray reports an actor's failed ``__init__`` as an ``ActorDiedError`` that carries the worker's traceback
    as text only, so the message is read from it.
    """
    from ray.exceptions import RayActorError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, RayActorError) and seen.actor_init_failed:
            found = _USER_ERROR_LINE.findall(str(seen))
            return found[-1].strip() if found else None
        seen = seen.__cause__ or seen.__context__
    return None


def _take(
    run: IndexRun, arrivals: list[_Arrivals], batch: dict[str, np.ndarray], timing: ClusterTiming
) -> None:
    """Sort a batch of results into their files; land each file whose windows have all arrived."""
    embedded = 0
    for row in range(len(batch["job"])):
        worker = timing.per_worker.setdefault(
            str(batch["worker"][row]), WorkerThroughput(str(batch["worker"][row]))
        )
        worker.busy_s += float(batch["embed_s"][row])
        worker.load_s += float(batch["load_s"][row])
        timing.embed_s += float(batch["embed_s"][row])
        timing.load_s += float(batch["load_s"][row])
        timing.decode_s += float(batch["decode_s"][row])
        file = arrivals[int(batch["job"][row])]
        segment = int(batch["segment"][row])
        if file.landed:
            continue  # a failed file already landed, or a retried batch's copy
        if segment < 0:
            file.count = int(batch["count"][row])
            file.error = str(batch["error"][row]) or file.error
        elif batch["window_error"][row]:  # this window failed even alone: its file is a failure row
            file.error = file.error or str(batch["window_error"][row])
        elif segment in file.windows:
            timing.duplicates_dropped += 1
            continue
        else:
            vector = np.array(batch["vector"][row], np.float32)
            file.windows[segment] = (float(batch["start_s"][row]), float(batch["end_s"][row]), vector)
            worker.segments += 1
            embedded += 1
        if file.complete:
            file.landed = True
            run.land(file.landing())
            file.windows.clear()
            started = time.perf_counter()
            run.maybe_commit()
            took = time.perf_counter() - started
            timing.commit_s += took
            timing.commit_max_s = max(timing.commit_max_s, took)
    if embedded:
        run.segments_done += embedded
        run.emit("embed")
