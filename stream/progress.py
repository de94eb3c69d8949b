"""One place that builds rich progress bars, so every long job looks and behaves alike."""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager, nullcontext

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class LineProgress:
    """What :func:`bar` gives when stderr is not a terminal (a log file, CI): one plain line per
    task every tenth of the way or every ``every_s`` seconds, so long work shows progress
    there too. Takes the calls this project makes on a rich Progress."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._tasks: dict[int, dict] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self._tasks.values():
            if t["printed"] != t["completed"]:
                self._print(t)

    def add_task(self, description: str, total: float | None = None, **fields: object) -> int:
        tid = len(self._tasks)
        self._tasks[tid] = {"description": description, "total": total, "completed": 0.0, "fields": fields,
                            "start": time.monotonic(), "last": time.monotonic(), "printed": None}
        return tid

    def update(self, task_id: int, *, advance: float = 0.0, completed: float | None = None, **fields: object) -> None:
        t = self._tasks[task_id]
        t["completed"] = completed if completed is not None else t["completed"] + advance
        t["fields"].update(fields)
        total, now = t["total"], time.monotonic()
        step = (total or 0) / 10
        crossed = bool(step) and int(t["completed"] // step) != int((t["printed"] or 0) // step)
        if crossed or now - t["last"] >= self.every_s:
            self._print(t)

    def _print(self, t: dict) -> None:
        t["last"], t["printed"] = time.monotonic(), t["completed"]
        of = f"/{t['total']:,.0f}" if t["total"] else ""
        rate = t["fields"].get("rate", "")
        print(f"{t['description']}: {t['completed']:,.0f}{of} {rate} ({t['last'] - t['start']:.0f} s)".rstrip(),
              file=sys.stderr, flush=True)


def bar(enabled: bool = True, transient: bool = False) -> Progress | LineProgress:
    """A rich Progress (use as a context manager); disabled -> renders nothing; enabled with
    stderr not a terminal -> :class:`LineProgress` lines."""
    if enabled and not interactive():
        return LineProgress()
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
