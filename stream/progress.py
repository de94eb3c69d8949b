"""One place that builds rich progress bars, so every long job looks and behaves alike."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def bar(enabled: bool = True, transient: bool = False) -> Progress:
    """A rich Progress (use as a context manager); disabled -> renders nothing."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=transient,
        refresh_per_second=4,
    )


def phase(enabled: bool, text: str) -> AbstractContextManager:
    """A spinner with ``text`` for a step with no natural count (reading a log, calibrating ...)."""
    if not enabled:
        return nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(f"[bold]{text}")


def interactive() -> bool:
    """Whether stderr is a terminal (progress on by default only there)."""
    return sys.stderr.isatty()
