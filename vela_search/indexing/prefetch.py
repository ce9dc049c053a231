"""Background decoding: worker threads stream files into windows while the caller embeds earlier ones.

Files are handed to the workers in order and their segments come back in order. Memory is bounded by a
budget of buffered segments shared by the files ahead of the one being consumed; the file being consumed
has its own small allowance, so it can always make progress (no deadlock) and a multi-hour file is
streamed window by window instead of being decoded whole.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from vela_search.audio import AudioBytes, AudioSegment, iter_segments


@dataclass(frozen=True)
class Segment:
    """A decoded window of the file being consumed."""

    segment: AudioSegment


@dataclass(frozen=True)
class Failed:
    """The file could not be decoded (segments already yielded for it must be discarded)."""

    error: BaseException


# Decoding threads run at a lower CPU priority (Linux niceness is per thread): where decoding and embedding
# share the cores, the embedder is the stage to keep busy and decoding fills the gaps.
_DECODE_NICENESS = 5


def _lower_priority() -> None:
    if sys.platform.startswith("linux"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + _DECODE_NICENESS)
        except OSError:
            pass  # not permitted here: run at the normal priority


class SegmentPrefetcher:
    """Decode files in background threads, in order, with a bounded number of buffered segments.

    Example:
        >>> with SegmentPrefetcher(["a.wav", "b.flac"]) as pf:  # doctest: +SKIP
        ...     for i in range(2):
        ...         for message in pf.messages(i):
        ...             ...

    Args:
        paths: files, in the order they will be consumed (or callables returning `AudioBytes`).
        window_s: window length for files longer than 30 s.
        hop_s: hop between windows.
        workers: decoding threads.
        budget: segments that files ahead of the consumed one may buffer together.
        head_allowance: segments the consumed file may buffer.
    """

    def __init__(
        self,
        paths: Sequence[str | Callable[[], AudioBytes]],
        *,
        window_s: float = 10.0,
        hop_s: float = 5.0,
        workers: int = 1,
        budget: int = 64,
        head_allowance: int = 16,
    ) -> None:
        self._paths = list(paths)
        self._window_s, self._hop_s = window_s, hop_s
        self._budget = max(1, budget)
        self._head_allowance = max(1, head_allowance)
        self._cond = threading.Condition()
        self._buffers: dict[int, deque[Segment | Failed | None]] = {}
        self._counts: dict[int, int] = {}
        self._ahead = 0  # segments buffered by files after the head
        self._head = 0
        self._next = 0
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"vela-decode-{i}", daemon=True)
            for i in range(max(1, min(workers, len(self._paths) or 1)))
        ]
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------------------------- workers
    def _work(self) -> None:
        _lower_priority()
        while True:
            with self._cond:
                if self._stopped or self._next >= len(self._paths):
                    return
                index = self._next
                self._next += 1
                self._buffers[index] = deque()
                self._counts[index] = 0
            try:
                source = self._paths[index]
                if callable(source):  # a dataset row: its bytes are read here, in the worker
                    source = source()
                for seg in iter_segments(source, window_s=self._window_s, hop_s=self._hop_s):
                    if not self._put(index, Segment(seg)):
                        return
                self._put(index, None, counted=False)
            except Exception as exc:  # noqa: BLE001 - every per-file error is reported, never raised here
                if not self._put(index, Failed(exc), counted=False):
                    return

    def _put(self, index: int, item: Segment | Failed | None, *, counted: bool = True) -> bool:
        with self._cond:
            if counted:
                while not self._stopped and not self._room(index):
                    self._cond.wait()
            if self._stopped:
                return False
            self._buffers[index].append(item)
            if counted:
                self._counts[index] += 1
                if index != self._head:
                    self._ahead += 1
            self._cond.notify_all()
            return True

    def _room(self, index: int) -> bool:
        if index == self._head:
            return self._counts[index] < self._head_allowance
        return self._ahead < self._budget

    # ------------------------------------------------------------------------------------ consumer
    def messages(self, index: int) -> Iterator[Segment | Failed]:
        """Segments of file ``index`` as they are decoded, then a :class:`Failed` if decoding failed.

        Files must be consumed in order, each completely, starting at 0.
        """
        with self._cond:
            if index != self._head:
                raise ValueError(f"file {index} requested while file {self._head} is being consumed")
        finished = False
        while not finished:
            with self._cond:
                while not self._stopped and not self._buffers.get(index):
                    self._cond.wait()
                if self._stopped:
                    return
                item = self._buffers[index].popleft()
                if isinstance(item, Segment):
                    self._counts[index] -= 1
                self._cond.notify_all()
            if item is None:
                break
            finished = isinstance(item, Failed)
            yield item
        with self._cond:
            del self._buffers[index]
            del self._counts[index]
            self._head = index + 1
            # The next file's buffered segments now count against the head allowance, not the budget.
            self._ahead -= self._counts.get(self._head, 0)
            self._cond.notify_all()

    def ready(self, index: int) -> bool:
        """Whether file ``index`` has a message waiting (reading it would not block)."""
        with self._cond:
            return bool(self._buffers.get(index))

    def close(self) -> None:
        """Stop the workers (a file being decoded is abandoned) and wait for them."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> SegmentPrefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
