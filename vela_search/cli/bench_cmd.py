"""``vela-search bench``: Clotho and AudioCaps retrieval; speed, pipeline and store benchmarks.

Importing this module registers those commands on the ``bench`` group, in the order ``bench --help`` lists
them: the retrieval benchmarks (:mod:`vela_search.cli.bench_retrieval_cmd`), then the speed, pipeline and
store benchmarks (:mod:`vela_search.cli.bench_speed_cmd`). The group, its shared options and the report
output are in :mod:`vela_search.cli.bench_common`; ``bench serve`` is in
:mod:`vela_search.cli.bench_serve_cmd`.
"""

from __future__ import annotations

# Imported for their side effect: each module registers its commands on `bench_app`.
from vela_search.cli import bench_retrieval_cmd, bench_speed_cmd  # noqa: F401
from vela_search.cli.bench_common import JSON_HELP, _emit, bench_app

__all__ = ["JSON_HELP", "_emit", "bench_app"]
