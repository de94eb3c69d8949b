"""What the detector has done so far, counted where it happens, for the code that decides things.

Prometheus series are for dashboards; liveness (is the loop consuming?), ``Service.progress()``,
the progress line and the demo's summary read a :class:`Tally` instead. A check that read a
series back by name would turn into "0 events consumed" the day the series was renamed, and
say nothing. :class:`stream.metrics.Metrics` keeps one and counts into both.

Threads: the consumer thread (or Faust's event loop, or `score`) adds consumed, rejected and
late events; the inference worker adds scored windows; whichever thread polls the producer
adds alerts. :meth:`Tally.add` swaps in a new frozen :class:`Counts` under a lock, so a reader
always gets one consistent snapshot from :meth:`Tally.counts`.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Counts:
    """A snapshot of the tally."""

    consumed: int = 0  # messages read from the input topic (valid or not)
    rejected: int = 0  # messages refused by the event contract (dead-lettered)
    late: int = 0  # valid events outside the allowed lateness (dead-lettered)
    scored: int = 0  # windows scored by the serving model
    alerts: int = 0  # alerts the broker has acknowledged

    @property
    def dead_letters(self) -> int:
        """Everything sent to the dead-letter topic."""
        return self.rejected + self.late


class Tally:
    """Running :class:`Counts`, safe to add to from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = Counts()

    def add(self, **deltas: int) -> None:
        """Add to the named counts, e.g. ``add(consumed=500, rejected=2)``."""
        with self._lock:
            c = self._counts
            self._counts = dataclasses.replace(c, **{k: getattr(c, k) + v for k, v in deltas.items()})

    def counts(self) -> Counts:
        """The counts now (an immutable snapshot)."""
        return self._counts
