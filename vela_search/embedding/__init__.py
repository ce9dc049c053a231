"""The Vela embedder: prompts, demonstrations, backbone loading, the shared prefix, fingerprint.

Heavy modules (torch, transformers) load on first attribute access.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "VelaEmbedder": "vela_search.embedding.embedder",
    "EmbedItem": "vela_search.embedding.embedder",
    "DemoSet": "vela_search.embedding.demos",
    "Demo": "vela_search.embedding.demos",
    "Fingerprint": "vela_search.embedding.fingerprint",
    "load_backbone": "vela_search.embedding.backbone",
    "DEFAULT_MODEL": "vela_search.embedding.backbone",
    "PROMPT_VERSION": "vela_search.embedding.prompts",
    "TINY_NOTICE": "vela_search.embedding.tiny",
    "AudioJudge": "vela_search.embedding.judge",
    "JudgeReference": "vela_search.embedding.judge",
    "JudgePrompt": "vela_search.embedding.judge_prompt",
    "DEFAULT_JUDGE_PROMPT": "vela_search.embedding.judge_prompt",
    "load_judge_prompt": "vela_search.embedding.judge_prompt",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vela_search.embedding' has no attribute {name!r}")
