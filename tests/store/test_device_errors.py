"""A full or read-only device: one clear line, nothing lost (simulated, and on real mounts where allowed)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from vela_search.store import AudioIndex, IndexWriteError, IndexWriter
from vela_search.store import fsio as fsio_module
from vela_search.store import lock as lock_module

from .helpers import DIM, FP, unit

CLI = str(Path(sys.executable).with_name("vela-search"))


def _index_with_shards(root: Path, shards: int) -> None:
    index = AudioIndex.create(root, fingerprint=FP, dim=DIM)
    with index.writer(fingerprint=FP) as w:
        for s in range(shards):
            w.add(unit(3, seed=s), [{"path": f"/a/{s}.wav"}] * 3)
            w.commit()
    index.close()


def _raise(code: int):  # noqa: ANN202
    def fail(*args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError(code, os.strerror(code))

    return fail


def test_disk_full_during_a_commit_is_one_line_and_loses_nothing(tmp_path, monkeypatch):
    root = tmp_path / "idx"
    _index_with_shards(root, 2)
    with IndexWriter(root, fingerprint=FP) as w:
        w.add(unit(2, seed=7), [{"path": "/a/new.wav"}] * 2)
        with monkeypatch.context() as m:
            m.setattr(fsio_module.os, "fsync", _raise(errno.ENOSPC))
            with pytest.raises(IndexWriteError, match="no space left on the device") as info:
                w.commit()
        assert "nothing was lost" in str(info.value) and "generation 2" in str(info.value)
        with AudioIndex.open(root) as index:  # the last commit is intact
            assert index.generation == 2 and index.num_vectors == 6
        w.commit()  # space is back: the same batch commits
    with AudioIndex.open(root) as index:
        assert index.num_vectors == 8
    assert not [p for p in root.rglob(".tmp-*")]


def test_disk_full_when_creating_an_index(tmp_path, monkeypatch):
    monkeypatch.setattr(fsio_module.os, "fsync", _raise(errno.ENOSPC))
    with pytest.raises(IndexWriteError, match="no space left on the device of .*idx"):
        AudioIndex.create(tmp_path / "idx", fingerprint=FP, dim=DIM)


@pytest.mark.parametrize(
    "code, words", [(errno.EROFS, "read-only file system"), (errno.EACCES, "not writable")]
)
def test_a_read_only_index_refuses_writers_in_one_line(tmp_path, monkeypatch, code, words):
    root = tmp_path / "idx"
    _index_with_shards(root, 1)
    monkeypatch.setattr(lock_module.os, "open", _raise(code))
    with pytest.raises(IndexWriteError, match=words):
        IndexWriter(root, fingerprint=FP)
    with AudioIndex.open(root) as index:  # readers need no write access
        assert index.num_vectors == 3


# ----- the installed command on real mounts (root can mount a tmpfs or a read-only bind mount) -----


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mount_point(tmp_path):
    point = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    point.mkdir()
    yield point
    subprocess.run(["umount", str(point)], capture_output=True)


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_compact_on_a_full_tmpfs(mount_point):
    if not _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)):
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    root = mount_point / "idx"
    _index_with_shards(root, 4)
    before = json.loads((root / "manifest.json").read_text())
    with open(mount_point / "filler", "wb", buffering=0) as f:  # fill the device
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    done = _run("compact", "--index", str(root))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "no space left on the device" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3  # one line, soft-wrapped at most
    assert json.loads((root / "manifest.json").read_text())["generation"] == before["generation"]
    (mount_point / "filler").unlink()
    assert _run("compact", "--index", str(root)).returncode == 0


def test_cli_writes_on_a_read_only_mount_fail_in_one_line_and_reads_work(tmp_path, mount_point):
    root = tmp_path / "idx"
    _index_with_shards(root, 2)
    if not (
        _mount("--bind", str(root), str(mount_point)) and _mount("-o", "remount,bind,ro", str(mount_point))
    ):
        pytest.skip("cannot make a read-only bind mount here (needs CAP_SYS_ADMIN)")
    done = _run("compact", "--index", str(mount_point))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "read-only file system" in done.stderr
    assert _run("info", "--index", str(mount_point)).returncode == 0
    assert _run("check", "--index", str(mount_point)).returncode == 0
