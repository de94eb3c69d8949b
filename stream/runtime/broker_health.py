"""Broker health as `seqsentry run` sees it: what the Kafka clients reported, and outputs awaiting acks.

Readiness (``Service.ready``) reads both. :class:`BrokerErrors` collects librdkafka's error
callbacks, failed deliveries, consume errors and detected data loss, each with the time it
last happened; a fatal error (``PRODUCER_FENCED``) stops the loop. :class:`Unacked` times
every output from produce to ack: readiness fails once the oldest has waited
``ack_timeout_s``, long before librdkafka gives up on it (``message.timeout.ms``, 300 s by
default; issue 20 saw 20 alerts go unacknowledged for 304 s while ``/readyz`` said 200).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict

from confluent_kafka import KafkaError

from stream.ratelimit import RateLimit

log = logging.getLogger(__name__)
_BROKER_DOWN = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._TIMED_OUT,
                KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT)


class Unacked:
    """Outputs produced but not yet acknowledged, with the monotonic time each was produced.

    Oldest first (an OrderedDict: O(1) to add, settle and find the oldest). Added on the
    consumer and worker threads, settled on whichever thread polls the producer: a lock."""

    def __init__(self) -> None:
        self._since: OrderedDict[int, float] = OrderedDict()
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def add(self) -> int:
        """One more output in flight; its id, for :meth:`settle`."""
        with self._lock:
            n = next(self._ids)
            self._since[n] = time.monotonic()
            return n

    def settle(self, n: int) -> None:
        """Output ``n`` was acknowledged, failed, or never made it into the producer."""
        with self._lock:
            self._since.pop(n, None)

    def oldest_age(self, now: float | None = None) -> float:
        """Seconds the oldest unacknowledged output has waited (0 when none waits)."""
        with self._lock:
            if not self._since:
                return 0.0
            first = next(iter(self._since.values()))
        return (time.monotonic() if now is None else now) - first

    def __len__(self) -> int:
        return len(self._since)


class BrokerErrors:
    """What the Kafka clients reported: error callbacks (librdkafka's threads), failed
    deliveries and a vanished topic. Readiness reads the times; repeated lines are rate-limited."""

    def __init__(self, limit: RateLimit | None = None) -> None:
        self.fatal: str | None = None  # e.g. PRODUCER_FENCED: this client may never write again
        self.broker_error_at = 0.0  # monotonic time of the last sign that the cluster is unreachable
        self.delivery_failed_at = 0.0  # monotonic time of the last output the broker did not take
        self.limit = limit or RateLimit()

    @property
    def last_problem_at(self) -> float:
        """Monotonic time of the last sign that outputs or inputs are not getting through."""
        return max(self.broker_error_at, self.delivery_failed_at)

    def on_error(self, err: KafkaError) -> None:
        """librdkafka's ``error_cb``."""
        if err.fatal():
            self.fatal = str(err)
        if err.code() in _BROKER_DOWN:
            self.broker_error_at = time.monotonic()
        self._warn(("error", err.code()), "kafka: %s", err)

    def on_delivery_failure(self, topic: str, reason: str) -> None:
        """A produced message was not acknowledged: its input must not be committed (its ticket fails)."""
        self.delivery_failed_at = time.monotonic()
        held = self.limit.allow(("delivery", topic))
        if held is not None:
            log.error("output to %s not delivered (%s); its input stays uncommitted and the detector stops at the "
                      "next commit, a restart resumes from there%s", topic, reason,
                      f" ({held} more failures not shown)" if held else "")

    def on_consume_error(self, err: KafkaError) -> None:
        """A consume error: a vanished topic or partition counts against readiness like a broker down."""
        if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION,
                          *_BROKER_DOWN):
            self.broker_error_at = time.monotonic()
        self._warn(("consume", err.code()), "consume error: %s", err)

    def on_data_loss(self, line: str) -> None:
        """The broker lost data this detector had consumed or committed (see stream.runtime.logloss):
        one error line, and readiness fails like a broker down while the outputs catch up."""
        self.broker_error_at = time.monotonic()
        log.error("%s", line)

    def _warn(self, kind: tuple, fmt: str, err: KafkaError) -> None:
        held = self.limit.allow(kind)
        if held is not None:
            log.warning(fmt + ("%s" if held else ""), err, *([f" ({held} more not shown)"] if held else []))
