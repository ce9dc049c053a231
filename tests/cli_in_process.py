"""Run the `vela-search` command line inside the test process, with a subprocess's result.

A subprocess costs a fresh interpreter, a torch and transformers import and often a model load (~10 s on a
busy 2-core machine). Tests that check what a command prints and its exit status, not the process boundary
itself, run it here instead: the console script's own entry point, with its own standard input,
output and error, and a ``subprocess.CompletedProcess`` back, so an assertion written against a real
process reads the same. What only a real process shows (the console script's imports, signals, resource
limits, two processes on one index) stays in subprocess tests (tests/cli/test_console_script.py and others).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator


class _Stream(io.TextIOWrapper):
    """A text stream over bytes that is not a terminal (as a pipe to a subprocess is not)."""

    def isatty(self) -> bool:
        return False


def _stream(data: bytes = b"") -> _Stream:
    return _Stream(
        io.BytesIO(data), encoding="utf-8", errors="surrogateescape", newline=None, write_through=True
    )


@contextlib.contextmanager
def _swapped(stdin: _Stream, stdout: _Stream, stderr: _Stream) -> Iterator[None]:
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    try:
        yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved


def vela(*args: object, stdin: str | bytes | None = None) -> subprocess.CompletedProcess:
    """Run ``vela-search *args`` in process; return its exit status, standard output and standard error.

    ``args`` are turned into strings as a shell would pass them (``os.fsdecode`` names with undecodable
    bytes stay surrogate-escaped, as in ``sys.argv``); ``stdin`` is what it reads from standard input.
    """
    from vela_search.cli import main  # the console script's entry point

    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    streams = _stream(data), _stream(), _stream()
    argv = [str(a) for a in args]
    with _swapped(*streams):
        try:
            main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    out, err = (s.buffer.getvalue().decode("utf-8", "replace") for s in streams[1:])  # type: ignore[attr-defined]
    return subprocess.CompletedProcess(["vela-search", *argv], code, out, err)
