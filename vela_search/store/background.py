"""Background maintenance of a writer: tier merges and codes re-training off the commit path.

A writer in background mode (``IndexWriter(..., maintenance="background")``) never merges or re-trains
inside `commit()`. After a commit it checks what is due and, when nothing else is in flight, starts one
job on a thread of its own: a job works from a *snapshot* (a copy of the committed manifest, its
tombstones, and a generation number reserved for the names of the files it writes), writes new files
that no manifest names yet, and returns a result. The result is published under the writer's lock as a
generation of its own when the writer has nothing buffered, or else with the writer's next commit; either
way it is re-based on the generation current by then, which may have grown since the snapshot:

- a merge replaces exactly the shards it merged (if they are all still there, in place; otherwise the
  result is dropped) and drops the tombstones of the rows it left out; rows tombstoned later keep theirs;
- a re-training gives its codes to the shards it encoded; shards that landed since lose codes made with
  the previous template and the publishing commit encodes them with the new one.

Until publication nothing of a job is visible, and its files are ordinary garbage: a process killed
during a job leaves the last committed generation intact, and the next writer's commit collects them.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from . import faiss_ops, manifest
from .activity import ActivityRecorder
from .codes import CodesKeeper
from .index_choice import ChoiceLimits
from .integrity import read_verified
from .merging import merge_shards
from .shards import ShardReader, write_shard
from .table_log import read_deleted
from .tables import read_ids

MERGE, RETRAIN = "merge", "retrain"
MODES = ("inline", "background")

log = logging.getLogger(__name__)


class MaintenanceCancelled(Exception):
    """A background job stopped because its writer is closing (nothing of it is published)."""


class _CancellableReader(ShardReader):
    """A shard reader that stops its job when the writer closes: checked at each read of the vectors
    (per shard in a merge, per chunk of 8,192 rows in a re-training)."""

    def __init__(self, cancel: threading.Event, *args: Any) -> None:
        super().__init__(*args)
        self._cancel = cancel

    def index(self, *, verify: bool = False) -> Any:
        if self._cancel.is_set():
            raise MaintenanceCancelled("the writer is closing")
        return super().index(verify=verify)


@dataclass
class Snapshot:
    """What a background job works from: a committed generation, frozen when the job started.

    Attributes:
        root: index directory.
        data: a private copy of the committed manifest.
        generation: reserved for the names of the files the job writes (no commit uses it).
        reserve_shard: hands out a shard number no other writer path uses.
        limits: the automatic choice's thresholds.
        current: a copy of the writer's committed manifest now (to catch up before publishing).
        cancel: set when the writer closes: the job stops at its next read of vectors.
    """

    root: Path
    data: dict
    generation: int
    reserve_shard: Callable[[], int]
    limits: ChoiceLimits
    current: Callable[[], dict]
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def dim(self) -> int:
        return int(self.data["dim"])

    def reader(self, entry: dict) -> ShardReader:
        """Opens a shard of the snapshot, checked against the snapshot's checksums."""
        return self.open(entry, self.data.get("checksums"))

    def open(self, entry: dict, checksums: dict | None) -> ShardReader:
        """Opens a shard (of the snapshot or written since) for the job; stops it once cancelled."""
        return _CancellableReader(self.cancel, self.root, entry, self.dim, checksums)

    def deleted(self) -> np.ndarray:
        """The snapshot's sorted tombstoned ids."""
        return read_deleted(self.root, self.data)

    def keeper(self) -> CodesKeeper:
        """A codes keeper of its own (the writer's is the foreground's)."""
        return CodesKeeper(self.root, self.dim, self.reader, self.limits)


@dataclass
class MergeResult:
    """Merged shards waiting for publication."""

    replaced: list[str]  # the "meta" paths of the shards merged, in order
    entries: list[dict]  # the shards that replace them
    dropped: np.ndarray  # ids of the rows left out (tombstoned at the snapshot)
    template: str | None  # the codes template the entries' codes were encoded with
    written: dict[str, str] = field(default_factory=dict)
    kind: str = MERGE

    def apply(self, new: dict) -> np.ndarray | None:
        """Replace the merged shards in manifest `new`; returns the tombstones to drop, None if stale."""
        metas = [e["meta"] for e in new["shards"]]
        n = len(self.replaced)
        starts = [i for i, m in enumerate(metas) if m == self.replaced[0]] if n else []
        if not starts or metas[starts[0] : starts[0] + n] != self.replaced:
            return None  # a shard it merged is gone (e.g. dropped by a repair): the result is void
        entries = copy.deepcopy(self.entries)
        current = (new.get("codes") or {}).get("trained")
        if current != self.template:  # codes of another template: the publishing commit re-encodes
            for entry in entries:
                entry.pop("codes", None)
        at = starts[0]
        new["shards"] = new["shards"][:at] + entries + new["shards"][at + n :]
        return self.dropped


@dataclass
class RetrainResult:
    """A re-trained codes template and the codes of the snapshot's shards, waiting for publication."""

    codes: dict | None
    by_meta: dict[str, str | None]
    written: dict[str, str] = field(default_factory=dict)
    kind: str = RETRAIN

    def apply(self, new: dict) -> np.ndarray | None:
        """Give manifest `new` the new codes; returns no tombstones to drop, None if stale."""
        if self.codes is None or (new.get("policy") or {}).get("mode") != "auto":
            return None
        for entry in new["shards"]:
            name = self.by_meta.get(entry["meta"])
            if name:
                entry["codes"] = name
            else:  # small, or landed after the snapshot: encoded by the publishing commit if large
                entry.pop("codes", None)
        new["codes"] = copy.deepcopy(self.codes)
        return np.empty(0, np.int64)


Result = MergeResult | RetrainResult


class _ShardWriter:
    """Writes a merge's output shards as the writer would: template clone, rows, codes."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.keeper = snap.keeper()
        self.written: dict[str, str] = {}
        data = snap.data
        name = data.get("trained")
        self.template = None
        if name:
            raw = read_verified(snap.root, name, manifest.checksum(data, name))
            self.template = faiss_ops.read_bytes(snap.root, name, raw)

    def write(self, vectors: np.ndarray, metadata: pa.Table) -> list[dict]:
        snap, data = self.snap, self.snap.data
        template = self.template
        if template is not None:
            index = faiss_ops.clone(template)
        else:
            index = faiss_ops.build(data["factory"], snap.dim)
        index.add(vectors)
        entry, checksums = write_shard(snap.root, snap.reserve_shard(), index, metadata)
        self.written.update(checksums)
        ids = metadata["id"].to_numpy().astype(np.int64, copy=False)
        self.written.update(self.keeper.encode_new_shard(data, entry, vectors, ids, snap.generation))
        return [entry]


def run_merge(snap: Snapshot, first: int, size: int) -> MergeResult:
    """Merge the snapshot's shards from position `first` on into shards of at most `size` rows."""
    entries = snap.data["shards"][first:]
    out = _ShardWriter(snap)
    merged, dropped = merge_shards(
        entries,
        dim=snap.dim,
        size=size,
        deleted=snap.deleted(),
        open_reader=snap.reader,
        shard_ids=lambda e: read_ids(snap.root, e["meta"], manifest.checksum(snap.data, e["meta"])),
        write=out.write,
    )
    template = (snap.data.get("codes") or {}).get("trained")
    current = snap.current()
    now = (current.get("codes") or {}).get("trained")
    if now != template:  # a re-training published meanwhile: the merged shards take its template
        template = now
        for entry in merged:
            entry.pop("codes", None)
            if now and int(entry["count"]) >= snap.limits.min_coded_rows:
                reader = snap.open(entry, out.written)
                try:
                    out.written.update(out.keeper.encode_shard(current, entry, reader, snap.generation))
                finally:
                    reader.close()
    return MergeResult(
        replaced=[e["meta"] for e in entries],
        entries=merged,
        dropped=dropped,
        template=template,
        written=out.written,
    )


def run_retrain(snap: Snapshot) -> RetrainResult:
    """Re-train the snapshot's codes (a uniform sample of all live vectors) and encode every shard, then
    the shards landed since the snapshot, so that publishing costs no encoding."""
    data = copy.deepcopy(snap.data)
    keeper = snap.keeper()
    written = keeper.train(data, snap.generation, snap.deleted())
    by_meta = {e["meta"]: e.get("codes") for e in data["shards"]}
    if written:
        current = snap.current()
        for entry in current["shards"]:
            if entry["meta"] in by_meta or int(entry["count"]) < snap.limits.min_coded_rows:
                continue
            entry = dict(entry)
            reader = snap.open(entry, current.get("checksums"))
            try:
                written.update(keeper.encode_shard(data, entry, reader, snap.generation))
            finally:
                reader.close()
            by_meta[entry["meta"]] = entry["codes"]
    return RetrainResult(codes=data.get("codes") if written else None, by_meta=by_meta, written=written)


class BackgroundMaintenance:
    """Runs a writer's background jobs on threads of their own: at most one merge and one re-training at a
    time, so that merges keep up while a long re-training runs.

    A kind's *lane* is busy from `start` until its result is taken for publication: a new job of that kind
    starts only from a generation that includes the previous one's result.

    Args:
        publish: called on the job's thread when its result is ready (the writer publishes it now or
            leaves it for its next commit, see `take`).
        activity: where pending and running maintenance is recorded (None: nowhere).
    """

    def __init__(self, publish: Callable[[], None], activity: ActivityRecorder | None) -> None:
        self._publish = publish
        self.activity = activity
        self._guard = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._running: list[str] = []
        self._ready: list[Result] = []
        self.error: BaseException | None = None
        self.cancel = threading.Event()  # shared by the jobs' snapshots: set by the closing writer

    @property
    def busy(self) -> bool:
        """Whether a job runs or a result waits for publication (their files are not garbage)."""
        with self._guard:
            return bool(self._running or self._ready)

    def lane_busy(self, kind: str) -> bool:
        """Whether a job of `kind` runs or its result waits for publication."""
        with self._guard:
            return kind in self._running or any(r.kind == kind for r in self._ready)

    @property
    def running(self) -> list[str]:
        """The kinds of the jobs running now."""
        with self._guard:
            return list(self._running)

    @property
    def ready(self) -> bool:
        """Whether a finished result waits for publication."""
        with self._guard:
            return bool(self._ready)

    def start(self, kind: str, job: Callable[[], Result]) -> None:
        """Run `job` (a merge or re-training) on a new thread; the caller checked `lane_busy(kind)`."""
        with self._guard:
            self._running.append(kind)
        if self.activity is not None:
            self.activity.add_maintenance(kind)
        thread = threading.Thread(target=self._run, args=(kind, job), name=f"vela-{kind}", daemon=True)
        with self._guard:
            self._threads[kind] = thread
        thread.start()

    def _run(self, kind: str, job: Callable[[], Result]) -> None:
        try:
            result = job()
        except MaintenanceCancelled:
            with self._guard:
                self._running.remove(kind)
            self.done(kind)
            return
        except Exception as error:  # noqa: BLE001 - kept for finish(): nothing was published
            log.warning("background %s failed (the index is unchanged): %s", kind, error)
            with self._guard:
                self._running.remove(kind)
                self.error = error
            self.done(kind)
            return
        with self._guard:
            self._running.remove(kind)
            self._ready.append(result)
        try:
            self._publish()
        except Exception as error:  # noqa: BLE001 - the result waits for the next commit instead
            log.warning("publishing the background %s failed (the index is unchanged): %s", kind, error)

    def take(self) -> list[Result]:
        """The finished results waiting for publication (the caller publishes them), oldest first."""
        with self._guard:
            results, self._ready = self._ready, []
        return results

    def done(self, kind: str) -> None:
        """Record that a job of `kind` was published or dropped."""
        if self.activity is not None:
            self.activity.finish_maintenance(kind)

    def wait(self) -> None:
        """Block until the current jobs' threads (their runs and publication attempts) have ended."""
        with self._guard:
            threads = list(self._threads.values())
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join()
