"""Fixtures shared by the command tests."""

from __future__ import annotations

import pytest

from vela_search.cli.plain_progress import PlainProgress


@pytest.fixture
def plain_progress_states(monkeypatch) -> list[str]:
    """Every state a command feeds its plain progress, as the line it would print then.

    The printed lines come at an interval, so which stages a fast run shows is a matter of timing; the
    states fed are not, and tell whether a stage reaches the log at all.
    """
    states: list[str] = []
    update = PlainProgress.update

    def recording_update(self: PlainProgress, *args, **kwargs) -> None:
        update(self, *args, **kwargs)
        states.append(self.line())

    monkeypatch.setattr(PlainProgress, "update", recording_update)
    return states
