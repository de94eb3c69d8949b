"""The periodic progress line of `run` and `faust`, without a broker."""

from __future__ import annotations

from stream.metrics import Metrics
from stream.progress_line import ProgressLine


def test_a_progress_line_says_what_was_done_since_the_last_one():
    m = Metrics()
    lines: list[str] = []
    beat = ProgressLine(m.tally, lines.append, interval_s=30.0, _at=0.0)
    m.count_consumed(3_000)
    m.count_scored(2_900)
    m.count_alert("high")
    m.count_alert("high")
    m.count_rejected(["not-json"] * 4)
    m.count_late(1)
    assert beat.tick(now=30.0) == ("progress: 3,000 events consumed (100/s over the last 30 s), 2,900 windows "
                                   "scored, 2 alerts, 5 dead letters")
    assert beat.tick(now=31.0) is None and len(lines) == 1  # the next one is due 30 s later


def test_no_line_before_the_interval_has_passed():
    lines: list[str] = []
    beat = ProgressLine(Metrics().tally, lines.append, interval_s=30.0, _at=0.0)
    assert beat.tick(now=29.0) is None and lines == []


def test_every_count_reaches_both_the_tally_and_the_exported_series():
    m = Metrics()
    m.count_consumed(7)
    m.count_rejected(["not-json", "bad-type"])
    m.count_late(3)
    m.count_scored(5)
    m.count_alert("low")
    c = m.tally.counts()
    assert (c.consumed, c.rejected, c.late, c.scored, c.alerts, c.dead_letters) == (7, 2, 3, 5, 1, 5)
    sample = m.registry.get_sample_value
    assert sample("seqsentry_events_consumed_total") == 7 and sample("seqsentry_events_late_total") == 3
    assert sample("seqsentry_events_rejected_total", {"reason": "bad-type"}) == 1
    assert sample("seqsentry_windows_scored_total") == 5 and sample("seqsentry_alerts_total", {"severity": "low"}) == 1
