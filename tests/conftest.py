"""Shared fixtures: a clean, offline environment and the tiny checkpoint, built once per test session.

The environment is cleaned before anything imports the command line: Rich and Click read the terminal's
size and colour settings (``COLUMNS``, ``LINES``, ``NO_COLOR``, ...) once, when their consoles are made, and
the ``VELA_*`` settings of the user running the suite must not reach the commands under test. Subprocesses
started by tests inherit this environment.
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

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """The tiny random-weight Qwen2-Audio checkpoint, built into a session cache directory.

    ``VELA_CACHE_DIR`` points there for the whole session, so ``--model tiny`` in CLI subprocesses started
    by tests finds the same checkpoint instead of building another.
    """
    from vela_search.embedding.tiny import ensure_tiny_checkpoint, tiny_cache_dir

    cache = os.environ.get("VELA_TEST_CACHE_DIR") or str(tmp_path_factory.mktemp("vela-cache"))
    os.environ["VELA_CACHE_DIR"] = cache
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
