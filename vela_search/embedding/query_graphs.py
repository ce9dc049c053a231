"""CUDA graphs for single text queries: one replay instead of a thousand kernel launches.

A search embeds one short text at a time. Through a 7B model that is ~40 kernels per layer, ~1,300 in all,
each launched from Python: the host, not the GPU, then sets the latency (~30 ms measured on an H200, where
the GPU's own work for a 25-token query is a few ms). A CUDA graph records those launches once and replays
them with one call.

A graph replays fixed shapes on fixed memory, so queries are right-padded to a few bucket lengths and fed
through static buffers (:class:`StaticQuery`). Padding is exact: attention is causal, so pads after the last
real token cannot change its hidden state, and that hidden state is the embedding.

A bucket's graph is captured on its second use, so a one-shot ``vela-search query`` pays nothing for it and a
long-lived searcher pays once per bucket. Capture is checked against the eager forward on the same input;
any failure or disagreement switches graphs off for the embedder with a warning, and queries go on eagerly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Padded query lengths (tokens after the prefix). Longer texts take the eager path.
QUERY_BUCKETS = (16, 32, 64, 128, 256)
# A bucket's graph is captured when it is used for the this-many-th time.
CAPTURE_ON_USE = 2
# Graph replay and the eager forward run the same kernels on the same inputs; anything below this cosine
# means the captured graph does not compute what the model does.
CAPTURE_MIN_COSINE = 0.999

# (input ids (1, bucket), index of the last real token (1,)) -> unit vector (1, dim)
QueryForward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def query_bucket(length: int) -> int | None:
    """The padded length for a query of ``length`` tokens, or None if it is longer than every bucket."""
    for bucket in QUERY_BUCKETS:
        if length <= bucket:
            return bucket
    return None


class StaticQuery:
    """Fixed-size input buffers for one bucket, the forward that reads them, and its graph once captured."""

    def __init__(self, forward: QueryForward, bucket: int, pad_id: int, device: torch.device) -> None:
        self.forward = forward
        self.bucket = bucket
        self.pad_id = pad_id
        self.ids = torch.full((1, bucket), pad_id, dtype=torch.long, device=device)
        self.last = torch.zeros(1, dtype=torch.long, device=device)
        self.graph: Any = None  # torch.cuda.CUDAGraph once captured
        self.output: torch.Tensor | None = None  # the graph's output buffer
        self.uses = 0

    def load(self, token_ids: Sequence[int]) -> None:
        """Copy one query's tokens into the buffers, padding the rest of the bucket."""
        if not 0 < len(token_ids) <= self.bucket:
            raise ValueError(f"a query of {len(token_ids)} tokens does not fit bucket {self.bucket}")
        host = torch.full((1, self.bucket), self.pad_id, dtype=torch.long)
        host[0, : len(token_ids)] = torch.as_tensor(token_ids, dtype=torch.long)
        self.ids.copy_(host)
        self.last.fill_(len(token_ids) - 1)

    def run(self) -> torch.Tensor:
        """The loaded query's vector ``(1, dim)``: a graph replay when captured, else the eager forward."""
        if self.graph is None:
            return self.forward(self.ids, self.last)
        self.graph.replay()
        assert self.output is not None
        return self.output.clone()  # the next replay overwrites the buffer

    def capture(self) -> None:
        """Record the forward as a CUDA graph (the buffers must hold a valid query).

        Each bucket's graph gets its own memory pool: graphs sharing a pool are only safe when replayed in
        capture order, and queries arrive in any order.
        """
        # Lazy initialisation (cuBLAS handles, autotuning) must not happen inside the capture: warm up on a
        # side stream first, as PyTorch's CUDA graph guide prescribes.
        side = torch.cuda.Stream(device=self.ids.device)
        side.wait_stream(torch.cuda.current_stream(self.ids.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.forward(self.ids, self.last)
        torch.cuda.current_stream(self.ids.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: a background thread pinning host memory (batch preparation) must not void the capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = self.forward(self.ids, self.last)
        self.graph, self.output = graph, output


class QueryGraphs:
    """Per-bucket :class:`StaticQuery` runners for one demo prefix, captured as CUDA graphs when ``capture``.

    Without ``capture`` (CPU) queries still go through the padded static buffers, eagerly: the tests use
    this to check that padding leaves every vector unchanged.
    """

    def __init__(
        self, forward: QueryForward, *, pad_id: int, device: torch.device, capture: bool, owner: object
    ) -> None:
        self.forward = forward
        self.pad_id = pad_id
        self.device = device
        self.capture = capture
        self.owner = owner  # what the graphs were recorded against (the prefix keys/values)
        self.disabled_reason: str | None = None
        self._runners: dict[int, StaticQuery] = {}
        self._lock = threading.Lock()  # one set of static buffers: one query at a time

    @property
    def captured_buckets(self) -> list[int]:
        return sorted(b for b, r in self._runners.items() if r.graph is not None)

    def embed(self, token_ids: Sequence[int]) -> torch.Tensor | None:
        """The query's unit vector ``(1, dim)``, or None when it is longer than every bucket."""
        bucket = query_bucket(len(token_ids))
        if bucket is None:
            return None
        with self._lock:
            runner = self._runners.get(bucket)
            if runner is None:
                runner = self._runners[bucket] = StaticQuery(self.forward, bucket, self.pad_id, self.device)
            runner.load(token_ids)
            runner.uses += 1
            if self.capture and self.disabled_reason is None and runner.graph is None:
                if runner.uses >= CAPTURE_ON_USE:
                    return self._capture_and_run(runner)
            return runner.run()

    def _capture_and_run(self, runner: StaticQuery) -> torch.Tensor:
        expected = runner.run()
        try:
            runner.capture()
            replayed = runner.run()
            cosine = float(torch.nn.functional.cosine_similarity(replayed.float(), expected.float()).min())
            if not cosine >= CAPTURE_MIN_COSINE:
                raise RuntimeError(f"graph replay disagrees with the eager forward (cosine {cosine:.6f})")
        except Exception as exc:  # any capture failure: fall back to eager, never fail the query
            self.disable(f"{type(exc).__name__}: {exc}")
        return expected

    def disable(self, reason: str) -> None:
        """Stop using graphs (drops the captured ones); queries continue on the eager path."""
        self.disabled_reason = reason
        self._runners.clear()
        logger.warning("CUDA graphs for text queries are off, queries run eagerly: %s", reason)
