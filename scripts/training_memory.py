"""Measure what one training forward keeps for backward behind the demo prefix (tiny model, CPU).

Counts the bytes of every distinct tensor autograd saves during ``encode(grad=True)`` of one contrastive
batch, and the same with the attention's per-chunk recomputation switched off (every chunk's score and
probability matrices kept, as before it existed). Usage:

    python scripts/training_memory.py [--triplets 64] [--demos default]
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.utils.checkpoint

from vela_search.embedding.embedder import EmbedItem, VelaEmbedder
from vela_search.training.lora import LoraSettings, attach_lora


def saved_bytes(emb: VelaEmbedder, items: list[EmbedItem]) -> int:
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.untyped_storage().data_ptr(), t.storage_offset())] = t.numel() * t.element_size()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        emb.encode(items, grad=True)
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=64)
    parser.add_argument("--demos", default="default")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    emb = VelaEmbedder.from_pretrained(
        "tiny", demos=args.demos, device="cpu", max_batch_items=3 * args.triplets
    )
    emb.avoid_no_grad = True
    torch.manual_seed(0)
    attach_lora(emb, LoraSettings())
    texts = [f"a dog barks while car number {i} passes by the house" for i in range(3 * args.triplets)]
    items = [EmbedItem("caption", text=t) for t in texts]
    rows = sum(len(ids) for ids in emb._text_token_ids(items))
    bounded = saved_bytes(emb, items)
    real_checkpoint = torch.utils.checkpoint.checkpoint
    torch.utils.checkpoint.checkpoint = lambda fn, *a, **k: fn(*a)  # keep every chunk, as before
    try:
        kept = saved_bytes(emb, items)
    finally:
        torch.utils.checkpoint.checkpoint = real_checkpoint
    print(f"prefix {emb.prefix_length} tokens, {len(items)} texts, {rows} text tokens")
    print(f"saved for backward, chunks recomputed: {bounded / 2**20:.1f} MiB")
    print(f"saved for backward, chunks kept:       {kept / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
