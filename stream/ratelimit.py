"""Log rate limits: a broker that is down must not write fifty lines a second.

librdkafka reports every failed connection attempt, to every broker, from every client
(consumer, producer, admin), through the error callback and its own log; while the
cluster is down that repeats the same few lines many times a second, burying the one
line a person needs. :class:`RateLimit` lets one line per kind through every
``interval_s`` and says how many it held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

DEFAULT_INTERVAL_S = 10.0


class RateLimit:
    """At most one line per kind every ``interval_s``; counts the lines held back per kind."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}
        self._lock = threading.Lock()  # librdkafka calls back from its own threads

    def allow(self, kind: Hashable) -> int | None:
        """None to hold the line back; otherwise how many of its kind were held back since the last one."""
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return None
            self._last[kind] = now
            return self._held.pop(kind, 0)


class RateLimitFilter(logging.Filter):
    """A logging filter applying :class:`RateLimit`, keyed by logger and message template
    (librdkafka's log lines: by logger and facility)."""

    def __init__(self, limit: RateLimit | None = None) -> None:
        super().__init__()
        self.limit = limit or RateLimit()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is logged; a line let through after others were held back says how many."""
        first_arg = record.args[0] if isinstance(record.args, tuple) and record.args else None
        held = self.limit.allow((record.name, record.levelno, str(record.msg), str(first_arg)))
        if held is None:
            return False
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.limit.interval_s:.0f}s not shown)"
        return True
