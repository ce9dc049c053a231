"""The step loop: seeded data order, one optimizer step at a time, evaluation mode and Ctrl-C handling."""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vela_search.training.config import TrainingError
from vela_search.training.evaluation import evaluate

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.training.config import TrainConfig
    from vela_search.training.data import Triplet
    from vela_search.training.state import RunState

# Texts per evaluation forward on a quantized model, where evaluation has to build a graph (see TrainLoop).
QUANTIZED_EVAL_CHUNK = 16


class TrainLoop:
    """One optimizer step at a time over a seeded, step-addressable data order."""

    def __init__(
        self,
        embedder: VelaEmbedder,
        peft_model: Any,
        optimizer: Any,
        scheduler: Any,
        params: list[Any],
        config: TrainConfig,
        rows: list[Triplet],
        state: RunState,
    ) -> None:
        self.embedder = embedder
        self.model = peft_model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.params = params
        self.config = config
        self.rows = rows
        self.state = state
        self.updating = False
        self._order_epoch = -1
        self._order: list[int] = []

    def batch(self, step: int, micro: int) -> list[Triplet]:
        """The triplets of micro-batch ``micro`` of (0-based) step ``step``: a function of seed and step."""
        epoch, within = divmod(step, self.state.steps_per_epoch)
        if epoch != self._order_epoch:
            self._order = list(range(len(self.rows)))
            random.Random(f"vela-train:{self.config.seed}:{epoch}").shuffle(self._order)
            self._order_epoch = epoch
        size = self.config.batch_size
        start = (within * self.config.grad_accum + micro) * size
        return [self.rows[i] for i in self._order[start : start + size]]

    def step(self) -> float:
        """Run one optimizer step; returns its loss (mean over the accumulated batches)."""
        import torch

        from vela_search.embedding.embedder import EmbedItem
        from vela_search.training.loss import info_nce_loss

        self._train_mode(True)
        accum = self.config.grad_accum
        total = 0.0
        for micro in range(accum):
            rows = self.batch(self.state.step, micro)
            texts = [t.anchor for t in rows] + [t.positive for t in rows] + [t.negative for t in rows]
            with torch.enable_grad():
                vectors = self.embedder.encode([EmbedItem("caption", text=t) for t in texts], grad=True)
                n = len(rows)
                loss = info_nce_loss(
                    vectors[:n], vectors[n : 2 * n], vectors[2 * n :], temperature=self.config.temperature
                )
                (loss / accum).backward()
            total += float(loss.detach())
        mean_loss = total / accum
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"the training loss became {mean_loss} at step {self.state.step + 1}; "
                "lower --lr or raise --temperature"
            )
        self.updating = True
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.loss_curve.append(mean_loss)
        self.state.lr_curve.append(lr)
        self.updating = False
        # The cached inference prefix is stale now; the next evaluation rebuilds it (in eval mode). Steps
        # compute their own prefix, with gradient, in `encode(grad=True)`.
        self.embedder.refresh_prefix()
        return mean_loss

    def refresh_prefix(self) -> None:
        """Recompute the cached prefix's keys/values from the current weights, as inference would.

        Done in eval mode (no LoRA dropout).
        """
        with self._inference():
            self.embedder.refresh_prefix(now=True)

    def evaluate(self, rows: list[Triplet]) -> dict[str, Any]:
        """Held-out metrics with the current weights."""
        quantized = self.embedder.backbone.quantization is not None
        chunk = QUANTIZED_EVAL_CHUNK if quantized else 3 * self.config.batch_size
        with self._inference():
            return evaluate(self.embedder, rows, chunk=chunk)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode; LoRA frozen so that forwards build no graph, except on a quantized model.

        A bitsandbytes 4-bit model breaks in training once it ran a forward in which nothing required grad
        (under ``no_grad`` or with every weight frozen alike), so there the graph is built and dropped, in
        small chunks.
        """
        from vela_search.training.lora import lora_frozen

        self._train_mode(False)
        if self.embedder.backbone.quantization is None:
            with lora_frozen(self.params):
                yield
        else:
            yield

    def _train_mode(self, on: bool) -> None:
        if on:
            self.model.train()
            # Frozen and unused by text training; eval mode keeps them deterministic if ever run.
            core = self.embedder.backbone.core
            core.audio_tower.eval()
            core.multi_modal_projector.eval()
        else:
            self.model.eval()


def make_scheduler(name: str, optimizer: Any, warmup: int, total: int) -> Any:
    """The learning-rate schedule ``name`` (``constant`` warms up too) over ``total`` steps."""
    from transformers import get_scheduler

    schedule = "constant_with_warmup" if name == "constant" else name
    return get_scheduler(schedule, optimizer, num_warmup_steps=min(warmup, total), num_training_steps=total)


class StopRequest:
    """Set by the first Ctrl-C (see :func:`graceful_sigint`): the run stops after the current step."""

    requested = False


@contextlib.contextmanager
def graceful_sigint(stop: StopRequest) -> Iterator[None]:
    """First Ctrl-C: finish the current step, then stop; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
