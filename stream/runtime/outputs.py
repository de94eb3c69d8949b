"""Outputs: alerts and dead letters to Kafka, each tied to the commit ticket of its input.

Dead letters follow the contract of :mod:`stream.dead_letter`, which every runtime shares.

A produce error is never an uncaught exception: a full queue (``BufferError``) and
retriable errors are retried; anything else fails the message's ticket (so nothing is
committed past it) and records one line in ``BrokerErrors.fatal``, which fails readiness
and stops the consumer loop. Every output is also timed from produce to ack (``Unacked``,
both in :mod:`stream.runtime.broker_health`).

Threads: :meth:`Outputs.dead_letter` runs on the consumer thread, :meth:`Outputs.publish`
on the inference worker; delivery callbacks run on whichever thread polls the producer.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import IO

import numpy as np
import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from stream.dead_letter import DEFAULT_MESSAGE_MAX_BYTES, dead_letter_headers, fit_dead_letter
from stream.detector import Pending
from stream.metrics import Metrics
from stream.runtime.broker_health import BrokerErrors, Unacked
from stream.runtime.commits import Ticket

log = logging.getLogger(__name__)
PRODUCE_RETRIES = 20  # retriable produce() errors (e.g. a leader moving), 0.1 s apart
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
                m.count_alert(severity)
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
