"""``python -m vela_search`` runs the command line."""

from __future__ import annotations

from vela_search.cli import main

if __name__ == "__main__":
    main()
