"""`QueryRequest`: the one description of a query that the CLI and the service share (no model needed)."""

from __future__ import annotations

import math

import pytest

from vela_search.errors import QueryError
from vela_search.search import Hit, QueryRequest, hit_record, hits_from_records


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (QueryRequest(), "the query is empty"),
        (QueryRequest(text="  "), "the query is empty"),
        (QueryRequest(text="dog", mode="poem"), "unknown query mode"),
        (QueryRequest(text="dog", mode="instruction"), "needs a non-empty instruction"),
        (QueryRequest(text="dog", instruction="find:"), "instruction mode only"),
        (QueryRequest(text="dog", start_s=1.0), "not of a text"),
        (QueryRequest(text="dog", like="/a.wav"), "not both"),
        (QueryRequest(like="/a.wav", like_segment=3), "give one query by example"),
        (QueryRequest(like_segment=3, start_s=1.0), "searched whole"),
        (QueryRequest(like="/a.wav", instruction="x"), "instruction mode only"),
        (QueryRequest(text="dog", k=0), "from 1 to 1000"),
        (QueryRequest(text="dog", min_score=math.nan), "NaN"),
        (QueryRequest(text="dog", path_glob=" "), "path filter"),
        (QueryRequest(text="dog", min_duration=5, max_duration=1), "above the maximum"),
        (QueryRequest(text="dog", max_duration=-1), "maximum duration"),
    ],
)
def test_bad_requests_are_refused_without_a_model(request_, needle):
    with pytest.raises(QueryError, match=needle):
        request_.validate()


def test_kinds_and_what_they_need():
    assert QueryRequest(text="dog").kind == "text" and QueryRequest(text="dog").needs_model
    assert QueryRequest(audio="/a.wav").kind == "audio" and QueryRequest(audio="/a.wav").needs_model
    assert QueryRequest(like="/a.wav").kind == "like" and not QueryRequest(like="/a.wav").needs_model
    assert not QueryRequest(like_segment=0).needs_model
    with pytest.raises(QueryError, match="nothing to embed"):
        QueryRequest(like_segment=0).embed_item()
    options = QueryRequest(text="x", k=3, group=False, path_glob="a/*", max_duration=2).search_options()
    assert options == {
        "k": 3,
        "min_score": None,
        "path_glob": "a/*",
        "duration": (None, 2),
        "group": False,
        "nprobe": None,
        "refine": None,
        "exact": False,
    }
    assert QueryRequest(text="x", min_score=0.1).filtered and not QueryRequest(text="x").filtered


def test_hit_records_round_trip():
    hit = Hit(
        path="/data/a/b.wav",
        start_s=5.0,
        end_s=15.0,
        score=0.8125,
        duration_s=40.0,
        segment_id=7,
        rank=1,
        paths=("/data/a/b.wav", "/data/c/b.wav"),
        root="/data",
    )
    record = hit_record(hit, "a notice")
    assert list(record) == [*hit.to_dict(), "notice"]
    assert record["display_path"] == "a/b.wav" and record["notice"] == "a notice"
    (back,) = hits_from_records([record])
    assert back == hit and back.display_path == hit.display_path


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("nprobe", 0, "nprobe"),
        ("nprobe", 10**6, "nprobe"),
        ("refine", 0, "refine"),
        ("refine", True, "refine"),
        ("exact", "yes", "exact"),
    ],
)
def test_accuracy_knobs_are_bounded(field, value, needle):
    with pytest.raises(QueryError, match=needle):
        QueryRequest(text="x", **{field: value}).validate()
    assert QueryRequest(text="x", nprobe=8, refine=200, exact=True).validate().options.search.refine == 200
