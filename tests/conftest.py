"""Shared fixtures: a clean, offline environment and the tiny checkpoint, built once per test session.

The environment is cleaned before anything imports the command line: Rich and Click read the terminal's
size and colour settings (``COLUMNS``, ``LINES``, ``NO_COLOR``, ...) once, when their consoles are made, and
the ``VELA_*`` settings of the user running the suite must not reach the commands under test. Subprocesses
started by tests inherit this environment.

The suite runs in parallel (``python -m pytest -n 2``, pytest-xdist): each worker process is limited to
one thread of torch, BLAS and FAISS (two workers on two cores, never four threads fighting over them); the
workers build the tiny checkpoint once between them, under a file lock; the tests of one module run in one
worker (``--dist loadscope``), so a module's fixtures (an index, a trained adapter) are built once and the
Ray tests share one Ray session (``ray_cluster``); servers started by tests take any free port.
"""

from __future__ import annotations

import os

# Never reach the network, whatever the test does.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Output of commands under test must not depend on the terminal or the settings of whoever runs the suite.
_INHERITED = (
    "COLUMNS",
    "LINES",
    "NO_COLOR",
    "FORCE_COLOR",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "JUPYTER_COLUMNS",
    "JUPYTER_LINES",
    "VELA_CACHE_DIR",
    "VELA_INDEX_DIR",
    "VELA_SERVE_TOKEN",
    "PYTHONWARNINGS",
)
for _name in _INHERITED:
    os.environ.pop(_name, None)
# A parallel run's workers (and the commands they start) share the machine's cores: one thread each, set
# before torch or FAISS is imported (both read it once).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """The tiny random-weight Qwen2-Audio checkpoint, built into a session cache directory.

    ``VELA_CACHE_DIR`` points there for the whole session, so ``--model tiny`` in CLI subprocesses started
    by tests finds the same checkpoint instead of building another.
    """
    from filelock import FileLock

    from vela_search.embedding.tiny import ensure_tiny_checkpoint, tiny_cache_dir

    cache = os.environ.get("VELA_TEST_CACHE_DIR")
    if not cache:
        # The workers of a parallel run share their session's temporary root: one cache, built once.
        shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
        root = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.mktemp("session")
        cache = str(root / "vela-cache")
    os.environ["VELA_CACHE_DIR"] = cache
    os.makedirs(cache, exist_ok=True)
    with FileLock(os.path.join(cache, ".tiny.lock")):  # the other workers wait, then find it built
        return ensure_tiny_checkpoint(tiny_cache_dir())


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model_dir):
    """A tiny-model embedder with a small text demo set (shared: do not mutate)."""
    from vela_search.embedding.demos import Demo, DemoSet
    from vela_search.embedding.embedder import VelaEmbedder

    demos = DemoSet(
        demos=tuple(Demo(word=w, text=f"A {w} can be heard close by") for w in ("dog", "rain", "engine")),
        source="test-demos",
    )
    return VelaEmbedder.from_pretrained("tiny", demos=demos, device="cpu")


@pytest.fixture(scope="session")
def tiny_embedder_default_demos(tiny_model_dir):
    """A tiny-model embedder with the shipped default demo set (shared: do not mutate)."""
    from vela_search.embedding.embedder import VelaEmbedder

    return VelaEmbedder.from_pretrained("tiny", demos="default", device="cpu")


@pytest.fixture(scope="session")
def ray_cluster(tiny_model_dir):
    """One local Ray for the session (started after the tiny checkpoint, so its workers find it).

    Starting Ray takes seconds and its processes stay until it is shut down: every Ray test shares this
    one. The Ray tests live in one module (tests/indexing/test_cluster.py), which a parallel run gives to
    one worker: keep them there, so that two Ray sessions never compete for the cores.
    """
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
