from __future__ import annotations

import hashlib
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vela_search.bench import download as dl
from vela_search.bench.datasets import load_clotho
from vela_search.bench.download import RemoteFile, download_dataset, download_file, extract_7z
from vela_search.errors import DatasetError

from .dataset_factory import make_clotho

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range`` unless told not to; can cut a response short."""

    def do_GET(self):  # noqa: N802 (http.server naming)
        srv = self.server
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        srv.requests.append((path, rng))
        data = srv.files.get(path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng and srv.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            body, srv.cut_after = body[: srv.cut_after], None  # only the next response is cut
        srv.bytes_sent += len(body)
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.honour_range, srv.cut_after, srv.bytes_sent = {}, [], True, None, 0
    srv.files["/data.bin"] = PAYLOAD
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_with_checksum(server, tmp_path):
    calls = []
    dest = download_file(
        f"{server.url}/data.bin", tmp_path / "sub" / "data.bin", md5=MD5, progress=lambda *a: calls.append(a)
    )
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "data.bin.part").exists()
    assert calls[0] == ("data.bin", 0, len(PAYLOAD)) and calls[-1] == ("data.bin", len(PAYLOAD), len(PAYLOAD))
    assert server.requests == [("/data.bin", None)]


def test_existing_verified_file_is_not_fetched_again(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(PAYLOAD)
    download_file(f"{server.url}/data.bin", tmp_path / "data.bin", md5=MD5)
    assert server.requests == []


def test_existing_file_with_wrong_checksum_is_reported_not_deleted(server, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"something else")
    with pytest.raises(DatasetError, match="exists but its MD5"):
        download_file(f"{server.url}/data.bin", tmp_path / "data.bin", md5=MD5)
    assert (tmp_path / "data.bin").read_bytes() == b"something else"


def test_checksum_mismatch(server, tmp_path):
    with pytest.raises(DatasetError) as err:
        download_file(f"{server.url}/data.bin", tmp_path / "data.bin", md5="0" * 32)
    assert f"MD5 is {MD5}, expected {'0' * 32}" in str(err.value)
    assert "/data.bin" in str(err.value)
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()


def test_size_mismatch(server, tmp_path):
    with pytest.raises(DatasetError, match=f"size is {len(PAYLOAD)} bytes, expected 5"):
        download_file(f"{server.url}/data.bin", tmp_path / "data.bin", size=5)


def test_resume_from_partial_file(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:4000])
    calls = []
    download_file(
        f"{server.url}/data.bin", tmp_path / "data.bin", md5=MD5, progress=lambda *a: calls.append(a)
    )
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", "bytes=4000-")]
    assert server.bytes_sent == len(PAYLOAD) - 4000
    assert calls[0] == ("data.bin", 4000, len(PAYLOAD))


def test_interrupted_download_resumes_on_the_next_call(server, tmp_path):
    server.cut_after = 3000
    with pytest.raises(DatasetError, match="run it again to resume"):
        download_file(f"{server.url}/data.bin", tmp_path / "data.bin", md5=MD5)
    assert (tmp_path / "data.bin.part").stat().st_size == 3000
    download_file(f"{server.url}/data.bin", tmp_path / "data.bin", md5=MD5)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/data.bin", "bytes=3000-")


def test_corrupt_partial_file_is_fetched_again_from_scratch(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"\xff" * 4000)
    download_file(f"{server.url}/data.bin", tmp_path / "data.bin", md5=MD5)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", "bytes=4000-"), ("/data.bin", None)]


def test_server_without_range_support_restarts(server, tmp_path):
    server.honour_range = False
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:4000])
    download_file(f"{server.url}/data.bin", tmp_path / "data.bin", md5=MD5)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_complete_partial_file_gets_416_and_is_verified(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download_file(f"{server.url}/data.bin", tmp_path / "data.bin", md5=MD5)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert server.bytes_sent == 0


def test_http_error(server, tmp_path):
    with pytest.raises(DatasetError, match=r"download of .*/nothing\.bin failed: HTTP 404"):
        download_file(f"{server.url}/nothing.bin", tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()


def test_offline_connection_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/clotho_audio_evaluation.7z"
    with pytest.raises(DatasetError) as err:
        download_file(url, tmp_path / "a.7z", timeout=5)
    msg = str(err.value)
    assert url in msg and "internet connection" in msg and str(tmp_path / "a.7z") in msg
    assert err.value.__suppress_context__  # the CLI shows the message, not a chained traceback


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(DatasetError, match="clotho, audiocaps"):
        download_dataset("esc50", tmp_path)
    with pytest.raises(DatasetError, match="development, validation, evaluation"):
        download_dataset("clotho", tmp_path, split="test")


def test_registry_urls_and_checksums():
    clotho = dl.REMOTE_FILES["clotho"]["evaluation"]
    assert [r.filename for r in clotho] == ["clotho_captions_evaluation.csv", "clotho_audio_evaluation.7z"]
    assert all(r.url.startswith("https://zenodo.org/records/4783391/files/") for r in clotho)
    assert clotho[1].md5 == "4569624ccadf96223f19cb59fe4f849f" and clotho[1].extract
    ac = dl.REMOTE_FILES["audiocaps"]["test"]
    assert ac[0].url == "https://raw.githubusercontent.com/cdjkim/audiocaps/master/dataset/test.csv"
    assert ac[0].md5 is None


def _serve_clotho(server, monkeypatch, archive: bytes, csv_bytes: bytes) -> None:
    server.files["/clotho_captions_evaluation.csv"] = csv_bytes
    server.files["/clotho_audio_evaluation.7z"] = archive
    monkeypatch.setitem(
        dl.REMOTE_FILES["clotho"],
        "evaluation",
        (
            RemoteFile(
                f"{server.url}/clotho_captions_evaluation.csv?download=1",
                "clotho_captions_evaluation.csv",
                hashlib.md5(csv_bytes).hexdigest(),
            ),
            RemoteFile(
                f"{server.url}/clotho_audio_evaluation.7z?download=1",
                "clotho_audio_evaluation.7z",
                hashlib.md5(archive).hexdigest(),
                extract=True,
            ),
        ),
    )


def test_clotho_download_without_py7zr_keeps_verified_archive(server, tmp_path, monkeypatch):
    _serve_clotho(server, monkeypatch, b"7z-bytes", b"file_name,caption_1\n")
    monkeypatch.setitem(sys.modules, "py7zr", None)  # makes `import py7zr` fail
    with pytest.raises(DatasetError, match="pip install py7zr"):
        download_dataset("clotho", tmp_path / "clotho")
    assert (tmp_path / "clotho" / "clotho_audio_evaluation.7z").read_bytes() == b"7z-bytes"
    assert (tmp_path / "clotho" / "clotho_captions_evaluation.csv").is_file()


def test_clotho_download_and_extract(server, tmp_path, monkeypatch):
    py7zr = pytest.importorskip("py7zr")
    src = make_clotho(tmp_path / "src", 3, seconds=0.1)
    with py7zr.SevenZipFile(tmp_path / "a.7z", "w") as z:
        z.writeall(src / "evaluation", "evaluation")  # the official archive unpacks to evaluation/
    _serve_clotho(
        server,
        monkeypatch,
        (tmp_path / "a.7z").read_bytes(),
        (src / "clotho_captions_evaluation.csv").read_bytes(),
    )
    data_dir = download_dataset("clotho", tmp_path / "clotho")
    ds = load_clotho(data_dir)
    assert ds.n_clips == 3 and ds.missing == []
    n_requests = len(server.requests)
    download_dataset("clotho", data_dir)  # everything verified and extracted already: no transfer
    assert len(server.requests) == n_requests


def test_damaged_archive(tmp_path):
    pytest.importorskip("py7zr")
    (tmp_path / "bad.7z").write_bytes(b"not a 7z archive")
    with pytest.raises(DatasetError, match="cannot unpack"):
        extract_7z(tmp_path / "bad.7z", tmp_path)


def test_audiocaps_download_fetches_csv_only(server, tmp_path, monkeypatch):
    csv_bytes = b"audiocap_id,youtube_id,start_time,caption\n1,abcdefghijk,0,a dog barks\n"
    server.files["/test.csv"] = csv_bytes
    monkeypatch.setitem(
        dl.REMOTE_FILES["audiocaps"], "test", (RemoteFile(f"{server.url}/test.csv", "test.csv"),)
    )
    data_dir = download_dataset("audiocaps", tmp_path)
    assert (data_dir / "test.csv").read_bytes() == csv_bytes
    assert "YouTube" in dl.AUDIOCAPS_AUDIO_NOTE


def test_audiocaps_download_rejects_a_non_csv(server, tmp_path, monkeypatch):
    server.files["/test.csv"] = b"<html>moved</html>"
    monkeypatch.setitem(
        dl.REMOTE_FILES["audiocaps"], "test", (RemoteFile(f"{server.url}/test.csv", "test.csv"),)
    )
    with pytest.raises(DatasetError, match="not an AudioCaps captions CSV"):
        download_dataset("audiocaps", tmp_path)
