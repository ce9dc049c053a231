"""The single-writer lock: a live holder refuses others, a dead one's lock is taken over."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from vela_search.errors import IndexLockedError
from vela_search.store.lock import WriterLock

from .helpers import FP, run_python

HOLD_WRITER = """
    import sys
    from vela_search.store import AudioIndex
    fp = {"model": "tiny", "revision": "r1", "prompt_version": "1", "dim": 16}
    with AudioIndex.open(sys.argv[1]).writer(fingerprint=fp):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the parent closes stdin
"""


def test_second_writer_is_refused_while_another_process_writes(index, root):
    holder = run_python(HOLD_WRITER, str(root))
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        with pytest.raises(IndexLockedError) as e:
            index.writer(fingerprint=FP)
        assert str(e.value).startswith(f"index {root} is being written by process {holder.pid}")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with index.writer(fingerprint=FP) as w:  # free again once the holder is gone
        assert w.generation == 0


def test_second_writer_in_the_same_process_is_refused(index):
    with index.writer(fingerprint=FP):
        with pytest.raises(IndexLockedError, match="being written by process"):
            index.writer(fingerprint=FP)


def test_stale_lock_of_a_dead_process_is_taken_over(index, root):
    dead = run_python("pass")
    dead.wait(timeout=30)
    (root / "writer.lock").write_text(json.dumps({"pid": dead.pid, "hostname": socket.gethostname()}))
    with index.writer(fingerprint=FP) as w:
        assert w._lock.previous_holder["pid"] == dead.pid
        record = json.loads((root / "writer.lock").read_text())
        assert record["pid"] != dead.pid and record["hostname"] == socket.gethostname()
    assert (root / "writer.lock").read_text() == ""  # released


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX lock semantics")
def test_lock_released_on_close_and_reacquired(tmp_path):
    lock = WriterLock(tmp_path)
    lock.acquire()
    assert lock.held
    other = WriterLock(tmp_path)
    with pytest.raises(IndexLockedError):
        other.acquire()
    lock.release()
    lock.release()  # idempotent
    with other:
        assert other.held
    assert not other.held
