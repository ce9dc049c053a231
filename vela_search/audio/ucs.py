"""File names as words, with the Universal Category System (UCS) recognised where a name follows it.

A UCS name is ``CatID[-UserCategory]_FXName_CreatorID_SourceID[_UserData]``, e.g.
``DOORWood_Creak Slow_ACME_Take3.wav``: the CatID joins an upper-case category code and a capitalised
subcategory (``DOOR`` + ``Wood``), the CreatorID names the recordist or vendor and the SourceID the
project or source. Commercial libraries put their name in the CreatorID, so ``library`` is the CreatorID
(``--where library=ACME`` finds the example) and the SourceID is kept as ``source``. Any
other name is split into its words only (underscores, dashes, dots, spaces, camelCase and digits).
"""

from __future__ import annotations

import re
from pathlib import PurePath

__all__ = ["name_fields", "split_words"]

# A CatID: 2-8 upper-case letters, then a capitalised subcategory ("AMBForst", "DOORWood", "SCIComputer").
_CATID = re.compile(r"^(?P<category>[A-Z]{2,8})(?P<subcategory>[A-Z][a-z][A-Za-z0-9]*)$")
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\W\d_]+", re.UNICODE)


def split_words(text: str) -> list[str]:
    """Words of a name: ``"DOORWood_Creak Slow_Take3"`` -> ``DOOR Wood Creak Slow Take 3`` (a list)."""
    return _WORD.findall(text)


def name_fields(path: str) -> dict[str, str]:
    """The words of a file's name, and its UCS fields when the name follows UCS.

    Args:
        path: the file's path (only its last part counts; a dataset uri's key likewise).

    Returns:
        ``name``: the name's words joined by spaces; for a UCS name also ``category``, ``subcategory``,
        ``user_category`` (when given), ``fx_name``, ``library`` (the CreatorID), ``source`` (the
        SourceID) and ``user_data``, those the name has.
    """
    stem = PurePath(path.rsplit("/", 1)[-1]).stem
    fields = {"name": " ".join(split_words(stem))}
    parts = stem.split("_")
    if len(parts) < 3:
        return fields
    catid, _, user_category = parts[0].partition("-")
    match = _CATID.match(catid)
    if match is None:
        return fields
    fields["category"] = match["category"]
    fields["subcategory"] = match["subcategory"]
    if user_category:
        fields["user_category"] = user_category
    fields["fx_name"] = parts[1].strip()
    fields["library"] = parts[2].strip()
    if len(parts) > 3:
        fields["source"] = parts[3].strip()
    if len(parts) > 4:
        fields["user_data"] = " ".join(p.strip() for p in parts[4:])
    return {k: v for k, v in fields.items() if v}
