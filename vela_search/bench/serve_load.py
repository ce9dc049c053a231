"""Load benchmark of ``vela-search serve``: concurrent loopback clients, with batching on and off.

For each setting a real server is started in a subprocess (``vela-search serve --port N``, one model
load each) and measured end to end through HTTP: first one client alone (the single-query latency),
then N clients sending M text queries each, as fast as answers come back. Clients are threads with one
keep-alive connection each (standard library ``http.client``), in this process.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vela_search.bench.synthetic import synthetic_queries
from vela_search.bench.timing import percentile
from vela_search.errors import VelaError

__all__ = ["LoadRun", "run_serve_benchmark"]


@dataclass
class LoadRun:
    """One measurement: ``clients`` x ``per_client`` queries against one server setting."""

    batching: bool
    clients: int
    per_client: int
    queries: int
    errors: int
    wall_s: float
    queries_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    batches: int
    largest_batch: int
    error_samples: list[str] = field(default_factory=list)
    commits: int = 0  # commits an index writer made to the served index during the run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str, timeout: float = 10.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _start_server(
    index: Path, *, batching: bool, device: str, startup_timeout_s: float
) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "vela_search", "serve", "--index", str(index), "--port", str(port)]
    command += ["--device", device, "--max-batch", "32" if batching else "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise VelaError(f"the server did not start: {proc.stderr.read().strip()}")  # type: ignore[union-attr]
        try:
            _get_json(url + "/healthz", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise VelaError(f"the server did not answer within {startup_timeout_s:g} s")


def _stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _client(
    url: str, queries: list[str], k: int, latencies: list[float], errors: list[str], start: threading.Barrier
) -> None:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    start.wait()
    for text in queries:
        body = json.dumps({"query": text, "k": k})
        began = time.perf_counter()
        try:
            connection.request("POST", "/api/search", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                errors.append(f"{response.status}: {payload[:200]!r}")
                continue
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            connection.close()
            connection = http.client.HTTPConnection(host, int(port), timeout=120)
            continue
        latencies.append(time.perf_counter() - began)
    connection.close()


def _commit_every(root: Path, period_s: float, stop: threading.Event, made: list[int]) -> None:
    """Commit one new segment (a copy of an existing one's row, a random unit vector) every ``period_s``."""
    import numpy as np

    from vela_search.store import AudioIndex

    with AudioIndex.open(root) as index:
        fingerprint = dict(index.fingerprint)
        files = index.files().to_pylist()
        file_row = next(f for f in files if f["status"] == "indexed")
        segment = index.segment_rows([int(index.ids_with_path(file_row["path"])[0])])[0]
    rng = np.random.default_rng(0)
    with AudioIndex.open(root).writer(fingerprint=fingerprint) as writer:
        while True:  # the first commit at once (a short run still sees one), then every period
            vector = rng.standard_normal((1, writer.dim)).astype(np.float32)
            vector /= np.linalg.norm(vector)
            path = f"/vela-bench/commit-{len(made)}.wav"
            row = {k: v for k, v in segment.items() if k != "id"}
            writer.add(vector, [{**row, "path": path}])
            writer.put_files([{**file_row, "path": path}])
            writer.commit()
            made.append(1)
            if stop.wait(period_s):
                return


def _load_with_commits(
    url: str, root: Path, queries: list[str], clients: int, per_client: int, k: int
) -> LoadRun:
    """A loaded run while an index writer commits to the served index every second."""
    stop = threading.Event()
    made: list[int] = []
    committer = threading.Thread(target=_commit_every, args=(root, 1.0, stop, made), daemon=True)
    committer.start()
    try:
        run = _load(url, queries, clients, per_client, k, True)
    finally:
        stop.set()
        committer.join()
    run.commits = len(made)
    return run


def _load(url: str, queries: list[str], clients: int, per_client: int, k: int, batching: bool) -> LoadRun:
    before = _get_json(url + "/healthz")
    latencies: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)
    threads = [
        threading.Thread(
            target=_client,
            args=(url, queries[c * per_client : (c + 1) * per_client], k, latencies, errors, barrier),
            daemon=True,
        )
        for c in range(clients)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    after = _get_json(url + "/healthz")
    done = len(latencies)
    ms = [x * 1000 for x in latencies] or [float("nan")]
    return LoadRun(
        batching=batching,
        clients=clients,
        per_client=per_client,
        queries=clients * per_client,
        errors=len(errors),
        wall_s=wall,
        queries_per_s=done / wall if wall > 0 else 0.0,
        p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / len(ms),
        batches=after["batches"] - before["batches"],
        largest_batch=after["largest_batch"],
        error_samples=errors[:5],
    )


def _commit_runs(
    index: Path,
    texts: list[str],
    clients: int,
    queries: int,
    k: int,
    device: str,
    warmup: int,
    startup_timeout_s: float,
    progress: Any,
) -> tuple[list[LoadRun], float | None]:
    """The same load on a copy of the index without and with a commit every second (one server).

    Returns:
        Both runs and p99 with commits over p99 without.
    """
    with tempfile.TemporaryDirectory(prefix="vela-bench-serve-") as tmp:
        copy = Path(tmp) / index.name  # commits go to a copy: the benchmark leaves the index as it was
        shutil.copytree(index, copy, ignore=shutil.ignore_patterns("serve.json", "writer.lock"))
        if progress:
            progress("starting a server on a copy of the index (batching on)")
        proc, url = _start_server(copy, batching=True, device=device, startup_timeout_s=startup_timeout_s)
        try:
            _load(url, texts[:warmup], 1, warmup, k, True)
            if progress:
                progress(f"{clients} clients x {queries} queries, no commits")
            quiet = _load(url, texts[warmup:], clients, queries, k, True)
            if progress:
                progress(f"{clients} clients x {queries} queries, a commit every second")
            busy = _load_with_commits(url, copy, texts[warmup:], clients, queries, k)
        finally:
            _stop_server(proc)
    return [quiet, busy], (busy.p99_ms / quiet.p99_ms if quiet.p99_ms else None)


def run_serve_benchmark(
    index: str | os.PathLike[str],
    *,
    clients: int = 8,
    queries: int = 20,
    k: int = 10,
    device: str = "auto",
    warmup: int = 4,
    startup_timeout_s: float = 600.0,
    progress: Any = None,
    commits: bool = False,
) -> dict[str, Any]:
    """Measure a served index with batching on and off: one client alone, then ``clients`` at once.

    Args:
        index: the index directory (it must hold vectors; its recorded embedder is loaded).
        clients: concurrent clients of the loaded runs.
        queries: queries per client.
        k: hits per query.
        device: the server's ``--device``.
        warmup: queries sent before measuring (first-query costs are not latency under load).
        startup_timeout_s: how long a server may take to load its model.
        progress: called with a short description before each phase.
        commits: also measure ``clients`` at once on a copy of the index while a writer commits a new
            segment to it every second, against the same load without commits on the same server.

    Returns:
        The report: ``runs`` (a :class:`LoadRun` as a dict per setting and load), the command
        settings, ``speedup`` (batched over one-at-a-time queries/s under load),
        ``p99_with_commits_ratio`` (with ``commits``: p99 with commits over p99 without) and the date.
    """
    if clients < 1 or queries < 1:
        raise VelaError("--clients and --queries must be at least 1")
    index = Path(index).resolve()  # the server reads a bare name as one under indexes/
    texts = synthetic_queries(clients * queries + warmup, seed=0)
    runs: list[LoadRun] = []
    for batching in (True, False):
        label = "on" if batching else "off"
        if progress:
            progress(f"starting a server (batching {label})")
        proc, url = _start_server(
            index, batching=batching, device=device, startup_timeout_s=startup_timeout_s
        )
        try:
            _load(url, texts[:warmup], 1, warmup, k, batching)
            if progress:
                progress(f"batching {label}: 1 client x {queries} queries")
            runs.append(_load(url, texts[warmup:], 1, queries, k, batching))
            if progress:
                progress(f"batching {label}: {clients} clients x {queries} queries")
            runs.append(_load(url, texts[warmup:], clients, queries, k, batching))
        finally:
            _stop_server(proc)
    loaded = {run.batching: run for run in runs if run.clients == clients}
    speedup = (
        loaded[True].queries_per_s / loaded[False].queries_per_s if loaded[False].queries_per_s else None
    )
    with_commits = None
    if commits:
        extra, with_commits = _commit_runs(
            index, texts, clients, queries, k, device, warmup, startup_timeout_s, progress
        )
        runs += extra
    fingerprint: dict[str, Any] = {}
    try:
        fingerprint = json.loads((index / "manifest.json").read_text()).get("fingerprint", {})
    except (OSError, ValueError):
        pass
    return {
        "index": str(index),
        "model": fingerprint.get("model"),
        "device": _resolved_device(device),
        "clients": clients,
        "queries_per_client": queries,
        "k": k,
        "runs": [asdict(run) for run in runs],
        "speedup": speedup,
        "p99_with_commits_ratio": with_commits,
        "errors": sum(run.errors for run in runs),
        "date": time.strftime("%Y-%m-%d"),
    }


def _resolved_device(device: str) -> str:
    """The device the servers ran on (``auto`` resolved as ``vela-search serve`` resolves it)."""
    from vela_search.embedding.backbone import resolve_device

    return str(resolve_device(device))
