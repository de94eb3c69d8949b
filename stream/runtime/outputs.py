"""Outputs: alerts and dead letters to Kafka, each tied to the commit ticket of its input.

Dead letters follow the contract of :mod:`stream.dead_letter`, which every runtime shares.

A produce error is never an uncaught exception: a full queue (``BufferError``) and
retriable errors are retried; anything else fails the message's ticket (so nothing is
committed past it) and records one line in :attr:`BrokerErrors.fatal`, which fails
readiness and stops the consumer loop. Every output is also timed from produce to ack
(:class:`Unacked`): readiness fails once the oldest has waited ``ack_timeout_s``, long before
librdkafka gives up on it (``message.timeout.ms``, 300 s by default; issue 20 saw 20 alerts
go unacknowledged for 304 s while ``/readyz`` said 200).

Threads: :meth:`Outputs.dead_letter` runs on the consumer thread, :meth:`Outputs.publish`
on the inference worker; delivery callbacks run on whichever thread polls the producer.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import IO

import numpy as np
import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from stream.dead_letter import DEFAULT_MESSAGE_MAX_BYTES, dead_letter_headers, fit_dead_letter
from stream.detector import Pending
from stream.metrics import Metrics
from stream.ratelimit import RateLimit
from stream.runtime.commits import Ticket

log = logging.getLogger(__name__)
PRODUCE_RETRIES = 20  # retriable produce() errors (e.g. a leader moving), 0.1 s apart
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


class Outputs:
    """Produces alerts and dead letters; every delivery settles one unit of its ticket."""

    def __init__(self, producer: Producer, *, alerts_topic: str, dlq_topic: str, metrics: Metrics,
                 errors: BrokerErrors, audit_log: Path | None = None,
                 max_message_bytes: int = DEFAULT_MESSAGE_MAX_BYTES) -> None:
        self.producer = producer
        self.max_message_bytes = max_message_bytes  # the producer's message.max.bytes
        self.alerts_topic = alerts_topic
        self.dlq_topic = dlq_topic
        self.metrics = metrics
        self.errors = errors
        # (trigger's Kafka timestamp ms, event-to-alert seconds) of recent alerts: demo summary, benchmarks
        self.latencies: deque[tuple[int, float]] = deque(maxlen=100_000)
        self.unacked = Unacked()
        self._audit: IO[str] | None = open(audit_log, "a") if audit_log else None  # noqa: SIM115

    def dead_letter(self, ticket: Ticket, value: bytes | None, key: bytes | None, reason: str, detail: str, *,
                    topic: str, partition: int, offset: int) -> None:
        """Divert one input message to the dead-letter topic (consumer thread)."""
        ticket.add()
        value, headers = fit_dead_letter(value, key, dead_letter_headers(reason, detail, topic, partition, offset),
                                         self.max_message_bytes)
        self._produce(self.dlq_topic, value, key, headers, ticket, None)

    def publish(self, p: Pending, found: list[dict]) -> None:
        """Worker thread: publish a group's alerts, then release its hold on the ticket."""
        ticket = p.ticket
        assert isinstance(ticket, Ticket)
        if self._audit is not None and p.offsets is not None:
            self._audit.write("".join(f"{p.partition} {o}\n" for o in p.offsets.tolist()))
            self._audit.flush()  # in the OS before the commit can happen: survives kill -9
        for a in found:
            ticket.add()
            offset = a["trigger"]["offset"]
            idx = int(np.flatnonzero(p.offsets == offset)[0]) if p.offsets is not None else None
            kts = int(p.kafka_ts[idx]) if p.kafka_ts is not None and idx is not None else None
            self._produce(self.alerts_topic, orjson.dumps(a), a["user_id"].encode(), None, ticket, kts,
                          severity=a["severity"])
        ticket.done()
        self.poll()

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, headers: list | None, ticket: Ticket,
                 kafka_ts_ms: int | None, severity: str | None = None) -> None:
        m = self.metrics
        waiting = self.unacked.add()

        def delivered(err: KafkaError | None, _msg: object) -> None:
            self.unacked.settle(waiting)
            if err is not None:
                reason = f"delivery to {topic} failed: {err}"
                self.errors.on_delivery_failure(topic, str(err))
                ticket.fail(reason)
                return
            if severity is not None:  # an alert counts once the broker has it, not when it was queued
                m.alerts.labels(severity).inc()
            if kafka_ts_ms is not None:
                latency = max(0.0, time.time() - kafka_ts_ms / 1000.0)
                m.event_to_alert.observe(latency)
                self.latencies.append((kafka_ts_ms, latency))
            ticket.done()

        retries = 0
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=delivered)
                return
            except BufferError:  # librdkafka's queue is full: serve deliveries until there is room
                self.poll(0.05)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.retriable() and retries < PRODUCE_RETRIES:
                    retries += 1
                    self.poll(0.1)
                    continue
                # Not retriable (e.g. MSG_SIZE_TOO_LARGE): this output can never be written. Failing
                # the ticket keeps its offsets uncommitted; ``fatal`` stops the loop with this line.
                reason = f"cannot produce to {topic}: {err.str() if isinstance(err, KafkaError) else exc}"
                self.unacked.settle(waiting)
                if self.errors.fatal is None:
                    self.errors.fatal = reason
                ticket.fail(reason)
                return

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery callbacks; a fatal producer error (fencing) is raised from poll() once: keep it."""
        try:
            self.producer.poll(timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            self.errors.fatal = err.str() if isinstance(err, KafkaError) else str(exc)

    def fatal_reason(self, error: BaseException | str | None) -> str:
        """The root cause behind a failure: librdkafka reports a fatal error (e.g. fencing)
        through the error callback, while produce() only raises a generic _FATAL and the
        messages it purged afterwards fail delivery with _PURGE_QUEUE."""
        deadline = time.monotonic() + 2.0
        while self.errors.fatal is None and isinstance(error, (KafkaException, str)) and time.monotonic() < deadline:
            self.poll(0.1)
        return self.errors.fatal or str(error or "inference did not drain in time")

    @property
    def undelivered(self) -> int:
        """Alerts and dead letters produced but not yet acknowledged by the broker."""
        return len(self.producer)  # librdkafka's count of messages awaiting delivery

    def flush(self, timeout: float) -> int:
        """Wait for every delivery; the number of messages still undelivered."""
        return self.producer.flush(timeout)

    def close(self) -> None:
        if self._audit is not None:
            self._audit.close()
