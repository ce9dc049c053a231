"""Telling field filters from path globs in ``--where`` values, and the grammar errors."""

from __future__ import annotations

import pytest

from vela_search.errors import QueryError
from vela_search.search.where import parse_where, split_where


@pytest.mark.parametrize("value", ["=x", " =x", "~rain", "library=ACME", "description~rain"])
def test_field_filters_and_filters_missing_their_field_are_not_globs(value: str) -> None:
    assert split_where([value]) == (None, (value,))


@pytest.mark.parametrize("value", ["~/sounds/*", "~me/sounds/*.wav", "*/birds/*", "birds/*.flac"])
def test_path_globs_stay_globs(value: str) -> None:
    assert split_where([value]) == (value, ())


@pytest.mark.parametrize("value", ["=x", "~rain"])
def test_a_filter_without_a_field_names_the_accepted_forms(value: str) -> None:
    with pytest.raises(QueryError, match=r"no field name.*FIELD=VALUE.*FIELD~WORDS.*glob"):
        parse_where(split_where([value])[1])
