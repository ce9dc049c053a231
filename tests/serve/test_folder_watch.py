"""`serve --watch`: a real server on a loopback port follows its index's folder; searches see new files,
removed files leave, /api/indexes says what is pending; a second writer is refused meanwhile."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from audio_factory import tone, write_audio
from cli_in_process import vela
from fastapi.testclient import TestClient

from vela_search.indexing import index_paths
from vela_search.indexing.watch import WatchSettings
from vela_search.serve.app import create_app
from vela_search.serve.folder_watch import FolderWatchers
from vela_search.serve.service import ServeSettings, Service
from vela_search.store.activity import ActivityRecorder
from vela_search.store.lock import WriterLock

from .helpers import SR, copy_index, start_server, stop_server

FOLLOW_S = 60.0  # settle (0.5 s) + a run that loads nothing new: a few seconds; generous on a busy machine


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def _word_hits(url: str, word: str) -> list[str]:
    hits = _post(url + "/api/search", {"query": word, "mode": "words", "k": 10})["hits"]
    return [hit["path"] for hit in hits]


def _wait(check, what: str) -> None:
    deadline = time.monotonic() + FOLLOW_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {FOLLOW_S:g} s: {what}")


@pytest.mark.slow  # ~30-40 s: a server process starts and loads its model (the in-process test below is fast)
def test_serve_watch_follows_the_folder_and_searches_see_it(tmp_path, tiny_model_dir):
    audio, index = tmp_path / "audio", tmp_path / "idx"
    audio.mkdir()
    write_audio(audio / "first.wav", tone(1, freq=330), SR)
    built = vela("index", str(audio), "--index", str(index), "--model", "tiny", "--demos", "none")
    assert built.returncode == 0, built.stderr
    proc, url = start_server(index, "--watch", "--settle", "0.5")
    try:
        refused = vela("index", "--index", str(index))
        assert refused.returncode == 1 and "is being written by process" in refused.stderr

        write_audio(audio / "zebracrossing.wav", tone(1.5, freq=770), SR)
        _wait(lambda: any("zebracrossing" in p for p in _word_hits(url, "zebracrossing")), "a new file found")
        (audio / "first.wav").unlink()
        _wait(lambda: _get(url + "/api/indexes")["indexes"][0]["files"] == 1, "a removed file gone")
        activity = _get(url + "/api/indexes")["indexes"][0]["activity"]
        assert activity["live"] and activity["caught_up_at"] is not None
        assert activity["paused_roots"] == []
    finally:
        stop_server(proc)
    assert proc.returncode == 0, proc.stderr.read()
    WriterLock(index).acquire()  # the watcher let go of the lock: another writer may run now


def test_watchers_in_the_server_process_share_its_model(tmp_path, tiny_embedder):
    audio, index = tmp_path / "audio", tmp_path / "idx"
    audio.mkdir()
    write_audio(audio / "first.wav", tone(1, freq=330), SR)
    index_paths([audio], index, tiny_embedder)
    settings = ServeSettings(refresh_interval_s=0.2)
    service = Service.open([("idx", index)], settings, embedders={fingerprint_key_of(index): tiny_embedder})
    service.watchers = FolderWatchers([("idx", index)], service.models, WatchSettings(settle_s=0.5))
    service.watchers.start()
    with TestClient(create_app(service)) as client:

        def found() -> bool:
            body = {"query": "zebracrossing", "mode": "words", "k": 5}
            return any(
                "zebracrossing" in h["path"] for h in client.post("/api/search", json=body).json()["hits"]
            )

        assert vela("index", "--index", str(index)).returncode == 1  # the lock is held meanwhile
        write_audio(audio / "zebracrossing.wav", tone(1.5, freq=770), SR)
        _wait(found, "a new file found by a search")
        hits = client.post("/api/search", json={"query": "a tone", "k": 5}).json()["hits"]
        assert {h["path"] for h in hits} == {str(audio / "first.wav"), str(audio / "zebracrossing.wav")}
    assert len(service.models.batchers()) == 1  # the watcher embedded with the server's model
    WriterLock(index).acquire()  # the app's shutdown stopped the watcher and released the lock


def fingerprint_key_of(index) -> str:
    from vela_search.serve.models import fingerprint_key
    from vela_search.store import AudioIndex

    with AudioIndex.open(index, shards=False) as snapshot:
        return fingerprint_key(snapshot)


def test_api_indexes_reports_a_live_writers_pending_files(serve_collection, tmp_path):
    index = copy_index(serve_collection[1], tmp_path / "idx")
    service = Service.open([("idx", index)], ServeSettings(refresh_interval_s=None))
    with TestClient(create_app(service)) as client:
        assert client.get("/api/indexes").json()["indexes"][0]["activity"]["pending"] is False
        ActivityRecorder(index).update(files_waiting=12, paused_roots=["/mnt/away"])
        activity = client.get("/api/indexes").json()["indexes"][0]["activity"]
    assert activity["files_waiting"] == 12 and activity["pending"] and activity["live"]
    assert activity["paused_roots"] == ["/mnt/away"]
