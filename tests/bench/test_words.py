"""bench words on a small synthetic library: every side answers, and the lexical index is measured."""

from __future__ import annotations

import pytest

from vela_search.bench.words import measure_words
from vela_search.errors import VelaError


def test_a_small_run_measures_every_side(tmp_path) -> None:
    run = measure_words(300, dim=8, queries=4, k=5, commit_every=100, workdir=tmp_path)
    assert [s.mode for s in run.sides] == ["vector", "words", "hybrid"]
    by_mode = {s.mode: s for s in run.sides}
    assert by_mode["vector"].mean_hits == 5 and by_mode["hybrid"].mean_hits == 5
    assert 0 < by_mode["words"].mean_hits <= 5
    assert run.lexical_bytes > 0 and run.vector_bytes > 0
    # The generation after a small commit gets its words index from the previous build and the delta.
    assert (run.lexical_update_files, run.lexical_update_mode) == (1, "delta")
    assert not list(tmp_path.iterdir())  # the scratch index is removed


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(VelaError, match="k \\(20\\) must not exceed"):
        measure_words(10, k=20)
