"""Benchmarks: dataset readers, optional downloads, retrieval metrics and runners.

Submodules are imported on use (``from vela_search.bench.metrics import retrieval_metrics``) so that
importing this package stays cheap.
"""

from __future__ import annotations
