"""A periodic one-line progress report, the same from `seqsentry run` and `seqsentry faust`.

A detector that runs for days is watched in Grafana; a person who just started one watches
its terminal. Every ``interval_s`` it says what it has done since the last line, read off the
same metrics Prometheus scrapes (so the two never disagree). The caller's thread owns it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stream.alerts import SEVERITIES
from stream.metrics import Metrics

INTERVAL_S = 30.0


@dataclass
class ProgressLine:
    """``tick()`` from the loop; it emits a line at most every ``interval_s``."""

    metrics: Metrics
    emit: Callable[[str], None]
    interval_s: float = INTERVAL_S
    _at: float = field(default_factory=time.monotonic)
    _consumed: float = 0.0

    def tick(self, now: float | None = None) -> str | None:
        """The progress line when one is due (also handed to ``emit``), else None."""
        now = time.monotonic() if now is None else now
        if now - self._at < self.interval_s:
            return None
        m = self.metrics
        consumed = m.value("seqsentry_events_consumed_total")
        dead = sum(m.value("seqsentry_events_rejected_total", {"reason": r})
                   for r in _labels(m, "seqsentry_events_rejected_total", "reason")) \
            + m.value("seqsentry_events_late_total")
        alerts = sum(m.value("seqsentry_alerts_total", {"severity": s}) for s in SEVERITIES)
        line = (f"progress: {consumed:,.0f} events consumed ({(consumed - self._consumed) / (now - self._at):,.0f}/s "
                f"over the last {now - self._at:.0f} s), {m.value('seqsentry_windows_scored_total'):,.0f} windows "
                f"scored, {alerts:,.0f} alerts, {dead:,.0f} dead letters")
        self._at, self._consumed = now, consumed
        self.emit(line)
        return line


def _labels(m: Metrics, sample: str, label: str) -> set[str]:
    """The values ``label`` has taken on ``sample`` so far (collected at call time)."""
    return {s.labels[label] for family in m.registry.collect() for s in family.samples
            if s.name == sample and label in s.labels}
