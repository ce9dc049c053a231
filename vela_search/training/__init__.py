"""Text-only contrastive training of the embedder's LoRA adapter.

Submodules: `data` (triplet files and the held-out split), `loss` (InfoNCE and held-out metrics), `lora`
(attaching the adapter), `config` (settings and results), `state` (the run's state), `loop` (the step
loop), `evaluation` (held-out metrics), `checkpoint`, `record` (the training record and adapter output) and
`trainer` (the entry: ``train(TrainConfig(...))``).
Nothing heavy is imported here: `loss` needs torch, so names are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Triplet": "data",
    "TripletData": "data",
    "read_triplets": "data",
    "load_triplet_data": "data",
    "file_digest": "data",
    "info_nce_loss": "loss",
    "triplet_accuracy": "loss",
    "recall_at_1": "loss",
    "train": "trainer",
    "evaluate": "evaluation",
    "TrainConfig": "trainer",
    "TrainResult": "trainer",
    "TrainEvent": "trainer",
    "TrainingError": "trainer",
    "LoraSettings": "lora",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
