"""``vela-search index``, ``info`` and ``compact``: build, describe and tidy an index."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from vela_search.cli.common import (
    ADAPTER_HELP,
    DEVICE_HELP,
    DTYPE_CHOICES,
    MODEL_HELP,
    check_device,
    console,
    err_console,
    load_embedder,
    one_of,
    parse_memory_option,
    print_json,
    resolve_index,
)
from vela_search.cli.plain_progress import PlainProgress, use_plain_progress
from vela_search.errors import RunInterrupted, VelaError

if TYPE_CHECKING:
    from vela_search.audio.hf_dataset import DatasetListing
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.indexing import IndexOptions, IndexProgress, IndexReport
    from vela_search.indexing.cluster import RaySettings
    from vela_search.indexing.watch import WatchSettings

INDEX_HELP = "Index name (under $VELA_INDEX_DIR or ./indexes) or directory."
# Failed files listed in the summary; the rest are counted (all of them are in --json).
_MAX_LISTED = 50
_PHASES = {
    "scan": "checking files",
    "hash": "hashing new files",
    "relink": "relinking moved files",
    "load": "loading the model",
    "embed": "embedding",
    "commit": "committing",
    "promote": "replacing the old generation",
    "compact": "merging small shards",
    "done": "done",
}


def index_command(
    paths: list[Path] | None = typer.Argument(
        None,
        help="Audio files and folders (searched recursively). Omit to rescan the folders the index records.",
        show_default=False,
    ),
    index: str | None = typer.Option(None, "--index", "-i", help=INDEX_HELP),
    model: str | None = typer.Option(
        None,
        "--model",
        help=MODEL_HELP + " Default: the index's model; Qwen/Qwen2-Audio-7B-Instruct for a new one.",
    ),
    adapter: Path | None = typer.Option(None, "--adapter", help=ADAPTER_HELP + " Default: the index's."),
    demos: str | None = typer.Option(
        None, "--demos", help="In-context demos: 'default', 'none' or a JSONL file. Default: the index's."
    ),
    window: float | None = typer.Option(
        None,
        "--window",
        help="Window length in seconds for files longer than 30 s. Default: the index's; 10 for a new one.",
    ),
    hop: float | None = typer.Option(
        None, "--hop", help="Hop between windows in seconds. Default: the index's; 5 for a new one."
    ),
    batch_tokens: int | None = typer.Option(
        None,
        "--batch-tokens",
        min=1,
        help="Item tokens per embedding batch (memory knob; default: automatic).",
    ),
    device: str = typer.Option("auto", "--device", callback=check_device, help=DEVICE_HELP),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        callback=one_of(*DTYPE_CHOICES),
        help="auto (bf16 on CUDA, fp32 on the CPU), bf16, fp16 or fp32.",
    ),
    quantize: str | None = typer.Option(
        None,
        "--quantize",
        callback=one_of("4bit", "8bit", "none"),
        help="4bit, 8bit or none (default: the index's; none for a new one).",
    ),
    faiss_factory: str | None = typer.Option(
        None,
        "--faiss-factory",
        help="'auto' (default for a new index: exact SQfp16 while it fits and is fast, then compressed "
        "codes with exact re-ranking; also turns an existing SQfp16 index automatic) or a FAISS "
        "index-factory string for a new index or a rebuild.",
    ),
    max_index_memory: str | None = typer.Option(
        None,
        "--max-index-memory",
        metavar="SIZE",
        help="Memory budget of an automatic index's search index, e.g. 512M or 4G (default 4G).",
    ),
    commit_every: int = typer.Option(
        256,
        "--commit-every",
        min=1,
        help="Commit after at least this many new segments (crash-safe checkpoints).",
    ),
    decode_workers: int | None = typer.Option(
        None, "--decode-workers", min=1, help="Audio decoding threads (default: a quarter of the cores, 1-4)."
    ),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Remove files that are gone from disk."),
    strict: bool = typer.Option(False, "--strict", help="Exit with status 1 when any file failed."),
    rebuild: bool = typer.Option(
        False,
        "--rebuild",
        help="Re-embed everything with the given embedder; the old index serves until done.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Only say what the run would do (new, moved, gone, unchanged files; segments and hours to "
        "embed): files are scanned and hashed, no model is loaded and the index is not changed.",
    ),
    ray: bool = typer.Option(
        False,
        "--ray",
        help="Decode and embed on Ray: a local Ray on this machine, or the cluster of --ray-address. "
        'Needs pip install "vela-search[ray]".',
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        metavar="ADDRESS",
        help="Join a running Ray cluster: 'auto' (this node's), 'ray://head:10001' or 'head:6379' "
        "(implies --ray).",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Embedding actors with --ray (default: one per GPU of the cluster, or a small CPU pool).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        help="Index the audio rows of a Hugging Face dataset instead of files: a save_to_disk folder or "
        "Parquet with an audio column (needs `pip install 'vela-search[datasets]'`).",
    ),
    split: str | None = typer.Option(None, "--split", help="The dataset split (default: its only one)."),
    audio_column: str | None = typer.Option(
        None, "--audio-column", help="The dataset's audio column (default: the first one)."
    ),
    key_column: str | None = typer.Option(
        None,
        "--key-column",
        help="A dataset column naming rows across versions (default: audio file names, else row numbers).",
    ),
    watch: bool = typer.Option(
        False,
        "--watch",
        help="After the first pass, keep following the index's folders: new and changed files are added, "
        "removed ones leave, moved ones are relinked; a missing folder pauses (nothing removed). "
        "Ctrl-C stops.",
    ),
    settle: float = typer.Option(
        2.0,
        "--settle",
        metavar="SECONDS",
        help="With --watch: add a file once its size and mtime stayed the same this long (being copied).",
    ),
    max_wait: float = typer.Option(
        30.0,
        "--max-wait",
        metavar="SECONDS",
        help="With --watch: under changes that never pause, run at the latest this long after the first.",
    ),
    watch_poll: bool = typer.Option(
        False,
        "--watch-poll",
        help="With --watch: look for changes by polling (network drives, where change notifications miss).",
    ),
    poll_interval: float = typer.Option(
        1.0, "--poll-interval", metavar="SECONDS", help="With --watch-poll: the polling period."
    ),
) -> None:
    """Index audio files: incremental, resumable after a crash, broken files recorded and skipped."""
    from vela_search.indexing import IndexOptions

    options = IndexOptions(
        window_s=window,
        hop_s=hop,
        commit_every=commit_every,
        prune=prune,
        rebuild=rebuild,
        factory=faiss_factory,
        max_index_memory=parse_memory_option(max_index_memory),
    )
    options.validate()
    root = resolve_index(index)
    given = [str(p) for p in paths or []]
    listing = _dataset_listing(
        dataset, split, audio_column, key_column, given, rebuild, dry_run, ray, ray_address
    )
    if listing is None and not given and not _exists(root):
        raise VelaError(f"give audio files or folders to index (no index at {root} yet)")
    if watch:
        from vela_search.cli.watch_view import check_watch_flags, watch_settings

        check_watch_flags(dry_run=dry_run, ray=ray or ray_address is not None, dataset=listing is not None)
        following = watch_settings(settle, max_wait, watch_poll, poll_interval)
    if dry_run:
        if rebuild:
            raise VelaError("a rebuild embeds every file again: --dry-run previews incremental runs only")
        _dry_run(given, root, window=window, hop=hop, prune=prune, json_output=json_output)
        return
    ray_settings = _ray_settings(ray, ray_address, workers, dtype)
    _check_index_state(root, given)
    if watch and given:
        _check_watch_paths(root, given)
    flags = _ModelFlags(model, adapter, demos, quantize, device, dtype, batch_tokens)
    loader = _loader(root, flags, rebuild=rebuild)  # refuses a mismatching embedder before anything loads
    if watch and _exists(root) and not rebuild:
        # The watcher's own first pass: a missing folder is paused there, not pruned as a rescan would.
        _watch(root, given, loader, options, following, decode_workers)
        return
    report, loaded = _run(given, root, loader, options, ray_settings, decode_workers, listing)
    _report(report, loaded, root, given, json_output=json_output, strict=strict and not watch)
    if watch:
        _watch(root, given, loaded or loader, replace(options, rebuild=False), following, decode_workers)


def _watch(
    root: Path,
    given: list[str],
    embedder: VelaEmbedder | Callable[[], VelaEmbedder],
    options: IndexOptions,
    settings: WatchSettings,
    decode_workers: int | None,
) -> None:
    from vela_search.cli.watch_view import watch_folders

    watch_folders(root, given, embedder, options, settings, decode_workers=decode_workers)


def _exists(root: Path) -> bool:
    from vela_search.store import AudioIndex

    return AudioIndex.exists(root)


def _dataset_listing(
    dataset: Path | None,
    split: str | None,
    audio_column: str | None,
    key_column: str | None,
    paths: list[str],
    rebuild: bool,
    dry_run: bool,
    ray: bool,
    ray_address: str | None,
) -> DatasetListing | None:
    """The rows of ``--dataset`` (None without it), after refusing the flags that do not go with it."""
    if dataset is None:
        if split or audio_column or key_column:
            raise VelaError("--split, --audio-column and --key-column go with --dataset")
        return None
    if paths or rebuild or dry_run or ray or ray_address is not None:
        raise VelaError("--dataset is indexed on its own: without paths, --rebuild, --dry-run or --ray")
    from vela_search.audio.hf_dataset import list_dataset_audio

    with err_console.status(f"reading {dataset} …", spinner="dots"):
        return list_dataset_audio(dataset, split=split, audio_column=audio_column, key_column=key_column)


def _ray_settings(ray: bool, address: str | None, workers: int | None, dtype: str) -> RaySettings | None:
    """The Ray settings of ``--ray``/``--ray-address`` (None: embed in this process), checked now."""
    if not ray and address is None:
        if workers is not None:
            raise VelaError("--workers sets the Ray actor pool: use it with --ray")
        return None
    from vela_search.indexing.cluster import RaySettings, import_ray

    settings = RaySettings(address=address, workers=workers, dtype=dtype)
    settings.validate()
    import_ray()  # a missing extra is reported before the (slow) model load
    return settings


def _check_index_state(root: Path, paths: list[str]) -> None:
    """A locked index, or a new one that could not be created, is refused before any slow work."""
    from vela_search.store import AudioIndex

    if AudioIndex.exists(root):
        _check_not_locked(root)
    else:
        AudioIndex.check_creatable(root)  # a lost manifest's data is refused before the model load too
        if paths:
            # A new index from paths that hold no audio (an empty folder, a typo) would be an empty index:
            # refuse before the model loads. An existing index runs, so that vanished files are pruned.
            _require_audio(paths)


@dataclass(frozen=True)
class _ModelFlags:
    """The model flags of ``index`` as given (None: the index's)."""

    model: str | None
    adapter: Path | None
    demos: str | None
    quantize: str | None
    device: str
    dtype: str
    batch_tokens: int | None


def _loader(root: Path, flags: _ModelFlags, *, rebuild: bool) -> Callable[[], VelaEmbedder]:
    """A function that loads the run's embedder, called only when the run has something to embed.

    What the flags ask for is compared with the index's recorded embedder first (no rebuild), so that a
    mismatch is refused before the scan and before any load.
    """
    from vela_search.indexing import choose_spec
    from vela_search.indexing.preload import check_before_load, requested_dtype
    from vela_search.indexing.spec import describe_load

    _, spec = choose_spec(
        root,
        model=flags.model,
        adapter=str(flags.adapter) if flags.adapter is not None else None,
        demos=flags.demos,
        quantize=flags.quantize,
        rebuild=rebuild,
    )
    if not rebuild:
        check_before_load(root, spec, dtype=requested_dtype(flags.dtype, flags.device), writing=True)

    def load() -> VelaEmbedder:
        err_console.print(f"loading {escape(describe_load(spec))}", highlight=False)
        embedder = _load(spec, device=flags.device, dtype=flags.dtype, batch_tokens=flags.batch_tokens)
        if embedder.notice:
            err_console.print(f"[yellow]note:[/] {embedder.notice}")
        return embedder

    return load


def _run(
    paths: list[str],
    root: Path,
    loader: Callable[[], VelaEmbedder],
    options: IndexOptions,
    ray: RaySettings | None,
    decode_workers: int | None,
    listing: DatasetListing | None,
) -> tuple[IndexReport, VelaEmbedder | None]:
    """Run the index with a progress display; returns the report and the embedder if one was loaded."""
    from vela_search.indexing import index_paths

    loaded: list[VelaEmbedder] = []

    def load() -> VelaEmbedder:
        loaded.append(loader())
        return loaded[0]

    try:
        with progress_view() as view:
            options = replace(options, progress=view.update)
            if ray is not None:
                from vela_search.indexing.cluster import index_paths_on_ray

                report = index_paths_on_ray(paths, root, load, options, ray=ray)
            else:
                report = index_paths(
                    paths, root, load, options, decode_workers=decode_workers, dataset=listing
                )
    except KeyboardInterrupt:
        # Every whole file that landed is committed; a rerun skips them.
        raise RunInterrupted(
            "interrupted: the files indexed so far are saved; run the same command again to continue"
        ) from None
    return report, (loaded[0] if loaded else None)


def _report(
    report: IndexReport,
    embedder: VelaEmbedder | None,
    root: Path,
    paths: list[str],
    *,
    json_output: bool,
    strict: bool,
) -> None:
    """The summary (or JSON), the no-audio warning, and the --strict exit status."""
    if json_output:
        print_json({**report.to_dict(), **_embedder_facts(root, report, embedder)})
    else:
        _print_summary(report)
    if report.files_seen == 0:
        err_console.print(f"[yellow]warning:[/] {escape(_no_audio_message(paths, report.problems))}")
    if strict and (report.failures or report.problems or report.files_seen == 0):
        err_console.print(
            f"[bold red]error:[/] {len(report.failures)} file(s) failed, {len(report.problems)} path(s) "
            f"could not be searched and {report.files_seen} audio file(s) were found (--strict)",
            highlight=False,
        )
        raise typer.Exit(1)


def _embedder_facts(root: Path, report: IndexReport, embedder: VelaEmbedder | None) -> dict[str, Any]:
    """``notice`` and ``embedder_spec`` of the JSON report: of the loaded embedder, else of the record."""
    from vela_search.indexing import EmbedderSpec, recorded_spec
    from vela_search.search.index_embedder import notice_for_model

    if embedder is not None:
        return {"notice": embedder.notice, "embedder_spec": EmbedderSpec.from_embedder(embedder).to_dict()}
    spec = recorded_spec(root, report.fingerprint)
    return {
        "notice": notice_for_model(str(report.fingerprint.get("model") or "")),
        "embedder_spec": spec.to_dict() if spec is not None else None,
    }


def info_command(
    index: str | None = typer.Option(None, "--index", "-i", help=INDEX_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the description as JSON."),
) -> None:
    """Describe an index: format, generation, embedder, shards and files by status."""
    from vela_search.cli.activity_view import activity_lines
    from vela_search.indexing import index_info
    from vela_search.search.lexical import words_summary
    from vela_search.store import AudioIndex
    from vela_search.store.activity import read_activity

    root = resolve_index(index)
    info = index_info(root)
    with AudioIndex.open(root, vectors=False) as snapshot:
        info["words"] = words_summary(snapshot)
    activity = read_activity(root)
    info["activity"] = activity.to_json()
    if json_output:
        print_json(info)
        return
    _print_info(info)
    for what, text in activity_lines(activity):
        console.print(f"{what}: {escape(text)}", highlight=False)
    fields = ", ".join(f"{name} {count}" for name, count in info["words"].items())
    console.print(f"words (files carrying each field): {escape(fields) or '-'}", highlight=False)


def compact_command(
    index: str | None = typer.Option(None, "--index", "-i", help=INDEX_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Merge small shards (and drop deleted rows); search results do not change."""
    from vela_search.indexing import compact_index

    with err_console.status("merging shards …", spinner="dots"):
        result = compact_index(resolve_index(index))
    if json_output:
        print_json(result.to_dict())
        return
    if result.changed:
        console.print(
            f"{result.shards_before} shards → {result.shards_after}; deleted rows {result.deleted_before} → "
            f"{result.deleted_after}; generation {result.generation}",
            highlight=False,
        )
    else:
        shards = f"{result.shards_after} shard" + ("" if result.shards_after == 1 else "s")
        console.print(
            f"nothing to merge: the index is already compact ({shards}, {result.deleted_after} deleted rows)",
            highlight=False,
        )


# ---------------------------------------------------------------------------------------------- helpers
def _check_watch_paths(root: Path, paths: list[str]) -> None:
    """Refuse to watch a path that does not exist unless the index holds files from it: a recorded
    folder that is missing is an unmounted drive (the watcher pauses it), a never-seen one is a typo."""
    import os

    from vela_search.errors import VelaError
    from vela_search.indexing.plan import recorded_roots
    from vela_search.store import AudioIndex

    missing = [p for p in paths if not os.path.exists(os.path.expanduser(p))]
    if not missing:
        return
    known: list[str] = []
    if AudioIndex.exists(root):
        with AudioIndex.open(root, shards=False) as index:
            known = recorded_roots(index.files(), folders_only=True)
    for path in missing:
        full = os.path.abspath(os.path.expanduser(path))
        if not any(full == r or full.startswith(r.rstrip(os.sep) + os.sep) for r in known):
            raise VelaError(f"{path} does not exist, and the index holds no files from it: nothing to watch")


def _require_audio(paths: list[str]) -> None:
    """Refuse a new index when ``paths`` hold no audio file (names only: nothing is read or hashed)."""
    from vela_search.audio.discovery import discover_audio_files
    from vela_search.errors import VelaError

    found = discover_audio_files(paths)
    if not found.files:
        problems = [(str(path), reason) for path, reason in found.problems]
        raise VelaError(_no_audio_message(paths, problems) + "; no index was created")


def _no_audio_message(paths: list[Path] | list[str] | None, problems: list[tuple[str, str]]) -> str:
    where = ", ".join(str(p) for p in paths) if paths else "the folders the index records"
    reasons = "; ".join(f"{path}: {reason}" for path, reason in problems[:3])
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return f"no audio files found in {where}" + (f" ({reasons}{more})" if reasons else "")


def _check_not_locked(root: Path) -> None:
    from vela_search.store.lock import WriterLock

    lock = WriterLock(root)
    lock.acquire()  # raises IndexLockedError naming the writing process
    lock.release()


def _load(spec: dict[str, Any], *, device: str, dtype: str, batch_tokens: int | None) -> VelaEmbedder:
    if spec["model"] is None and spec["adapter"] is None:
        from vela_search.embedding.backbone import DEFAULT_MODEL

        spec = dict(spec, model=DEFAULT_MODEL)
    # A Hub model stays pinned to the revision the index was built from.
    return load_embedder(
        model=spec["model"],
        adapter=Path(spec["adapter"]) if spec["adapter"] else None,
        demos=spec["demos"],
        device=device,
        dtype=dtype,
        quantize=spec["quantize"],
        batch_tokens=batch_tokens,
        revision=spec.get("revision"),
        quiet=True,  # under the progress display: the caller says what loads
    )


class _CountColumn(ProgressColumn):
    """``done/total unit`` once the total is known; until then only what is done (never a made-up total)."""

    def render(self, task: Any) -> Text:
        unit = task.fields.get("unit", "")
        if task.total is None:
            return Text(f"{task.completed:.0f} {unit}" if task.completed else "", style="progress.download")
        return Text(f"{task.completed:.0f}/{task.total:.0f} {unit}", style="progress.download")


class _SpeedColumn(ProgressColumn):
    """Segments per second while embedding."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} seg/s", style="progress.data.speed")


def progress_view() -> _ProgressView | _PlainView:
    """Bars on a terminal; plain lines at a steady interval in a log or CI (see `cli.plain_progress`)."""
    return _PlainView() if use_plain_progress() else _ProgressView(enabled=True)


class _PlainView:
    """IndexProgress events as :class:`PlainProgress` lines (stderr is not a terminal)."""

    def __init__(self) -> None:
        self._lines = PlainProgress()

    def __enter__(self) -> _PlainView:
        self._lines.__enter__()
        self._lines.update("finding audio files")
        return self

    def __exit__(self, *exc: object) -> None:
        self._lines.__exit__(*exc)

    def update(self, event: IndexProgress) -> None:
        stage = _PHASES.get(event.phase, event.phase)
        if event.phase in ("scan", "hash", "relink"):
            self._lines.update(stage, event.files_done, event.files_total or None, "files")
        elif event.phase == "load":
            self._lines.update(stage)
        else:
            files = f"{event.files_done}/{event.files_total} files"
            self._lines.update(stage, event.segments_done, event.segments_total or None, "segments", files)


class _ProgressView:
    """A rich progress display on stderr fed by IndexProgress events."""

    def __init__(self, *, enabled: bool) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            _CountColumn(),
            _SpeedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
            disable=not enabled,
        )
        self._task: Any = None
        self._phase: str | None = None

    def __enter__(self) -> _ProgressView:
        self._progress.__enter__()
        # Finding the files sends no event until it is done: say what is happening meanwhile.
        self._task = self._progress.add_task("finding audio files", total=None, files="", unit="")
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, event: IndexProgress) -> None:
        if event.phase != self._phase and event.phase in ("scan", "hash", "relink", "load", "embed"):
            # Each phase gets its own bar, so rates and ETA are not mixed across phases.
            if self._task is not None:
                self._progress.remove_task(self._task)
            embedding = event.phase == "embed"
            # The total stays unknown (an indeterminate bar) until an event gives it.
            self._task = self._progress.add_task(
                _PHASES[event.phase], total=None, files="", unit="segments" if embedding else "files"
            )
            self._phase = event.phase
        if self._task is None:
            return
        description = _PHASES.get(event.phase, event.phase)
        if self._phase == "embed":
            # Commit, promote, compact and done events carry the embedding counters too.
            self._progress.update(
                self._task,
                completed=event.segments_done,
                total=event.segments_total or None,
                files=f"{event.files_done}/{event.files_total} files",
                description=description,
            )
        elif event.phase in ("scan", "hash", "relink"):
            self._progress.update(
                self._task,
                completed=event.files_done,
                total=event.files_total or None,
                description=description,
            )
        else:
            self._progress.update(self._task, description=description)


def _print_summary(report: IndexReport) -> None:
    table = Table(title=f"index {escape(report.index_dir)}", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [
        ("files found", report.files_seen),
        ("indexed (embedded now)", report.files_indexed),
        ("relinked (moved: vectors reused)", report.files_relinked),
        ("re-read (tags changed: vectors reused)", report.files_retagged),
        ("skipped (unchanged)", report.files_skipped),
        ("duplicates (same content)", report.files_duplicates),
        ("failed", report.files_failed),
        ("removed (gone from disk)", report.files_removed),
        ("segments added", report.segments_added),
        ("segments deleted", report.segments_deleted),
        ("vectors in the index", report.vectors),
        ("shards", report.shards),
        ("generation", report.generation),
    ]
    for name, value in rows:
        style = "red" if name == "failed" and value else None
        table.add_row(name, str(value), style=style)
    table.add_row("time", f"{report.seconds:.1f} s")
    console.print(table)
    notes = []
    if report.rebuilt:
        notes.append("rebuilt with the new embedder; the old generation was replaced")
    if report.compacted:
        notes.append("small shards were merged")
    for note in notes:
        console.print(note)
    _print_workers(report.workers)
    _print_paths("failed files", report.failures, "red")
    _print_paths("paths that could not be searched", report.problems, "yellow")


def _print_workers(workers: list[dict[str, Any]]) -> None:
    """Per-worker throughput of a Ray run."""
    if not workers:
        return
    table = Table(title="embedding workers (Ray)", title_justify="left")
    table.add_column("worker")
    table.add_column("segments", justify="right")
    table.add_column("embedding", justify="right")
    table.add_column("segments/s", justify="right")
    table.add_column("model load", justify="right")
    for worker in workers:
        table.add_row(
            escape(worker["worker"]),
            str(worker["segments"]),
            f"{worker['busy_s']:.1f} s",
            f"{worker['segments_per_s']:.1f}",
            f"{worker['load_s']:.1f} s",
        )
    console.print(table)


def _dry_run(
    paths: list[str], root: Path, *, window: float | None, hop: float | None, prune: bool, json_output: bool
) -> None:
    from vela_search.indexing import preview_index

    with progress_view() as view:  # scanning and hashing a large library takes a while
        preview = preview_index(paths, root, window_s=window, hop_s=hop, prune=prune, progress=view.update)
    if preview.files_seen == 0:
        problems = [(str(p), r) for p, r in preview.problems]
        err_console.print(f"[yellow]warning:[/] {escape(_no_audio_message(paths, problems))}")
    if json_output:
        print_json(preview.to_dict())
        return
    state = "" if preview.index_exists else " (new index)"
    table = Table(
        title=f"index {escape(preview.index_dir)}{state}: what a run would do (dry run: nothing changed)",
        show_header=False,
        title_justify="left",
    )
    table.add_column("what")
    table.add_column("count", justify="right")
    seconds = preview.audio_seconds_to_embed
    length = f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
    unknown = (
        f" (+{preview.files_without_duration} of unknown length)" if preview.files_without_duration else ""
    )
    rows = [
        ("files found", str(preview.files_seen)),
        ("to embed", str(preview.files_to_embed)),
        ("  segments to embed", str(preview.segments_to_embed)),
        ("  audio to embed", f"{length}{unknown}"),
        ("to relink (moved: vectors reused)", str(preview.files_to_relink)),
        ("to re-read (tags changed: vectors reused)", str(preview.files_to_reread)),
        ("unchanged (skipped)", str(preview.files_unchanged)),
        ("duplicates (same content)", str(preview.files_duplicates)),
        ("to remove (gone from disk)", str(preview.files_to_remove)),
        ("unreadable now", str(len(preview.failures))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    _print_paths("files that cannot be read", preview.failures, "red")
    _print_paths("paths that could not be searched", preview.problems, "yellow")


def _print_paths(title: str, items: list[tuple[str, str]], style: str) -> None:
    if not items:
        return
    table = Table(title=title, title_justify="left", title_style=style)
    table.add_column("path", overflow="fold")
    table.add_column("reason", overflow="fold")
    for path, reason in items[:_MAX_LISTED]:
        table.add_row(escape(path), escape(reason))
    console.print(table)
    if len(items) > _MAX_LISTED:
        console.print(f"… and {len(items) - _MAX_LISTED} more (all are listed with --json)")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _describe_search(search: dict[str, Any] | None) -> str:
    """One line: how queries are answered (exact, a graph, compressed with re-ranking, or a fixed factory),
    with the tuned settings and the recall measured for them."""
    if not search:
        return "-"
    mode = search["mode"]
    budget = f"; budget {_size(search['max_index_memory'])}" if search.get("max_index_memory") else ""
    if search["choice"] == "exact":
        return f"exact {search['factory']} ({mode}{budget}; {_size(search['memory_bytes'])} of fp16 vectors)"
    if search["choice"] == "fixed":
        return f"{search['factory']} (fixed factory)"
    recall = search.get("recall_at_10")
    measured = (
        f"recall@10 {'?' if recall is None else f'{recall:.3f}'} measured on "
        f"{search.get('recall_queries') or '?'} held-out queries at {search.get('measured_size') or '?'} "
        f"vectors {search.get('measured_at') or '?'}"
    )
    if search["choice"] == "graph":
        return (
            f"graph {search['factory']} over the fp16 vectors ({mode}{budget}; "
            f"{_size(search['memory_bytes'])}; efSearch {search['ef_search']}; {measured})"
        )
    return (
        f"compressed {search['factory']} + exact re-rank of {search['rerank']} candidates "
        f"({mode}{budget}; {_size(search['memory_bytes'])}; nprobe {search['nprobe']}; designed for "
        f"{search['design_size']} vectors; {measured})"
    )


def _print_info(info: dict[str, Any]) -> None:
    table = Table(title=f"index {escape(info['index_dir'])}", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    files = info["files"]
    spec = info.get("embedder") or {}
    rows = [
        ("format version", info["format_version"]),
        ("generation", f"{info['generation']} (committed {info.get('committed_at') or '?'})"),
        ("vectors", f"{info['vectors']} live, {info['deleted']} deleted"),
        (
            "shards",
            f"{len(info['shards'])}: "
            + ", ".join(str(s["vectors"]) for s in info["shards"][:20])
            + (" …" if len(info["shards"]) > 20 else ""),
        ),
        ("index type", f"{info['factory']} ({info['metric']}, dim {info['dim']})"),
        ("search", _describe_search(info.get("search"))),
        (
            "files",
            f"{files['total']}: {files['indexed']} indexed, {files['duplicate']} duplicate, "
            f"{files['failed']} failed",
        ),
        ("roots", "\n".join(info["roots"]) or "-"),
        ("segments", _describe_segmentation(info.get("segmentation"))),
        ("model", spec.get("model") or "(not recorded)"),
        ("adapter", spec.get("adapter") or "none"),
        ("demos", spec.get("demos") or "(not recorded)"),
    ]
    room = info.get("query_room")
    if room:
        rows.append(
            (
                "query room",
                f"{room['tokens']} tokens (the model's {room['max_positions']} positions less the "
                f"{room['prefix_tokens']}-token prefix)",
            )
        )
    build = info.get("faiss_build")
    if build:
        rows.append(("FAISS", _describe_faiss(build)))
    for key, value in sorted(info["fingerprint"].items()):
        rows.append((f"fingerprint.{key}", value if value is not None else "none"))
    staged = info.get("staged_rebuild")
    if staged:
        rows.append(
            (
                "unfinished rebuild",
                f"generation {staged['generation']}, {staged['vectors']} vectors "
                "(rerun `vela-search index --rebuild` to finish it)",
            )
        )
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    console.print(table)


def _describe_segmentation(seg: dict[str, Any] | None) -> str:
    """E.g. ``one per file up to 30 s; longer files: 8 s windows every 4 s (--window 8 --hop 4)``."""
    if not seg:
        return "(not recorded yet: the next `vela-search index` run records it)"
    return (
        f"one per file up to {seg['single_max_s']:g} s; longer files: {seg['window_s']:g} s windows every "
        f"{seg['hop_s']:g} s (--window {seg['window_s']:g} --hop {seg['hop_s']:g})"
    )


def _describe_faiss(build: dict[str, Any]) -> str:
    """E.g. ``1.15.1, CPU build (OPTIMIZE AVX2), 0 GPUs`` or ``1.15.1, GPU build with cuVS (…), 2 GPUs``."""
    kind = "GPU build" if build["gpu_support"] else "CPU build"
    if build["cuvs"]:
        kind += " with cuVS"
    options = " ".join(build["compile_options"])
    gpus = build["gpus"]
    return (
        f"{build['version']}, {kind}"
        + (f" ({options})" if options else "")
        + (
            f", {gpus} GPU{'s' if gpus != 1 else ''} (searches run on GPU 0)"
            if gpus
            else ", 0 GPUs (searches run on the CPU)"
        )
    )
