"""Readers see one generation at a time, even while another process commits."""

from __future__ import annotations

import time

import numpy as np

from vela_search.store import AudioIndex

from .helpers import run_python, unit

COMMIT_LOOP = """
    import sys
    import numpy as np
    from vela_search.store import AudioIndex
    fp = {"model": "tiny", "revision": "r1", "prompt_version": "1", "dim": 16}
    rng = np.random.default_rng(0)
    with AudioIndex.open(sys.argv[1]).writer(fingerprint=fp) as w:
        print("started", flush=True)
        previous = None
        for c in range(1, int(sys.argv[2]) + 1):
            v = rng.standard_normal((5, 16)).astype(np.float32)
            ids = w.add(v, [{"path": "/c/%d.wav" % c, "commit": c}] * 5)
            w.put_files([{"path": "/c/%d.wav" % c, "status": "indexed", "segments": c}])
            if previous is not None:
                w.delete([int(previous[0])])
            previous = ids
            assert w.commit() == c
"""


def _check(reader: AudioIndex) -> None:
    g = reader.generation
    files = reader.files()
    # Every table of the snapshot belongs to the same generation as its shard list.
    assert files.num_rows == g
    assert max(files["segments"].to_pylist(), default=0) == g
    assert reader.num_vectors == 5 * g - max(g - 1, 0)
    # Commits merge the newest shards by size tiers (dropping deleted rows and their tombstones), so the
    # shards stay few and hold exactly the live rows plus the tombstoned ones not yet merged away.
    assert reader.num_shards <= 12
    assert (
        sum(s["count"] for s in reader.manifest["shards"]) == reader.num_vectors + reader.deleted_ids().size
    )
    assert reader.deleted_ids().size <= max(g - 1, 0)
    if g:
        ids, _ = reader.all_vectors()
        assert len(ids) == reader.num_vectors
        hits = reader.search(unit(1, seed=g), k=1000)[0]
        assert len(hits) == reader.num_vectors
        assert max(h.row["commit"] for h in hits) == g


def test_reader_sees_old_or_new_generation_never_a_mix(index, root):
    commits = 60
    writer = run_python(COMMIT_LOOP, str(root), str(commits))
    assert writer.stdout.readline().strip() == "started", writer.stderr.read()
    seen = set()
    deadline = time.monotonic() + 60
    while writer.poll() is None and time.monotonic() < deadline:
        with AudioIndex.open(root) as reader:
            _check(reader)
            seen.add(reader.generation)
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    with AudioIndex.open(root) as reader:
        assert reader.generation == commits
        _check(reader)
        assert reader.num_shards < commits // 4 and reader.deleted_ids().size < commits - 1  # merged
    assert len(seen) > 3, seen  # the reader really overlapped many commits
    assert np.all(np.diff(sorted(seen)) > 0)
