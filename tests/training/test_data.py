"""Reading, validating and splitting triplet files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vela_search.errors import TrainingDataError, VelaError
from vela_search.training.data import (
    Triplet,
    TripletData,
    file_digest,
    load_triplet_data,
    read_triplets,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "nli" / "triplets.csv"


def write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def make_rows(n: int) -> list[Triplet]:
    return [Triplet(f"anchor {i}", f"positive {i}", f"negative {i}") for i in range(n)]


def write_csv(path: Path, rows: list[Triplet]) -> Path:
    lines = ["sent0,sent1,hard_neg"] + [f"{t.anchor},{t.positive},{t.negative}" for t in rows]
    return write(path, "\n".join(lines) + "\n")


# -- CSV ---------------------------------------------------------------------------------------------


def test_csv_reads_rows_with_quoted_commas_and_newlines(tmp_path: Path) -> None:
    f = write(
        tmp_path / "t.csv",
        "sent0,sent1,hard_neg\n"
        '"In the distance, a dog barks.",A dog barks far away.,"In the distance, a car honks."\n'
        '"He said ""hi"", then left.","A man, greeting, leaves.","A man\nstays."\n'
        "plain,also plain,not plain\n",
    )
    rows, skipped = read_triplets(f)
    assert skipped == {}
    assert rows == [
        Triplet("In the distance, a dog barks.", "A dog barks far away.", "In the distance, a car honks."),
        Triplet('He said "hi", then left.', "A man, greeting, leaves.", "A man\nstays."),
        Triplet("plain", "also plain", "not plain"),
    ]


def test_csv_with_bom_crlf_and_extra_columns_in_any_order(tmp_path: Path) -> None:
    f = write(
        tmp_path / "t.csv",
        "id,hard_neg,sent0,label,sent1\r\n1,n1,a1,x,p1\r\n2,n2,a2,y,p2\r\n",
        bom=True,
    )
    rows, skipped = read_triplets(f)
    assert rows == [Triplet("a1", "p1", "n1"), Triplet("a2", "p2", "n2")]
    assert skipped == {}


def test_csv_header_names_are_whitespace_tolerant(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", " sent0 , sent1 ,hard_neg \na,p,n\n")
    assert read_triplets(f)[0] == [Triplet("a", "p", "n")]


def test_tsv_uses_tabs(tmp_path: Path) -> None:
    f = write(tmp_path / "t.tsv", "sent0\tsent1\thard_neg\na, with comma\tp\tn\n")
    assert read_triplets(f)[0] == [Triplet("a, with comma", "p", "n")]


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("sent0,sent1", "hard_neg"),
        ("anchor,positive,negative", "sent0, sent1, hard_neg"),
        ("sent1,hard_neg", "sent0"),
    ],
)
def test_csv_missing_column_is_an_error_naming_it(tmp_path: Path, header: str, missing: str) -> None:
    f = write(tmp_path / "t.csv", f"{header}\na,b,c\n")
    with pytest.raises(TrainingDataError) as err:
        read_triplets(f)
    assert f"column(s) {missing}" in str(err.value)
    assert str(f) in str(err.value)
    assert isinstance(err.value, VelaError)


def test_csv_malformed_rows_are_counted_per_reason_and_skipped(tmp_path: Path) -> None:
    f = write(
        tmp_path / "t.csv",
        "sent0,sent1,hard_neg\n"
        "a1,p1,n1\n"
        "a2,p2\n"  # missing field
        "a3\n"  # missing field
        "a4,,n4\n"  # empty text
        "a5,   ,n5\n"  # whitespace-only text
        "a6,p6,n6,unquoted extra\n"  # extra fields: shifted columns
        "\n"  # blank line: not a row
        "  a7  ,p7 , n7\n",  # surrounding whitespace is stripped
    )
    rows, skipped = read_triplets(f)
    assert rows == [Triplet("a1", "p1", "n1"), Triplet("a7", "p7", "n7")]
    assert skipped == {"empty_text": 2, "extra_fields": 1, "missing_field": 2}


def test_csv_header_only_is_an_error(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "sent0,sent1,hard_neg\n")
    with pytest.raises(TrainingDataError, match="no valid triplets"):
        read_triplets(f)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "")
    with pytest.raises(TrainingDataError, match="no valid triplets"):
        read_triplets(f)


def test_no_valid_rows_error_names_file_and_reasons(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.csv", "sent0,sent1,hard_neg\na,,c\nx,y\n")
    with pytest.raises(TrainingDataError) as err:
        read_triplets(f)
    msg = str(err.value)
    assert str(f) in msg
    assert "empty text: 1" in msg
    assert "missing field: 1" in msg


def test_missing_file_and_non_utf8_are_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="cannot read"):
        read_triplets(tmp_path / "nope.csv")
    f = tmp_path / "latin1.csv"
    f.write_bytes("sent0,sent1,hard_neg\ncaf\xe9,b,c\n".encode("latin-1"))
    with pytest.raises(TrainingDataError, match="not UTF-8"):
        read_triplets(f)


# -- JSONL -------------------------------------------------------------------------------------------


def test_jsonl_reads_rows_and_counts_malformed_ones(tmp_path: Path) -> None:
    lines = [
        json.dumps({"anchor": "a1", "positive": "p1, with comma", "negative": "n1", "extra": 1}),
        "{not json",
        json.dumps(["a", "p", "n"]),  # not an object
        json.dumps({"anchor": "a2", "positive": "p2"}),  # missing field
        json.dumps({"anchor": "a3", "positive": None, "negative": "n3"}),  # null counts as missing
        json.dumps({"anchor": "a4", "positive": " ", "negative": "n4"}),  # empty text
        json.dumps({"anchor": 5, "positive": "p5", "negative": "n5"}),  # not text
        "",
        json.dumps({"anchor": "a\u2028six", "positive": "p6", "negative": "n6"}, ensure_ascii=False),
    ]
    f = write(tmp_path / "t.jsonl", "\n".join(lines) + "\n", bom=True)
    rows, skipped = read_triplets(f)
    assert rows == [Triplet("a1", "p1, with comma", "n1"), Triplet("a\u2028six", "p6", "n6")]
    assert skipped == {"bad_json": 1, "empty_text": 1, "missing_field": 2, "not_an_object": 1, "not_text": 1}


def test_json_array_file(tmp_path: Path) -> None:
    items = [{"anchor": "a", "positive": "p", "negative": "n"}, {"anchor": "b"}]
    f = write(tmp_path / "t.json", json.dumps(items))
    assert read_triplets(f) == ([Triplet("a", "p", "n")], {"missing_field": 1})


def test_jsonl_no_valid_rows_is_an_error(tmp_path: Path) -> None:
    f = write(tmp_path / "t.jsonl", "{bad\n[1]\n")
    with pytest.raises(TrainingDataError) as err:
        read_triplets(f)
    assert str(f) in str(err.value)
    assert "bad json: 1" in str(err.value) and "not an object: 1" in str(err.value)


def test_unknown_extension_is_sniffed(tmp_path: Path) -> None:
    j = write(tmp_path / "t.txt", json.dumps({"anchor": "a", "positive": "p", "negative": "n"}) + "\n")
    c = write(tmp_path / "t.data", "sent0,sent1,hard_neg\na,p,n\n")
    assert read_triplets(j)[0] == read_triplets(c)[0] == [Triplet("a", "p", "n")]


# -- split -------------------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_complete(tmp_path: Path) -> None:
    rows = make_rows(200)
    f = write_csv(tmp_path / "t.csv", rows)
    a = load_triplet_data(f, eval_fraction=0.1, seed=3)
    b = load_triplet_data(f, eval_fraction=0.1, seed=3)
    c = load_triplet_data(f, eval_fraction=0.1, seed=4)
    assert isinstance(a, TripletData)
    assert (a.train, a.eval) == (b.train, b.eval)
    assert a.eval != c.eval
    assert len(a.eval) == 20 and len(a.train) == 180
    assert not set(a.train) & set(a.eval)
    assert sorted(a.train + a.eval, key=rows.index) == rows
    # Both sides keep file order.
    assert a.train == sorted(a.train, key=rows.index)
    assert a.eval == sorted(a.eval, key=rows.index)
    # The held-out set is spread over the file, not its tail.
    assert a.eval != rows[-20:]


def test_split_reports_digest_source_and_skips(tmp_path: Path) -> None:
    f = write(tmp_path / "t.csv", "sent0,sent1,hard_neg\na,p,n\nb,q,m\nc,,x\nd\n")
    data = load_triplet_data(f, eval_fraction=0.5)
    assert data.source == f
    assert data.digest == hashlib.sha256(f.read_bytes()).hexdigest() == file_digest(f)
    assert data.skipped == 2
    assert data.skipped_reasons == {"empty_text": 1, "missing_field": 1}
    assert "skipped 2" in data.summary()


@pytest.mark.parametrize(
    ("n", "fraction", "expected"), [(2, 0.01, 1), (3, 0.5, 2), (10, 0.05, 1), (1, 0.5, 0)]
)
def test_split_holds_out_at_least_one_and_keeps_one_for_training(
    tmp_path: Path, n: int, fraction: float, expected: int
) -> None:
    data = load_triplet_data(write_csv(tmp_path / "t.csv", make_rows(n)), eval_fraction=fraction)
    assert len(data.eval) == expected
    assert len(data.train) == n - expected >= 1


def test_split_zero_fraction_and_max_eval(tmp_path: Path) -> None:
    f = write_csv(tmp_path / "t.csv", make_rows(100))
    assert load_triplet_data(f, eval_fraction=0).eval == []
    assert len(load_triplet_data(f, eval_fraction=0.5, max_eval=7).eval) == 7
    assert load_triplet_data(f, eval_fraction=0.5, max_eval=0).eval == []


@pytest.mark.parametrize("fraction", [-0.1, 0.51, 1.0])
def test_split_rejects_bad_fraction(tmp_path: Path, fraction: float) -> None:
    f = write_csv(tmp_path / "t.csv", make_rows(10))
    with pytest.raises(TrainingDataError, match="eval fraction"):
        load_triplet_data(f, eval_fraction=fraction)


def test_split_keeps_rows_sharing_an_anchor_together(tmp_path: Path) -> None:
    rows = [Triplet(f"anchor {i // 3}", f"positive {i}", f"negative {i}") for i in range(300)]
    data = load_triplet_data(write_csv(tmp_path / "t.csv", rows), eval_fraction=0.1, seed=1)
    assert 30 <= len(data.eval) <= 32
    assert not {t.anchor for t in data.train} & {t.anchor for t in data.eval}


def test_split_does_not_let_a_large_group_swamp_the_held_out_set(tmp_path: Path) -> None:
    rows = [Triplet("big", f"p{i}", f"n{i}") for i in range(50)] + make_rows(50)
    data = load_triplet_data(write_csv(tmp_path / "t.csv", rows), eval_fraction=0.05, seed=0)
    assert 5 <= len(data.eval) <= 10
    assert all(t.anchor != "big" for t in data.eval)


def test_split_falls_back_to_rows_when_one_anchor_dominates(tmp_path: Path) -> None:
    rows = [Triplet("same anchor", f"p{i}", f"n{i}") for i in range(10)]
    data = load_triplet_data(write_csv(tmp_path / "t.csv", rows), eval_fraction=0.2)
    assert len(data.eval) == 2 and len(data.train) == 8


def test_split_of_a_row_does_not_depend_on_unrelated_rows(tmp_path: Path) -> None:
    rows = make_rows(400)
    small = load_triplet_data(write_csv(tmp_path / "a.csv", rows[:200]), eval_fraction=0.1, seed=0)
    large = load_triplet_data(write_csv(tmp_path / "b.csv", rows), eval_fraction=0.1, seed=0)
    # Rows ordered by a content hash: the held-out rows of the first half mostly stay held out.
    overlap = set(small.eval) & set(large.eval)
    assert len(overlap) >= len(small.eval) // 3


# -- the shipped file and imports --------------------------------------------------------------------


def test_shipped_triplets_load_cleanly() -> None:
    data = load_triplet_data(SHIPPED, eval_fraction=0.05, seed=0)
    assert data.skipped == 0 and data.skipped_reasons == {}
    assert 550 <= len(data.train) + len(data.eval) <= 700
    assert len(data.eval) >= 25
    assert SHIPPED.read_text(encoding="utf-8").splitlines()[0] == "sent0,sent1,hard_neg"
    for t in data.train + data.eval:
        assert len({t.anchor, t.positive, t.negative}) == 3


def test_shipped_triplets_match_the_generator() -> None:
    script = REPO / "scripts" / "make_nli_triplets.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_data_module_does_not_import_torch() -> None:
    code = (
        "import sys, vela_search; before = 'torch' in sys.modules\n"
        "import vela_search.training, vela_search.training.data\n"
        "assert before or 'torch' not in sys.modules, 'torch imported'\n"
        "from vela_search.training import read_triplets\n"
        "assert before or 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
