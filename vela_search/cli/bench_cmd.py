"""``vela-search bench``: Clotho and AudioCaps retrieval; speed, pipeline, store, search and serve benchmarks.

The group is assembled here from the command functions of its modules, in the order ``bench --help`` lists
them: the retrieval benchmarks (:mod:`vela_search.cli.bench_retrieval_cmd`), the speed, pipeline and store
benchmarks (:mod:`vela_search.cli.bench_speed_cmd`), ``bench search``
(:mod:`vela_search.cli.bench_search_cmd`), ``bench serve`` (:mod:`vela_search.cli.bench_serve_cmd`) and
``bench words`` (:mod:`vela_search.cli.bench_words_cmd`).
What they share (options, the report output) is in :mod:`vela_search.cli.bench_common`.
"""

from __future__ import annotations

import typer

from vela_search.cli.bench_retrieval_cmd import audiocaps, clotho
from vela_search.cli.bench_search_cmd import search_index
from vela_search.cli.bench_serve_cmd import serve_load
from vela_search.cli.bench_speed_cmd import pipeline, speed, store
from vela_search.cli.bench_words_cmd import words

__all__ = ["bench_app"]

bench_app = typer.Typer(
    help="Benchmarks: Clotho and AudioCaps retrieval (R@k, mAP@10, modality gap) and embedding/search speed.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
bench_app.command("clotho")(clotho)
bench_app.command("audiocaps")(audiocaps)
bench_app.command("speed")(speed)
bench_app.command("pipeline")(pipeline)
bench_app.command("store")(store)
bench_app.command("search")(search_index)
bench_app.command("serve")(serve_load)
bench_app.command("words")(words)
