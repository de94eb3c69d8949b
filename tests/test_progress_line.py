"""The periodic progress line of `run` and `faust`, without a broker."""

from __future__ import annotations

from stream.metrics import Metrics
from stream.progress_line import ProgressLine


def test_a_progress_line_says_what_was_done_since_the_last_one():
    m = Metrics()
    lines: list[str] = []
    beat = ProgressLine(m, lines.append, interval_s=30.0, _at=0.0)
    m.events_consumed.inc(3_000)
    m.windows_scored.inc(2_900)
    m.alerts.labels("high").inc(2)
    m.events_rejected.labels("not-json").inc(4)
    m.events_late.inc(1)
    assert beat.tick(now=30.0) == ("progress: 3,000 events consumed (100/s over the last 30 s), 2,900 windows "
                                   "scored, 2 alerts, 5 dead letters")
    assert beat.tick(now=31.0) is None and len(lines) == 1  # the next one is due 30 s later


def test_no_line_before_the_interval_has_passed():
    lines: list[str] = []
    beat = ProgressLine(Metrics(), lines.append, interval_s=30.0, _at=0.0)
    assert beat.tick(now=29.0) is None and lines == []
