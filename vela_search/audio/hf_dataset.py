"""Audio rows of a Hugging Face dataset, read as encoded bytes and decoded by this package's own decoders.

Two layouts are read: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, and
Parquet (one file, or a folder of ``*.parquet``) with an audio column (``struct<bytes, path>``, what
``datasets`` writes for its ``Audio`` feature). The audio column is never decoded by ``datasets``
(``decode=False``): its bytes go to `decode_audio` like a file's, so torchcodec and the system's FFmpeg
do not matter.

Each row is named ``dataset:<folder or file>#<split>/<key>``, where the key is a key column's value if one is
given, else the audio's original file name when every row has a distinct one, else the row number. The
same row keeps its name from run to run, which is what lets an index treat rows like files (skipped when
unchanged, re-embedded when their bytes change, removed when gone).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vela_search.audio.decoders import AudioBytes
from vela_search.errors import VelaError

__all__ = ["DATASET_SCHEME", "DatasetListing", "DatasetRow", "is_dataset_uri", "list_dataset_audio"]

DATASET_SCHEME = "dataset:"
_BATCH_ROWS = 64
INSTALL_HINT = (
    "reading Hugging Face datasets needs the `datasets` package: pip install 'vela-search[datasets]'"
)


def is_dataset_uri(path: str) -> bool:
    """Whether an index path or root names a dataset row (or a dataset split) rather than a file."""
    return path.startswith(DATASET_SCHEME)


@dataclass(frozen=True)
class DatasetRow:
    """One row's audio: its stable name, size and digest, and how to read its bytes again."""

    uri: str
    size: int
    sha256: str
    load: Callable[[], AudioBytes] = field(repr=False, compare=False)


@dataclass
class DatasetListing:
    """The audio rows of one split of a dataset.

    Attributes:
        root: ``dataset:<path>#<split>``, the prefix of every row's uri.
        rows: rows with audio, in dataset order.
        problems: ``(uri, reason)`` of rows without audio bytes.
    """

    root: str
    rows: list[DatasetRow]
    problems: list[tuple[str, str]] = field(default_factory=list)


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise VelaError(INSTALL_HINT) from None
    return datasets


def _parquet_files(path: Path) -> list[str]:
    if path.is_file():
        return [str(path)]
    return sorted(str(p) for p in path.rglob("*.parquet") if not p.name.startswith("."))


def _raw_audio_feature(datasets: Any) -> dict:
    # The Audio feature's storage, read as plain values: no audio library is involved.
    return {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}


def _audio_columns_of_schema(schema: Any) -> list[str]:
    import pyarrow as pa

    found = []
    for f in schema:
        if pa.types.is_struct(f.type):
            names = {f.type.field(i).name: f.type.field(i).type for i in range(f.type.num_fields)}
            data = names.get("bytes")
            if data is not None and (pa.types.is_binary(data) or pa.types.is_large_binary(data)):
                found.append(f.name)
    return found


def _open(path: Path, split: str | None, audio_column: str | None) -> tuple[Any, str, str]:
    """The split as a `datasets.Dataset` whose audio column holds raw bytes; its split name; the column."""
    datasets = _datasets()
    is_saved = path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())
    if is_saved:
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            names = list(loaded.keys())
            if split is None and len(names) == 1:
                split = names[0]
            if split not in loaded:
                raise VelaError(
                    f"dataset {path} has the splits {', '.join(names)}: choose one with --split"
                    if split is None
                    else f"dataset {path} has no split {split!r} (it has {', '.join(names)})"
                )
            ds = loaded[split]
        else:
            ds = loaded
            split = split or str(ds.split or "train")
        audio = [n for n, f in ds.features.items() if isinstance(f, datasets.Audio)]
        column = audio_column or (audio[0] if audio else None)
        if column is None or column not in ds.features:
            raise VelaError(
                f"dataset {path} has no audio column{f' {audio_column!r}' if audio_column else ''}"
            )
        if isinstance(ds.features[column], datasets.Audio):
            ds = ds.cast_column(column, datasets.Audio(decode=False))
        return ds, split, column

    files = _parquet_files(path)
    if not files:
        raise VelaError(
            f"{path} is not a dataset: expected a folder written by save_to_disk, or Parquet files "
            "(an audiofolder is a folder of audio files: index it as a folder)"
        )
    import pyarrow.parquet as pq

    schema = pq.read_schema(files[0])
    candidates = _audio_columns_of_schema(schema)
    column = audio_column or (candidates[0] if candidates else None)
    if column is None or column not in candidates:
        raise VelaError(
            f"{path} has no audio column{f' {audio_column!r}' if audio_column else ''} "
            "(a struct with the audio file's bytes, as datasets writes its Audio feature)"
        )
    features = datasets.Features.from_arrow_schema(schema.remove_metadata())
    features[column] = _raw_audio_feature(datasets)
    split = split or "train"
    ds = datasets.load_dataset("parquet", data_files={split: files}, split=split, features=features)
    return ds, split, column


def _audio_batches(ds: Any, column: str) -> Any:
    """The audio column in Arrow batches of (bytes, path) lists: a few MB in memory at a time."""
    import pyarrow.compute as pc

    for table in ds.select_columns([column]).with_format("arrow").iter(batch_size=_BATCH_ROWS):
        audio = table.column(column)
        yield pc.struct_field(audio, "bytes").to_pylist(), pc.struct_field(audio, "path").to_pylist()


def _keys(ds: Any, column: str, key_column: str | None) -> list[str]:
    if key_column is not None:
        if key_column not in ds.column_names:
            raise VelaError(f"the dataset has no column {key_column!r} (it has {', '.join(ds.column_names)})")
        keys = [str(k) for k in ds[key_column]]
        if len(set(keys)) != len(keys):
            raise VelaError(f"the key column {key_column!r} has repeated values: rows would be confused")
        return keys
    import pyarrow.compute as pc

    audio = ds.select_columns([column]).with_format("arrow")[:].column(column)
    names = pc.struct_field(audio, "path").to_pylist()
    if all(names) and len(set(names)) == len(names):
        return [str(n) for n in names]
    width = len(str(max(len(ds) - 1, 0)))
    return [str(i).zfill(width) for i in range(len(ds))]


def list_dataset_audio(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    audio_column: str | None = None,
    key_column: str | None = None,
) -> DatasetListing:
    """List the audio rows of a dataset split with their stable names, sizes and digests.

    Args:
        path: a ``save_to_disk`` folder, or a Parquet file or folder of Parquet files.
        split: the split (default: the only one; ``train`` for Parquet).
        audio_column: the audio column (default: the first ``Audio`` column, or for Parquet the first
            struct column with a ``bytes`` field).
        key_column: a column of distinct values that identifies rows across versions of the dataset.

    Raises:
        VelaError: ``datasets`` is not installed, or the path, split or columns do not fit.
    """
    where = Path(path).expanduser().absolute()
    if not where.exists():
        raise VelaError(f"no such dataset: {where}")
    ds, split, column = _open(where, split, audio_column)
    root = f"{DATASET_SCHEME}{where}#{split}"
    keys = _keys(ds, column, key_column)
    lock = threading.Lock()  # row reads come from the decoding threads

    def loader(i: int, uri: str) -> Callable[[], AudioBytes]:
        def load() -> AudioBytes:
            with lock:
                audio = ds[i][column] or {}
            data = audio.get("bytes")
            if data is None and audio.get("path") and os.path.isfile(audio["path"]):
                with open(audio["path"], "rb") as fh:
                    data = fh.read()
            return AudioBytes(name=uri, data=data or b"")

        return load

    listing = DatasetListing(root=root, rows=[])
    i = 0
    for datas, paths in _audio_batches(ds, column):
        for data, original in zip(datas, paths, strict=True):
            uri = f"{root}/{keys[i]}"
            load = loader(i, uri)
            i += 1
            if data is None and not original:
                listing.problems.append((uri, "the row has no audio"))
                continue
            if data is None:
                data = load().data  # an audio file the row points to
            listing.rows.append(DatasetRow(uri, len(data), hashlib.sha256(data).hexdigest(), load))
    return listing
