"""The project's default demonstration set, data/demos/default.jsonl."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parents[1] / "data" / "demos" / "default.jsonl"
CATEGORIES = ("animals", "vehicles", "weather", "water", "voices", "music", "tools", "alarms", "household")


@pytest.fixture(scope="module")
def demos() -> list[dict[str, str]]:
    rows = []
    for number, line in enumerate(DEMOS.read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"line {number} is blank"
        row = json.loads(line)
        assert isinstance(row, dict), f"line {number} is not an object"
        rows.append(row)
    return rows


def test_enough_demos(demos: list[dict[str, str]]) -> None:
    assert len(demos) >= 60


def test_each_demo_is_a_caption_and_one_lower_case_word(demos: list[dict[str, str]]) -> None:
    for number, row in enumerate(demos, start=1):
        assert set(row) <= {"text", "word", "category"}, f"line {number}: unexpected keys {set(row)}"
        text, word = row["text"], row["word"]
        assert isinstance(text, str) and len(text.split()) >= 4, f"line {number}: caption too short"
        assert text == text.strip() and text[0].isupper(), f"line {number}: caption not a sentence"
        assert isinstance(word, str) and word.isalpha() and word.islower(), (
            f"line {number}: bad word {word!r}"
        )


def test_captions_are_unique(demos: list[dict[str, str]]) -> None:
    texts = Counter(row["text"].lower() for row in demos)
    assert [t for t, n in texts.items() if n > 1] == []


def test_categories_are_covered_and_balanced(demos: list[dict[str, str]]) -> None:
    counts = Counter(row.get("category") for row in demos)
    assert set(counts) == set(CATEGORIES), counts
    assert min(counts.values()) >= 8, counts
    # No category dominates the end of the prompt: the last nine lines span at least six categories.
    assert len({row["category"] for row in demos[-9:]}) >= 6
