"""Following an index's folders: after a first pass, every change on disk becomes an incremental run.

:class:`IndexWatcher` is what ``vela-search index --watch`` and ``serve --watch`` run. It watches the
folders the index records (and those given) with `watchfiles` (inotify, FSEvents or ReadDirectoryChanges;
polling with ``poll=True`` for network drives, where those see no changes). Events only say *where* to
look: once the paths they name have settled (:class:`~vela_search.indexing.settle.SettlingPaths`), the
watcher runs the ordinary incremental run (:func:`~vela_search.indexing.pipeline.index_paths`) over the
roots they touched, so new and changed files are embedded, removed files leave the index and moved files
are relinked exactly as ``index`` does, in as few commits as a one-off run of that size would make.

The watcher holds the writer lock from start to end (a second writer is refused, as during any run). A
root that is missing, or empty while the index holds files from it (an unmounted drive's mount point), is
*paused*: it is left out of every run, so nothing of it is deleted, and followed again with a catch-up run
once it is back. What the watcher waits for is recorded in ``activity.json`` (see
:mod:`vela_search.store.activity`) for ``info``, ``/api/indexes`` and the page.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vela_search.audio.hf_dataset import is_dataset_uri
from vela_search.errors import VelaError
from vela_search.indexing.options import IndexOptions
from vela_search.indexing.pipeline import EmbedderSource, index_paths
from vela_search.indexing.plan import recorded_roots
from vela_search.indexing.report import IndexProgress, IndexReport
from vela_search.indexing.settle import SettlingPaths
from vela_search.store.activity import shared_recorder

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.store import IndexWriter

__all__ = [
    "DEFAULT_MAX_WAIT_S",
    "DEFAULT_SETTLE_S",
    "IndexWatcher",
    "WatchEvent",
    "WatchSettings",
    "WatchStopped",
    "watched_roots",
]

DEFAULT_SETTLE_S = 2.0
DEFAULT_MAX_WAIT_S = 30.0
# How often roots are looked at (vanished, back) and settling files stat-ed again while nothing happens.
_TICK_S = 0.25
# A live watcher refreshes activity.json at least this often (readers call a silent record stale).
_HEARTBEAT_S = 30.0


@dataclass(frozen=True)
class WatchSettings:
    """How the watcher waits and looks.

    Attributes:
        settle_s: a file's size and mtime must stay the same this long before it is embedded (and the
            folders quiet this long before a run starts); the planner also leaves files written to less
            than this long ago for a later run.
        max_wait_s: under a stream of changes that never pauses, a run starts at the latest this long after
            the first waiting change (files still being written wait for the next run).
        poll: look for changes by polling instead of the system's notifications (network drives).
        poll_interval_s: the polling period.
    """

    settle_s: float = DEFAULT_SETTLE_S
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    poll: bool = False
    poll_interval_s: float = 1.0

    def validate(self) -> None:
        """Raises:
        VelaError: naming the bad setting."""
        if not (self.settle_s >= 0 and self.max_wait_s > 0 and self.poll_interval_s > 0):
            raise VelaError("--settle must be >= 0 seconds, --max-wait and --poll-interval > 0 seconds")
        if self.max_wait_s < self.settle_s:
            raise VelaError(
                f"--max-wait ({self.max_wait_s:g} s) must be at least --settle ({self.settle_s:g} s)"
            )


class WatchStopped(Exception):
    """Raised inside a run when the watcher is asked to stop (the run commits what landed, then ends)."""


WatchKind = Literal["watching", "paused", "resumed", "run", "failed", "stopped"]


@dataclass(frozen=True)
class WatchEvent:
    """What the watcher tells its caller.

    Attributes:
        kind: ``watching`` (roots followed), ``paused`` / ``resumed`` (a root vanished or came back),
            ``run`` (a run ended: ``report``), ``failed`` (a run failed: ``message``; the watcher goes on)
            or ``stopped``.
        roots: the roots concerned.
        report: the run's report (``run``).
        message: what went wrong (``failed``) or why a root is paused.
    """

    kind: WatchKind
    roots: list[str] = field(default_factory=list)
    report: IndexReport | None = None
    message: str = ""


def watched_roots(index_dir: Path, given: Sequence[str], writer: IndexWriter | None = None) -> list[str]:
    """The folders to follow: those given and those the index records (manifest and files tables)."""
    from vela_search.store import AudioIndex, manifest
    from vela_search.store.layout import MANIFEST

    roots = [os.path.abspath(os.path.expanduser(p)) for p in given]
    roots = [os.path.dirname(r) if os.path.isfile(r) else r for r in roots]
    recorded = [
        r for r in (manifest.read(index_dir / MANIFEST) or {}).get("roots") or [] if isinstance(r, str)
    ]
    if writer is not None:
        recorded += recorded_roots(writer.files(), folders_only=True)
    elif AudioIndex.exists(index_dir):
        with AudioIndex.open(index_dir, shards=False) as current:
            recorded += recorded_roots(current.files(), folders_only=True)
    return sorted({r for r in [*roots, *recorded] if not is_dataset_uri(r)})


class IndexWatcher:
    """Keeps an index following its folders until stopped (see the module's docstring).

    Args:
        index_dir: the index (it must exist: the first pass of a new index is an ordinary run).
        embedder: the embedder, or a loader called the first time there is something to embed.
        options: the settings of every run (``settle_s`` is taken from ``settings``).
        settings: the watcher's waits and polling.
        paths: folders to follow besides those the index records.
        on_event: called with a :class:`WatchEvent` as things happen.
        decode_workers: decoding threads of each run.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike[str],
        embedder: EmbedderSource,
        options: IndexOptions | None = None,
        *,
        settings: WatchSettings | None = None,
        paths: Sequence[str] = (),
        on_event: Callable[[WatchEvent], None] | None = None,
        decode_workers: int | None = None,
    ) -> None:
        self.index_dir = Path(index_dir).expanduser()
        self.settings = settings or WatchSettings()
        self.settings.validate()
        self.options = replace(
            options or IndexOptions(), settle_s=self.settings.settle_s, keep_missing_roots=True, rebuild=False
        )
        self._source = embedder
        self._embedder: VelaEmbedder | None = embedder if hasattr(embedder, "embed_items") else None  # type: ignore[assignment]
        self._given = list(paths)
        self._on_event = on_event or (lambda event: None)
        self._decode_workers = decode_workers
        self._settling = SettlingPaths(self.settings.settle_s, self.settings.max_wait_s)
        self._paused: dict[str, str] = {}  # root -> why
        self._recorder = shared_recorder(self.index_dir)
        self._writer: IndexWriter | None = None
        self._roots: list[str] = []
        self._beat = 0.0
        self._in_run = 0  # files of the running run not landed yet
        self._stop = threading.Event()
        self._polling = self.settings.poll  # also once change notifications fail
        self._holds_files: dict[str, bool] = {}  # root -> the index holds files from it

    # ------------------------------------------------------------------------------------ lifetime
    def hold(self) -> None:
        """Take the writer lock now (:meth:`run` does it when not done before).

        Raises:
            IndexLockedError: another process writes the index.
            IndexNotFoundError: no index at ``index_dir``.
        """
        if self._writer is None:
            self._writer = self._open_writer()

    def release(self) -> None:
        """Release the writer lock taken by :meth:`hold` (when :meth:`run` is not using it)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def run(self, stop: threading.Event | None = None) -> None:
        """Follow the folders until ``stop`` is set (or Ctrl-C, which propagates as KeyboardInterrupt).

        A run under way when ``stop`` is set ends at the next file: the files that landed are committed.

        Raises:
            IndexLockedError: another process writes the index.
            IndexNotFoundError: no index at ``index_dir``.
        """
        self._stop = stop = stop or threading.Event()
        try:
            self.hold()
            self._roots = watched_roots(self.index_dir, self._given, self._writer)
            if not self._roots:
                raise VelaError(
                    f"index {self.index_dir} records no folders to watch: give the folders to index"
                )
            self._look_at_roots()
            self._on_event(WatchEvent("watching", list(self._roots)))
            self._loop(stop)
        except WatchStopped:
            pass
        finally:
            self.release()
            self._recorder.update(files_waiting=0)
            self._on_event(WatchEvent("stopped"))

    def _loop(self, stop: threading.Event) -> None:
        """Follow the present roots; while none is present, look for them every tick."""
        catch_up = set(self._present())  # the first pass: whatever changed while nobody watched
        while not stop.is_set():
            present = self._present()
            if present:
                catch_up = self._follow(present, catch_up, stop)
            else:
                self._record()
                stop.wait(_TICK_S)
                catch_up |= self._look_at_roots()

    def _open_writer(self) -> IndexWriter:
        from vela_search.store import IndexWriter, manifest
        from vela_search.store.layout import MANIFEST

        stored = manifest.read(self.index_dir / MANIFEST)
        if stored is None:
            from vela_search.errors import IndexNotFoundError

            raise IndexNotFoundError(f"no index at {self.index_dir}: index some folders first")
        return IndexWriter(
            self.index_dir,
            fingerprint=stored["fingerprint"],
            factory=self.options.factory,
            max_index_memory=self.options.max_index_memory,
            maintenance=self.options.maintenance,  # merges and re-training off the watcher's commits
            choice_limits=self.options.choice_limits,
        )

    # -------------------------------------------------------------------------------------- roots
    def _present(self) -> list[str]:
        return [r for r in self._roots if r not in self._paused]

    def _look_at_roots(self) -> set[str]:
        """Pause roots that vanished and resume those back; returns the roots to catch up (resumed)."""
        resumed: set[str] = set()
        for root in self._roots:
            why = self._absence(root)
            if why and root not in self._paused:
                self._paused[root] = why
                self._settling.drop_under(root)
                self._record()  # before the event: whoever hears it finds the record written
                self._on_event(WatchEvent("paused", [root], message=why))
            elif not why and root in self._paused:
                del self._paused[root]
                resumed.add(root)
                self._record()
                self._on_event(WatchEvent("resumed", [root]))
        return resumed

    def _absence(self, root: str) -> str:
        """Why ``root`` cannot be followed now ("" when it can)."""
        if not os.path.isdir(root):
            return "missing (unmounted or removed): paused, nothing of it is removed from the index"
        try:
            with os.scandir(root) as entries:
                empty = next(entries, None) is None
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc}): paused, nothing of it is removed from the index"
        if empty and self._has_files_under(root):
            return "empty while the index holds files from it (unmounted?): paused, nothing is removed"
        return ""

    def _has_files_under(self, root: str) -> bool:
        """Whether the index holds files from ``root`` (cached until the next run changes the index)."""
        import pyarrow.compute as pc

        if root not in self._holds_files:
            assert self._writer is not None
            files = self._writer.files()
            found = files.num_rows > 0 and bool(pc.any(pc.equal(files["root"], root)).as_py())
            self._holds_files[root] = found
        return self._holds_files[root]

    def _root_of(self, path: str) -> str | None:
        best = None
        for root in self._roots:
            if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
                if best is None or len(root) > len(best):
                    best = root
        return best

    # ------------------------------------------------------------------------------------ following
    def _follow(self, present: list[str], catch_up: set[str], stop: threading.Event) -> set[str]:
        """Watch ``present`` until the roots change or ``stop`` is set; returns the roots to catch up."""
        try:
            for changes in self._changes(present, stop):
                # The first yield comes once the folders are watched: a catch-up run now misses nothing.
                if catch_up:
                    self._run(sorted(catch_up))
                    catch_up = set()
                self._settling.note(path for _change, path in changes)
                resumed = self._look_at_roots()
                if resumed or any(root in self._paused for root in present):
                    return resumed  # watch the new set of roots
                self._settling.check()
                if self._settling.due():
                    self._run_settled()
                self._record()
        except OSError as exc:  # from the watcher itself: runs report their own errors
            resumed = self._look_at_roots()
            if resumed or any(root in self._paused for root in present):
                return resumed | catch_up  # a root vanished as the watch started
            if self._polling:
                raise
            # E.g. inotify's limit of watches (fs.inotify.max_user_watches) on a very large library.
            self._polling = True
            message = (
                f"change notifications failed ({exc}); polling every {self.settings.poll_interval_s:g} s"
            )
            self._on_event(WatchEvent("failed", present, message=message))
            return catch_up
        return set()

    def _changes(self, present: list[str], stop: threading.Event) -> Iterator[set[tuple[Any, str]]]:
        """The watchfiles generator over ``present``: a (possibly empty) set of changes every tick."""
        import watchfiles

        settings = self.settings
        return watchfiles.watch(
            *present,
            debounce=max(50, int(min(settings.settle_s, 1.0) * 1000)),
            step=50,
            stop_event=stop,
            rust_timeout=int(_TICK_S * 1000),
            yield_on_timeout=True,
            force_polling=self._polling,
            poll_delay_ms=int(settings.poll_interval_s * 1000),
            ignore_permission_denied=True,
        )

    def _run_settled(self) -> None:
        """Run over the roots of every settled path (the planner holds back files still being written)."""
        files = self._settling.files_waiting
        roots = {self._root_of(path) for path in self._settling.take()}
        self._run(sorted(r for r in roots if r is not None and r not in self._paused), taken=files)

    def _run(self, roots: list[str], taken: int = 0) -> None:
        """One incremental run over ``roots``, with the lock the watcher holds (``taken``: files in it)."""
        if not roots:
            return
        self._in_run = taken
        self._record(force=True)
        self._holds_files.clear()
        options = replace(self.options, progress=self._progress)
        try:
            report = index_paths(
                roots,
                self.index_dir,
                self._embedder or self._load,
                options,
                decode_workers=self._decode_workers,
                writer=self._writer,
            )
        except (VelaError, OSError) as exc:
            # The run's whole files are committed; what remains is retried with the next change.
            self._in_run = 0
            self._reopen()
            self._settling.note(roots)
            self._on_event(WatchEvent("failed", roots, message=str(exc)))
            return
        self._in_run = 0
        self._settling.note(report.held)  # still being written: looked at again
        self._on_event(WatchEvent("run", roots, report=report))
        self._record(force=True, caught_up=not len(self._settling))

    def _progress(self, event: IndexProgress) -> None:
        """Files of the running run not landed yet count as waiting (recorded at most once a second, and
        as a heartbeat through long scans); a stop ends the run at the next file."""
        if self._stop.is_set():
            raise WatchStopped
        if event.phase in ("embed", "relink") and event.files_total:
            self._in_run = max(0, event.files_total - event.files_done)
        if time.monotonic() - self._beat >= 1.0:
            self._record()
        if self.options.progress is not None:
            self.options.progress(event)

    def _load(self) -> VelaEmbedder:
        if self._embedder is None:
            self._embedder = self._source()  # type: ignore[operator]
        return self._embedder

    def _reopen(self) -> None:
        """A fresh writer after a failed run (its uncommitted changes are dropped; a rerun redoes them)."""
        if self._writer is not None:
            self._writer.close()
        self._writer = self._open_writer()

    def _record(self, *, force: bool = False, caught_up: bool = False) -> None:
        """Write what is waiting to activity.json when it changed, and as a heartbeat."""
        waiting = self._settling.files_waiting + self._in_run
        paused = sorted(self._paused)
        last = self._recorder.state
        now = time.monotonic()
        changed = (last.files_waiting, last.paused_roots) != (waiting, paused)
        if changed or force or caught_up or now - self._beat >= _HEARTBEAT_S:
            self._beat = now
            self._recorder.update(files_waiting=waiting, paused_roots=paused, caught_up=caught_up)
