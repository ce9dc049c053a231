"""The Vela embedder: one model, one prompt family, one space for audio and every kind of text.

Each input is rendered as a chat turn behind the in-context demonstrations, and its embedding is the
final-layer hidden state of the last prompt token, L2-normalised. The demonstrations form a prefix that is
identical for every input: it is run once, its keys/values are kept (:class:`PrefixKV`), and every batch
attends to them in place (see :mod:`vela_search.embedding.attention`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vela_search.embedding import prompts
from vela_search.embedding.attention import PrefixKV
from vela_search.embedding.backbone import DEFAULT_MODEL, Backbone, load_backbone
from vela_search.embedding.batching import (
    DEFAULT_MAX_BATCH_ITEMS,
    MAX_CLIP_SECONDS,
    MIN_CLIP_SAMPLES,
    SAMPLE_RATE,
    PreparedBatch,
    audio_token_count,
    auto_batch_tokens,
    plan_batches,
)
from vela_search.embedding.demos import Demo, DemoSet
from vela_search.embedding.fingerprint import Fingerprint, dtype_name
from vela_search.embedding.inputs import audio_features, expand_audio_ids, input_embeddings
from vela_search.embedding.items import EmbedItem, checked_items
from vela_search.embedding.load_guard import forbid_model_load_if_asked
from vela_search.embedding.query_graphs import QueryGraphs
from vela_search.embedding.rendering import PromptTemplates, encode_prompt
from vela_search.embedding.shapes import SHAPE_NOTICE, SHAPE_PREFIX
from vela_search.embedding.tiny import TINY_NOTICE
from vela_search.errors import DemoFileError, ModelLoadError, TokenBudgetError

# The training record an adapter directory carries, read back so that `--adapter DIR` needs no other flags.
ADAPTER_RECORD = "vela_training.json"


class VelaEmbedder:
    """Embeds audio clips and texts into one unit-norm vector space.

    Example:
        >>> emb = VelaEmbedder.from_pretrained("tiny", demos="none")
        >>> emb.embed_text(["dog barking then a car passes"]).shape
        (1, 64)
    """

    def __init__(
        self,
        backbone: Backbone,
        demos: DemoSet,
        *,
        batch_tokens: int | None = None,
        max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
        demos_spec: str = "default",
        query_graphs: bool | None = None,
    ) -> None:
        if (batch_tokens is not None and batch_tokens < 1) or max_batch_items < 1:
            raise ValueError("batch_tokens and max_batch_items must be positive")
        self.backbone = backbone
        self.demos = demos
        self.demos_spec = demos_spec
        self.batch_tokens = batch_tokens if batch_tokens is not None else auto_batch_tokens(backbone)
        self.max_batch_items = max_batch_items
        # Single text queries through fixed-size buffers, replayed as CUDA graphs on a GPU
        # (:mod:`vela_search.embedding.query_graphs`). On by default on CUDA; on the CPU the padded path
        # runs eagerly and exists for the parity tests.
        self.query_graphs = backbone.device.type == "cuda" if query_graphs is None else query_graphs
        self._graphs: QueryGraphs | None = None
        self._graphs_disabled_reason: str | None = None
        self.prefix_computations = 0
        # Set by the trainer: a 4-bit model must never run under no_grad before it trains (bitsandbytes).
        self.avoid_no_grad = False
        self._prefix: PrefixKV | None = None
        self._prefix_ids: torch.Tensor | None = None
        self._prefix_features: tuple[torch.Tensor, torch.Tensor] | None = None
        self._templates = PromptTemplates.render(backbone.processor, demos)

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        adapter: str | os.PathLike[str] | None = None,
        demos: str | os.PathLike[str] | DemoSet | None = None,
        device: str = "auto",
        dtype: str = "auto",
        quantize: str | None = None,
        revision: str | None = None,
        batch_tokens: int | None = None,
        max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
        trainable_adapter: bool = False,
        query_graphs: bool | None = None,
    ) -> VelaEmbedder:
        """Load the backbone (and adapter) and prepare the prompts and demonstrations.

        Args:
            model: Hub id, local directory or ``tiny``. Defaults to the adapter's base model when the adapter
                records one, else ``Qwen/Qwen2-Audio-7B-Instruct``.
            adapter: A LoRA adapter directory (peft format), e.g. the output of ``vela-search train``.
            demos: ``default`` (the shipped text-only set), ``none``, a JSONL path or a DemoSet. Defaults to
                what the adapter was trained with, else ``default``.
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            dtype: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
            quantize: ``4bit``, ``8bit`` or None.
            revision: Hub revision for a Hub id.
            batch_tokens: Suffix tokens per batch (memory knob); None sizes it from free GPU memory on
                CUDA (:func:`auto_batch_tokens`) and uses :data:`DEFAULT_BATCH_TOKENS` on the CPU.
            max_batch_items: Items per batch at most.
            trainable_adapter: Keep the adapter's LoRA weights trainable.
            query_graphs: Replay single text queries as CUDA graphs (None: on when the device is CUDA).
        """
        forbid_model_load_if_asked(model if model is not None else f"of adapter {adapter}")
        record = read_adapter_record(adapter) if adapter is not None else {}
        if record.get("prompt_version") not in (None, prompts.PROMPT_VERSION):
            raise ModelLoadError(
                f"adapter {adapter} was trained with prompt version {record['prompt_version']!r} but this "
                f"vela-search uses {prompts.PROMPT_VERSION!r}; retrain the adapter"
            )
        model = model if model is not None else record.get("base_model", DEFAULT_MODEL)
        if demos is None:
            demos = record.get("demos", "default")
        demo_set = DemoSet.load(demos)
        backbone = load_backbone(
            model,
            revision=revision,
            adapter=adapter,
            device=device,
            dtype=dtype,
            quantize=quantize,
            trainable_adapter=trainable_adapter,
        )
        spec = demos if isinstance(demos, str) else getattr(demos, "source", str(demos))
        return cls(
            backbone,
            demo_set,
            batch_tokens=batch_tokens,
            max_batch_items=max_batch_items,
            demos_spec=str(spec),
            query_graphs=query_graphs,
        )

    # ------------------------------------------------------------------------------------- identity
    @property
    def dim(self) -> int:
        return self.backbone.hidden_size

    @property
    def is_tiny(self) -> bool:
        return self.backbone.is_tiny

    @property
    def notice(self) -> str | None:
        """A warning to show beside any result, or None (set for random-weight models: tiny, shape:)."""
        if self.is_tiny:
            return TINY_NOTICE
        if self.backbone.model_ref.startswith(SHAPE_PREFIX):
            return SHAPE_NOTICE
        return None

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(
            model=self.backbone.model_ref,
            weights=self.backbone.weights_digest,
            adapter=self.backbone.adapter_digest,
            prompt_version=prompts.PROMPT_VERSION,
            demos=self.demos.digest if len(self.demos) else "none",
            dim=self.dim,
            quantization=self.backbone.quantization,
            dtype=dtype_name(self.backbone.dtype),
        )

    @property
    def max_positions(self) -> int:
        return self.backbone.max_positions

    @property
    def prefix_length(self) -> int:
        """Tokens in the shared prefix (system turn and demonstrations)."""
        return int(self._prefix_input()[0].shape[1])

    @property
    def prefix_nbytes(self) -> int:
        """Bytes held by the cached prefix keys/values (0 before the first embedding)."""
        return self._prefix.nbytes if self._prefix is not None else 0

    # ------------------------------------------------------------------------------------ public API
    def embed_audio(self, clips: Sequence[np.ndarray | str | os.PathLike[str]]) -> np.ndarray:
        """Embed audio clips (16 kHz mono arrays or file paths, each at most 30 s).

        Returns:
            ``(n, dim)`` float32, unit-norm rows.
        """
        from vela_search.audio import load_waveform

        return self.embed_items([EmbedItem("audio", wave=load_waveform(c)) for c in clips])

    def embed_text(
        self, texts: Sequence[str], mode: str = "caption", *, instruction: str | None = None
    ) -> np.ndarray:
        """Embed texts as captions (default), long passages (``long``) or requests (``instruction``).

        Returns:
            ``(n, dim)`` float32, unit-norm rows.
        """
        prompts.check_mode(mode)
        if mode == "audio":
            raise ValueError("use embed_audio for audio")
        return self.embed_items([EmbedItem(mode, text=t, instruction=instruction) for t in texts])

    def embed_items(self, items: Sequence[EmbedItem]) -> np.ndarray:
        """Embed mixed items in token-sized batches; rows come back in input order."""
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.encode(items, grad=False)
        return vectors.detach().float().cpu().numpy()

    def token_count(self, item: EmbedItem) -> int:
        """Tokens the item occupies behind the prefix (what the budget check counts)."""
        return self._item_lengths([item], self._text_token_ids([item]))[0]

    def check_budget(self, items: Sequence[EmbedItem]) -> None:
        """Raise :class:`TokenBudgetError` if any item does not fit behind the prefix."""
        lengths = self._item_lengths(items, self._text_token_ids(items))
        for item, length in zip(items, lengths, strict=True):
            self._check_fits(item, length)

    # ------------------------------------------------------------------------------- the fast path
    def encode(self, items: Sequence[EmbedItem], *, grad: bool = False) -> torch.Tensor:
        """Embed items as a ``(n, dim)`` tensor on the model's device (graph kept when ``grad``).

        With ``grad`` the shared prefix is recomputed in the same graph (once per call), so the gradient is
        that of a plain forward of prefix + item for every item; without, the cached prefix is used.

        Host work for the next batch (tokenising, log-mel features, pinned copies) runs in a background
        thread while the current batch is on the model. A single short text (a search query) goes through
        the fixed-size query path instead (:mod:`vela_search.embedding.query_graphs`).
        """
        items = checked_items(items)
        token_ids = self._text_token_ids(items)
        lengths = self._item_lengths(items, token_ids)
        for item, length in zip(items, lengths, strict=True):
            self._check_fits(item, length)
        prefix = self._prefix_kv(grad=grad)
        if self._takes_query_path(items, grad):
            with torch.no_grad():
                vector = self._query_graphs(prefix).embed(token_ids[0])  # type: ignore[arg-type]
            if vector is not None:
                return vector
        out: list[torch.Tensor | None] = [None] * len(items)
        audio_idx = [i for i, it in enumerate(items) if it.is_audio]
        text_idx = [i for i, it in enumerate(items) if not it.is_audio]
        plan = [
            [group[b] for b in batch]
            for group in (audio_idx, text_idx)
            for batch in plan_batches([lengths[i] for i in group], self.batch_tokens, self.max_batch_items)
        ]
        for members, batch in self._prepared_batches(items, token_ids, plan):
            with self._grad_context(grad):
                vectors = self._forward_prepared(batch, prefix)
            for row, index in enumerate(members):
                out[index] = vectors[row]
        return torch.stack(out)  # type: ignore[arg-type]

    def _prepared_batches(
        self, items: Sequence[EmbedItem], token_ids: list[list[int] | None], plan: list[list[int]]
    ) -> Iterator[tuple[list[int], PreparedBatch]]:
        """Yield each planned batch's members and inputs, preparing the next one in a background thread."""

        def prepare(members: list[int]) -> PreparedBatch:
            return self._prepare_batch([items[i] for i in members], [token_ids[i] for i in members])

        if len(plan) == 1:  # nothing to overlap with: skip the thread's start-up (a query's latency)
            yield plan[0], prepare(plan[0])
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vela-prepare") as pool:
            pending = pool.submit(prepare, plan[0]) if plan else None
            for number, members in enumerate(plan):
                batch = pending.result()  # type: ignore[union-attr]
                if number + 1 < len(plan):
                    pending = pool.submit(prepare, plan[number + 1])
                yield members, batch

    def _takes_query_path(self, items: Sequence[EmbedItem], grad: bool) -> bool:
        return (
            self.query_graphs
            and len(items) == 1
            and not items[0].is_audio
            and not (grad or self.avoid_no_grad)
            # Dropout (training mode) must not be frozen into a graph.
            and not self.backbone.model.training
        )

    def _query_graphs(self, prefix: PrefixKV) -> QueryGraphs:
        """The query runners for the current prefix (graphs read its tensors: a new prefix needs new ones)."""
        if self._graphs is not None and self._graphs.owner is not prefix:
            self._drop_query_graphs()
        if self._graphs is None:
            device = self.backbone.device

            def forward(ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
                embeds = self.backbone.core.get_input_embeddings()(ids)
                return self._language_forward(embeds, last, prefix)

            self._graphs = QueryGraphs(
                forward, pad_id=self._pad_id, device=device, capture=device.type == "cuda", owner=prefix
            )
            # A capture that failed once would fail again.
            self._graphs.disabled_reason = self._graphs_disabled_reason
        return self._graphs

    def _drop_query_graphs(self) -> None:
        if self._graphs is not None:
            self._graphs_disabled_reason = self._graphs.disabled_reason
            self._graphs = None

    @property
    def query_graph_state(self) -> dict[str, Any]:
        """Whether text queries use CUDA graphs, which buckets are captured, and why graphs are off."""
        graphs = self._graphs
        return {
            "enabled": bool(self.query_graphs) and self.backbone.device.type == "cuda",
            "captured_buckets": graphs.captured_buckets if graphs is not None else [],
            "disabled_reason": graphs.disabled_reason if graphs is not None else self._graphs_disabled_reason,
        }

    def refresh_prefix(self, *, now: bool = False) -> None:
        """Drop the prefix keys/values after the weights changed (e.g. in training); ``now`` rebuilds them
        at once instead of on the next embedding."""
        self._prefix = None
        self._drop_query_graphs()  # captured graphs keep the old prefix's tensors alive
        if now:
            self._prefix_kv()

    def _prepare_batch(
        self, items: Sequence[EmbedItem], token_ids: Sequence[list[int] | None]
    ) -> PreparedBatch:
        """Host-side work for one batch: prompts, tokens, log-mel features (pinned when on CUDA).

        Text items come with their token ids (tokenised once, for the budget check); audio items are
        tokenised here by the processor, which expands each clip's ``<|AUDIO|>`` token.
        """
        processor = self.backbone.processor
        if not items[0].is_audio:
            batch = self._padded_text_batch([ids for ids in token_ids if ids is not None])
            return batch.pinned() if self.backbone.device.type == "cuda" else batch
        suffixes = [self._suffix_text(item) for item in items]
        enc = processor(
            text=suffixes,
            audio=[item.wave for item in items],
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            padding=True,
            # The log-mel STFT over the padded 30 s window costs ~30 ms per clip on one CPU thread,
            # more than the GPU spends on the clip: compute it on the model's GPU when there is one.
            device=str(self.backbone.device) if self.backbone.device.type == "cuda" else "cpu",
        )
        features = (enc["input_features"], enc["feature_attention_mask"].sum(-1))
        batch = PreparedBatch(enc["input_ids"], enc["attention_mask"], features)
        return batch.pinned() if self.backbone.device.type == "cuda" else batch

    def _padded_text_batch(self, token_ids: Sequence[list[int]]) -> PreparedBatch:
        """Right-padded ids and mask for texts (pads after each text: causal attention never sees them)."""
        width = max(len(ids) for ids in token_ids)
        input_ids = torch.full((len(token_ids), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(token_ids), width), dtype=torch.long)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        return PreparedBatch(input_ids, mask, None)

    @property
    def _pad_id(self) -> int:
        tokenizer = self.backbone.processor.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return int(pad)

    def _forward_prepared(self, batch: PreparedBatch, prefix: PrefixKV) -> torch.Tensor:
        device = self.backbone.device
        input_ids = batch.input_ids.to(device, non_blocking=True)
        mask = batch.attention_mask.to(device, non_blocking=True)
        features = None
        if batch.features is not None:
            features = (batch.features[0].to(device, non_blocking=True), batch.features[1].to(device))
        embeds = self._input_embeddings(input_ids, features)
        return self._language_forward(embeds, mask.sum(dim=1) - 1, prefix)

    def _language_forward(self, embeds: torch.Tensor, last: torch.Tensor, prefix: PrefixKV) -> torch.Tensor:
        """Run right-padded input embeddings behind the prefix; the unit-norm hidden state at ``last``."""
        positions = prefix.length + torch.arange(embeds.shape[1], device=embeds.device)
        hidden = self.backbone.language_model(
            inputs_embeds=embeds,
            position_ids=positions.unsqueeze(0).expand(embeds.shape[0], -1),
            use_cache=False,
            vela_prefix=prefix,
        ).last_hidden_state
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
        return torch.nn.functional.normalize(pooled, dim=-1)

    def _input_embeddings(
        self, input_ids: torch.Tensor, features: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        """Token embeddings with each clip's audio-token run replaced by its encoded audio."""
        return input_embeddings(self.backbone, input_ids, features)

    # ----------------------------------------------------------------------------------- the prefix
    def _prefix_input(self) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        if self._prefix_ids is None:
            waves = [self._demo_wave(d) for d in self.demos.demos if d.is_audio]
            ids = self._prefix_token_ids()
            if waves:
                self._prefix_features = self._audio_features(waves)
                ids = self._expand_audio(ids, self._prefix_features[1])
            self._prefix_ids = torch.tensor([ids], dtype=torch.long)
        return self._prefix_ids, self._prefix_features

    def _prefix_token_ids(self) -> list[int]:
        """The prefix's ids, one ``<|AUDIO|>`` per audio demo (demo texts and words tokenized as text)."""
        templates = self._templates
        return encode_prompt(self.backbone.processor.tokenizer, templates.prefix, templates.prefix_user_spans)

    def _audio_features(
        self, waves: Sequence[np.ndarray], device: str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features padded to 30 s and each clip's valid frames, as Qwen2-Audio's processor does."""
        return audio_features(self.backbone.processor, waves, device)

    def _expand_audio(self, ids: list[int], frames: torch.Tensor) -> list[int]:
        """Each ``<|AUDIO|>`` id repeated once per audio token of its clip (as the processor does)."""
        return expand_audio_ids(ids, frames, self.backbone.model.config.audio_token_index)

    def full_prompt_ids(self, item: EmbedItem) -> list[int]:
        """The whole prompt's ids (prefix + item, one ``<|AUDIO|>`` per clip) for a plain forward."""
        return self._prefix_token_ids() + self._suffix_token_ids(item)

    def _suffix_token_ids(self, item: EmbedItem) -> list[int]:
        suffix, span = self._templates.suffix_and_span(
            item.mode, text=item.text, instruction=item.instruction
        )
        return encode_prompt(self.backbone.processor.tokenizer, suffix, [span] if span else [])

    def _prefix_kv(self, *, grad: bool = False) -> PrefixKV:
        """The prefix's keys/values: cached for inference; with ``grad``, computed afresh with autograd.

        Training needs the gradient of a plain forward of prefix + item. The prefix's keys/values depend on
        the LoRA weights of the k/v projections (and, through earlier layers, on all of them), so they are
        computed once per :meth:`encode` call inside the graph, and every item's attention backpropagates
        into them: one prefix forward per call, not one per item.
        """
        if grad:
            return self._compute_prefix(grad=True)
        if self._prefix is None:
            self._prefix = self._compute_prefix(grad=False)
        return self._prefix

    def _compute_prefix(self, *, grad: bool) -> PrefixKV:
        bb = self.backbone
        ids, features = self._prefix_input()
        if ids.shape[1] >= self.max_positions:
            raise TokenBudgetError(
                f"the demonstrations alone take {ids.shape[1]} tokens, the model's limit is "
                f"{self.max_positions} positions; use fewer or shorter demos (--demos FILE or --demos none)"
            )
        capture = PrefixKV(keep_graph=grad)
        with self._grad_context(grad):
            ids = ids.to(bb.device)
            bb.language_model(
                inputs_embeds=self._input_embeddings(ids, features),
                position_ids=torch.arange(ids.shape[1], device=bb.device).unsqueeze(0),
                use_cache=False,
                vela_capture=capture,
            )
        self.prefix_computations += 1
        return capture

    def _demo_wave(self, demo: Demo) -> np.ndarray:
        from vela_search.audio import load_waveform

        path = demo.audio
        wave = load_waveform(demo.wave if demo.wave is not None else path)
        if len(wave) > MAX_CLIP_SECONDS * SAMPLE_RATE:
            raise DemoFileError(
                f"audio demo {path} is {len(wave) / SAMPLE_RATE:.1f} s; demos must be at most 30 s"
            )
        return wave

    # ---------------------------------------------------------------------------------- rendering
    def _suffix_text(self, item: EmbedItem) -> str:
        return self._templates.suffix(item.mode, text=item.text, instruction=item.instruction)

    def full_prompt(self, item: EmbedItem) -> str:
        """The whole rendered prompt (prefix + item) as one string, as a plain forward would see it."""
        return self._templates.prefix + self._suffix_text(item)

    # ---------------------------------------------------------------------------------- checks
    def _text_token_ids(self, items: Sequence[EmbedItem]) -> list[list[int] | None]:
        """Each text item's suffix token ids (None for audio items), tokenised in one call."""
        out: list[list[int] | None] = [None] * len(items)
        for i, item in enumerate(items):
            if not item.is_audio:
                out[i] = self._suffix_token_ids(item)
        return out

    def _item_lengths(self, items: Sequence[EmbedItem], token_ids: Sequence[list[int] | None]) -> list[int]:
        lengths = [len(ids) if ids is not None else 0 for ids in token_ids]
        audio_idx = [i for i, it in enumerate(items) if it.is_audio]
        if audio_idx:
            tokenizer = self.backbone.processor.tokenizer
            base = len(tokenizer(self._templates.suffixes["audio"])["input_ids"]) - 1
            for i in audio_idx:
                lengths[i] = base + audio_token_count(max(len(items[i].wave), MIN_CLIP_SAMPLES))  # type: ignore[arg-type]
        return lengths

    def _check_fits(self, item: EmbedItem, length: int) -> None:
        prefix = self.prefix_length
        if prefix + length > self.max_positions:
            fix = "use a shorter clip window (--window)" if item.is_audio else "shorten the text"
            raise TokenBudgetError(
                f"input does not fit the model: prefix {prefix} tokens + item {length} tokens = "
                f"{prefix + length} > limit {self.max_positions} positions; {fix}, or use fewer demos "
                "(--demos FILE with fewer lines, or --demos none)"
            )

    @contextlib.contextmanager
    def _grad_context(self, grad: bool) -> Iterator[None]:
        if grad or self.avoid_no_grad:
            with torch.enable_grad():
                yield
        else:
            with torch.no_grad():
                yield

    # --------------------------------------------------------------------------- the naive baseline
    def embed_naive(self, items: Sequence[EmbedItem]) -> np.ndarray:
        """The plain Vela loop: demos + item re-run in one full forward per item, stock audio encoder.

        This is what the shared prefix replaces; it is kept as the reference for parity checks and as the
        baseline of ``vela-search bench speed``.
        """
        bb = self.backbone
        rows = []
        demo_waves = [self._demo_wave(d) for d in self.demos.demos if d.is_audio]
        for item in checked_items(items):
            waves = demo_waves + ([item.wave] if item.is_audio else [])
            ids = self.full_prompt_ids(item)
            with torch.no_grad():
                extra = {}
                if waves:
                    features, frames = self._audio_features(waves)
                    ids = self._expand_audio(ids, frames)
                    extra = {
                        "input_features": features.to(bb.device, bb.dtype),
                        "feature_attention_mask": (
                            torch.arange(features.shape[-1])[None, :] < frames[:, None]
                        )
                        .long()
                        .to(bb.device),
                    }
                input_ids = torch.tensor([ids], device=bb.device)
                # The mask only matters to the stock model's check for a one-token clip (no run of audio
                # tokens looks to it like an unexpanded prompt, which needs a mask).
                hidden = bb.core(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False, **extra
                ).last_hidden_state
            rows.append(torch.nn.functional.normalize(hidden[0, -1].float(), dim=-1).cpu().numpy())
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)


def read_adapter_record(adapter: str | os.PathLike[str]) -> dict[str, Any]:
    """The training record saved beside an adapter (empty when there is none)."""
    path = Path(adapter) / ADAPTER_RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
