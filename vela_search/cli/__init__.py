"""The ``vela-search`` command line: a thin Typer layer over the library.

Each command lives in its own module and only parses, calls the library and renders. Heavy libraries are
imported inside the commands, so ``vela-search --help`` stays instant.
"""

from __future__ import annotations

from vela_search.cli.app import app, main

__all__ = ["app", "main"]
