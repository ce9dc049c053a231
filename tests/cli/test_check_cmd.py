"""What a user sees when index files are damaged, moved out of bounds or lost, when names or query text are
not UTF-8, and which model an index loads: the command line in process (its exit status, output and error
lines), and the installed `vela-search` script in a subprocess where the process matters (a limit on open
files)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_in_process import vela
from indexing.helpers import small_collection

from vela_search.store import AudioIndex
from vela_search.store.manifest import seal

CLI = str(Path(sys.executable).with_name("vela-search"))
TINY = ["--model", "tiny", "--demos", "none", "--device", "cpu"]


def run(*args: str, stdin: str | bytes | None = None, preexec=None) -> subprocess.CompletedProcess:  # noqa: ANN001
    """`vela-search *args`: in process, or as the installed script when `preexec` must run in the child."""
    if preexec is None:
        done = vela(*args, stdin=stdin)
        done.stderr = " ".join(done.stderr.split())
        return done
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    data = stdin.encode() if isinstance(stdin, str) else stdin
    done = subprocess.run(
        [CLI, *map(str, args)], input=data, capture_output=True, env=env, timeout=300, preexec_fn=preexec
    )
    done.stdout, done.stderr = (
        done.stdout.decode("utf-8", "replace"),
        " ".join(done.stderr.decode("utf-8", "replace").split()),
    )
    return done


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """An audio folder of 4 clips and a tiny-model index of it with one shard per clip."""
    base = tmp_path_factory.mktemp("faults")
    audio = base / "audio"
    small_collection(audio, 4)
    index = base / "idx"
    done = run("index", audio, "--index", index, *TINY, "--commit-every", "1")
    assert done.returncode == 0, done.stderr
    assert len(json.loads((index / "manifest.json").read_text())["shards"]) == 4
    return audio, index


@pytest.fixture
def copy(built, tmp_path) -> tuple[Path, Path]:
    audio, index = built
    shutil.copytree(index, tmp_path / "idx")
    return audio, tmp_path / "idx"


def _manifest(index: Path) -> dict:
    return json.loads((index / "manifest.json").read_text())


def test_flipped_vector_bytes_fail_every_command_in_one_line_and_check_repair_reembeds(copy):
    audio, index = copy
    shard = index / _manifest(index)["shards"][2]["index"]
    data = bytearray(shard.read_bytes())
    for i in range(len(data) - 40, len(data) - 20):
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert_one_line_error(run("query", "dog", "--index", index), "shards/000002.faiss is damaged", "--repair")
    assert_one_line_error(run("check", "--index", index), "shards/000002.faiss", "--repair")
    repaired = run("check", "--index", index, "--repair", "--json")
    assert repaired.returncode == 0, repaired.stderr
    report = json.loads(repaired.stdout)
    assert report["dropped_shards"] == [2] and len(report["files_to_reembed"]) == 1
    rerun = run("index", "--index", index, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["files_indexed"] == 1  # exactly the lost file, embedded again
    assert run("check", "--index", index).returncode == 0
    with AudioIndex.open(index) as opened:
        assert opened.num_vectors == 4


def test_a_garbage_files_table_is_one_line_in_info_query_and_index(copy):
    audio, index = copy
    (index / _manifest(index)["files"]).write_bytes(b"garbage" * 20)
    name = _manifest(index)["files"]
    for args in (("info",), ("query", "dog"), ("index", audio, *TINY)):
        assert_one_line_error(run(*args, "--index", index), f"{name} is damaged")


@pytest.mark.parametrize("bad", ["../other/shards/000000.faiss"])  # all forms: tests/store/test_integrity.py
def test_shard_paths_outside_the_index_folder_are_refused(copy, built, bad):
    _, index = copy
    shutil.copytree(built[1], index.parent / "other")
    data = _manifest(index)
    data["shards"][0]["index"] = bad
    (index / "manifest.json").write_text(json.dumps(seal(data)))
    for args in (("query", "dog"), ("info",), ("compact",)):
        assert_one_line_error(run(*args, "--index", index), "not a file of this index folder")


def test_a_deleted_manifest_is_refused_not_replaced(copy):
    audio, index = copy
    before = sorted(p.name for p in (index / "shards").iterdir())
    (index / "manifest.json").unlink()
    assert_one_line_error(run("index", audio, "--index", index, *TINY), "no manifest.json", "Refusing")
    assert sorted(p.name for p in (index / "shards").iterdir()) == before


def _fd_limit_64() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_info_and_query_with_more_shards_than_open_files_allow(copy):
    _, index = copy
    with AudioIndex.open(index) as opened:
        ids, vectors = opened.all_vectors()
        rows = opened.segment_rows(ids)
        fingerprint = opened.fingerprint
        with opened.writer(fingerprint=fingerprint, max_shard_size=1) as writer:
            for _ in range(30):  # 120 more one-row shards: 2 x 124 files > 64
                writer.add(vectors, [{k: v for k, v in r.items() if k != "id"} for r in rows])
            writer.commit()
    assert len(_manifest(index)["shards"]) == 124
    info = run("info", "--index", index, "--json", preexec=_fd_limit_64)
    assert info.returncode == 0, info.stderr
    assert len(json.loads(info.stdout)["shards"]) == 124
    query = run("query", "dog", "--index", index, "--json", preexec=_fd_limit_64)
    assert query.returncode == 0, query.stderr


def test_a_file_name_that_is_not_utf8_is_reported_and_the_run_goes_on(tiny_model_dir, tmp_path):
    audio = tmp_path / "audio"
    small_collection(audio, 2, prefix="b")
    bad = os.fsdecode(b"a\xff.wav")  # sorts first, before the good files
    shutil.copy(audio / "b000.wav", audio / bad)
    done = run("index", audio, "--index", tmp_path / "idx", *TINY, "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert report["files_indexed"] == 2
    assert [p["path"] for p in report["problems"]] == [str(audio / "a\\xff.wav")]
    assert "not valid UTF-8" in report["problems"][0]["reason"]


def test_query_text_that_is_not_utf8_is_a_clear_error(built):
    _, index = built
    argv = run("query", os.fsdecode(b"dog \xff"), "--index", index)
    assert_one_line_error(argv, "not valid UTF-8", "0xff")
    many = run("query", "--queries", "-", "--index", index, "--json", stdin=b"dog\nca\xfft\n")
    assert "Traceback" not in many.stderr
    lines = [json.loads(line) for line in many.stdout.splitlines()]
    assert lines[0]["hits"] and "not valid UTF-8" in lines[1]["error"]
    # Whose weights run: the model and adapter the index's record names, said before loading them.
    assert "loading model tiny, no adapter" in many.stderr


def test_embedder_record_is_readable_by_other_users(built):
    _, index = built
    mode = (index / "embedder.json").stat().st_mode & 0o777
    assert mode == (index / "manifest.json").stat().st_mode & 0o777
    assert mode & 0o044 == 0o044


def test_damaged_compressed_codes_are_reported_and_re_encoded(tmp_path):
    """An automatic index compressed by its memory budget (default thresholds): a broken codes file is named,
    `check --repair` re-encodes the codes from the exact vectors, and queries work again."""
    from store.compressed_helpers import DIM, FP, clustered, rows

    from vela_search.store.writer import IndexWriter

    idx = tmp_path / "idx"
    AudioIndex.create(idx, fingerprint=FP, dim=DIM, max_index_memory=200_000).close()
    with IndexWriter(idx, fingerprint=FP) as w:  # 5,000 x 128 fp16 = 1.3 MB > 200 kB: compressed
        w.add(clustered(5_000, seed=0), rows(0, 5_000, "a"))
        w.commit()
    data = json.loads((idx / "manifest.json").read_text())
    broken = data["shards"][0]["codes"]
    (idx / broken).write_bytes(b"garbage")
    found = run("check", "--index", idx)
    assert found.returncode == 1 and broken in found.stderr
    fixed = run("check", "--index", idx, "--repair")
    assert fixed.returncode == 0, fixed.stderr
    assert "re-encoded from the exact vectors" in " ".join(fixed.stdout.split())
    assert run("check", "--index", idx).returncode == 0
    repaired = json.loads((idx / "manifest.json").read_text())
    assert repaired["codes"]["trained"] != data["codes"]["trained"] and repaired["num_vectors"] == 5_000
    with AudioIndex.open(idx) as index:
        assert len(index.search(clustered(1, seed=5), 10)[0]) == 10
