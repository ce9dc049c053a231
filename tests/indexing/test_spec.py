"""Which embedder an index is reopened with: the record beside the manifest and the flags that override it."""

from __future__ import annotations

import json

from vela_search.indexing.spec import (
    SPEC_FILE,
    EmbedderSpec,
    QueryRoom,
    choose_spec,
    record_spec,
    recorded_room,
    recorded_spec,
)
from vela_search.store import AudioIndex

FP = {
    "model": "m@1",
    "weights": "w",
    "adapter": None,
    "prompt_version": "p",
    "demos": "d",
    "dim": 4,
    "quantization": None,
}


def _index(tmp_path, spec: EmbedderSpec):
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=4).close()
    record_spec(root, FP, spec)
    return root


def test_record_is_keyed_by_fingerprint_and_replaced_atomically(tmp_path):
    root = _index(tmp_path, EmbedderSpec(model="tiny", demos="none"))
    other = dict(FP, adapter="abc")
    record_spec(root, other, EmbedderSpec(model="tiny", adapter="/a", demos="none"))
    record_spec(root, FP, EmbedderSpec(model="tiny", demos="/d.jsonl"))
    assert recorded_spec(root, FP) == EmbedderSpec(model="tiny", demos="/d.jsonl")
    assert recorded_spec(root, other).adapter == "/a"
    assert recorded_spec(root, dict(FP, dim=8)) is None
    data = json.loads((root / SPEC_FILE).read_text())
    assert len(data["embedders"]) == 2  # one entry per fingerprint
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_the_query_room_is_recorded_per_fingerprint(tmp_path, tiny_embedder):
    root = _index(tmp_path, EmbedderSpec(model="tiny", demos="none"))
    assert recorded_room(root, FP) is None  # recorded without one (as indexes before it existed)
    room = QueryRoom.from_embedder(tiny_embedder)
    assert (room.prefix_tokens, room.max_positions) == (tiny_embedder.prefix_length, 8192)
    assert room.tokens == 8192 - tiny_embedder.prefix_length
    record_spec(root, FP, EmbedderSpec(model="tiny", demos="none"), room)
    assert recorded_room(root, FP) == room and recorded_room(root, dict(FP, dim=8)) is None
    data = json.loads((root / SPEC_FILE).read_text())
    data["embedders"][-1]["query_room"] = {"prefix_tokens": "many"}  # damaged: ignored, not fatal
    (root / SPEC_FILE).write_text(json.dumps(data))
    assert recorded_room(root, FP) is None


def test_flags_override_the_recorded_embedder(tmp_path):
    root = _index(
        tmp_path,
        EmbedderSpec(model="org/base", revision="abc123", adapter="/ad", demos="/d.jsonl", quantize="4bit"),
    )
    recorded, spec = choose_spec(root, model=None, adapter=None, demos=None, quantize=None)
    assert recorded is not None and spec == {
        "model": "org/base",
        "revision": "abc123",
        "adapter": "/ad",
        "demos": "/d.jsonl",
        "quantize": "4bit",
    }
    # --demos alone keeps the recorded model and adapter.
    _, spec = choose_spec(root, model=None, adapter=None, demos="none", quantize=None)
    assert (spec["model"], spec["adapter"], spec["demos"]) == ("org/base", "/ad", "none")
    # --adapter alone: model and demos come from the adapter's own record (None), not the index.
    _, spec = choose_spec(root, model=None, adapter="/new", demos=None, quantize="none")
    assert spec == {"model": None, "revision": None, "adapter": "/new", "demos": None, "quantize": "none"}
    # --model alone drops the recorded adapter, which belongs to the old base model.
    _, spec = choose_spec(root, model="tiny", adapter=None, demos=None, quantize=None)
    assert (spec["model"], spec["revision"], spec["adapter"], spec["demos"]) == (
        "tiny",
        None,
        None,
        "/d.jsonl",
    )


def test_a_new_index_uses_the_flags_as_given(tmp_path):
    recorded, spec = choose_spec(tmp_path / "none", model=None, adapter=None, demos=None, quantize=None)
    assert recorded is None and spec["model"] is None  # the library default model
