"""A periodic one-line progress report, the same from `seqsentry run` and `seqsentry faust`.

A detector that runs for days is watched in Grafana; a person who just started one watches
its terminal. Every ``interval_s`` it says what it has done since the last line, read off the
tally the metrics count into (stream.tally: the same increments Prometheus sees, so the two
never disagree). The caller's thread owns it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stream.tally import Tally

INTERVAL_S = 30.0


@dataclass
class ProgressLine:
    """``tick()`` from the loop; it emits a line at most every ``interval_s``."""

    tally: Tally
    emit: Callable[[str], None]
    interval_s: float = INTERVAL_S
    _at: float = field(default_factory=time.monotonic)
    _consumed: int = 0

    def tick(self, now: float | None = None) -> str | None:
        """The progress line when one is due (also handed to ``emit``), else None."""
        now = time.monotonic() if now is None else now
        if now - self._at < self.interval_s:
            return None
        c = self.tally.counts()
        consumed = c.consumed
        line = (f"progress: {consumed:,} events consumed ({(consumed - self._consumed) / (now - self._at):,.0f}/s "
                f"over the last {now - self._at:.0f} s), {c.scored:,} windows scored, {c.alerts:,} alerts, "
                f"{c.dead_letters:,} dead letters")
        self._at, self._consumed = now, consumed
        self.emit(line)
        return line

