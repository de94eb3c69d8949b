"""The consumer loop: fetch, run the pipeline step, hand windows to the worker, commit, observe.

Threads: everything here runs on the consumer thread (the one that calls
:meth:`ConsumerLoop.run`), including the rebalance callbacks librdkafka invokes inside
``consume()``. It is the only thread that touches the consumer, the window stores and the
commit tracker. Other threads see it through plain values it writes: ``heartbeat``,
``progress_at`` (health), ``lag_messages`` (scrapes) and the metrics. A broker that lost
what was already consumed is reported in one line (:mod:`stream.runtime.logloss`).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from stream import pipeline
from stream.batcher import InferenceWorker
from stream.detector import Detector
from stream.metrics import Metrics
from stream.progress_line import ProgressLine
from stream.runtime.commits import CommitTracker, DetectorFailed
from stream.runtime.config import ServiceConfig
from stream.runtime.logloss import LogLossWatch, loss_line
from stream.runtime.outputs import Outputs
from stream.runtime.rebuild import Partitions

log = logging.getLogger(__name__)
OBSERVE_EVERY_S = 1.0  # lag and evictions: one scrape's resolution is enough


class ConsumerLoop:
    """Owns the consumer and everything only the consumer thread may touch."""

    def __init__(self, cfg: ServiceConfig, consumer: Consumer, detector: Detector, worker: InferenceWorker,
                 outputs: Outputs, commits: CommitTracker, partitions: Partitions, metrics: Metrics) -> None:
        self.cfg = cfg
        self.consumer = consumer
        self.detector = detector
        self.worker = worker
        self.outputs = outputs
        self.commits = commits
        self.partitions = partitions
        self.metrics = metrics
        self.paused = False
        self.heartbeat = time.monotonic()  # last turn of the loop
        self.progress_at = time.monotonic()  # last time consumption advanced, or there was nothing to consume
        self._consumed_seen = 0
        self.lag_messages: dict[int, int] = {}  # partition -> messages behind, for scrapes (stream.runtime.gauges)
        self._evicted_seen = {"idle": 0, "lru": 0}
        self.loss = LogLossWatch()
        self.failed: str | None = None  # why run() raised: from then on nothing more is finished or committed

    # ---- one turn ---------------------------------------------------------------------
    def handle(self, msgs: list[Message]) -> None:
        """Run the pipeline step over one consumed batch, partition by partition, under one ticket."""
        by_part: dict[int, list[Message]] = {}
        offsets: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    self.outputs.errors.on_consume_error(msg.error())
                continue
            by_part.setdefault(msg.partition(), []).append(msg)
            offsets[(msg.topic(), msg.partition())] = msg.offset()
        ticket = self.commits.open(offsets)
        received_ms = int(time.time() * 1000)  # the batch is here: nothing in it was produced later
        self._report_loss([line for pm in by_part.values()
                           if (line := self.loss.consumed(pm[0].topic(), pm[0].partition(), pm[0].offset(),
                                                          pm[-1].offset()))])
        for part, pm in by_part.items():
            self.partitions.last_ts[part] = pm[-1].timestamp()[1]
            values = [x.value() for x in pm]
            topic = pm[0].topic()
            res = pipeline.step(
                self.detector, self.partitions.store(part), pipeline.parse(values, self.cfg.max_message_bytes),
                topic=topic, partition=part, offsets=np.array([x.offset() for x in pm], dtype=np.int64),
                kafka_ts=np.array([x.timestamp()[1] for x in pm], dtype=np.int64), keys=[x.key() for x in pm],
                metrics=self.metrics, trusted_ts=pipeline.trusted_clock([x.timestamp() for x in pm], received_ms),
                max_clock_skew_ms=self.cfg.max_clock_skew_ms)
            for d in res.dead_letters:
                msg = pm[d.index]
                self.outputs.dead_letter(ticket, msg.value(), msg.key(), d.reason, d.detail, topic=msg.topic(),
                                         partition=msg.partition(), offset=msg.offset())
            for p in res.pending:
                p.ticket = ticket
                ticket.add()
                self.worker.submit(p)
        ticket.done()

    # ---- rebalances: the partitions' state, and the committed offsets as a sign of lost data ----------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: rebuild the partitions' windows, then check their committed offsets."""
        self.partitions.on_assign(consumer, partitions)
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:  # the rebuild above already needed them; no check is no harm
            log.debug("committed offsets unavailable for the data-loss check: %s", exc)
            return
        self._report_loss(self.loss.assigned(committed))

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback (revoked or lost): finish and commit, drop the partitions' state."""
        self.partitions.on_revoke(consumer, partitions)
        self.loss.revoked(partitions)

    def _report_loss(self, found: list[str]) -> None:
        if found:
            self.metrics.data_loss.inc()
            self.outputs.errors.on_data_loss(loss_line(found))

    def commit(self, force: bool = True) -> None:
        """Commit what is safe to commit (at most every commit interval unless forced)."""
        if not self.commits.due(force):
            return
        if self.cfg.exactly_once:
            self.commits.commit_transaction(self.outputs.producer, self.consumer, self.worker.drain,
                                            lambda: self.worker.error)
        else:
            self.commits.commit(self.consumer)

    def finish_in_flight(self, timeout: float = 60.0) -> None:
        """Drain the worker, flush the outputs and commit (on revoke and at stop); nothing once the loop failed.

        After a failure the close still revokes the partitions, and finishing then could only
        wait out each timeout in turn (a stopped worker never drains, a fenced producer never
        delivers nor commits): minutes of a dead detector looking alive. Its restart resumes
        from the last commit instead.
        """
        if self.failed is not None:
            log.info("not finishing in-flight work after the failure (%s): the restart resumes from the last commit",
                     self.failed)
            return
        self.worker.drain(timeout)
        self.outputs.flush(timeout)
        self.commit()

    def stopping_message(self) -> str:
        """What a stop waits for, in one line: a stop with a backlog can take a while, and an
        operator pressing Ctrl-C should see why rather than a generic "draining"."""
        windows = self.worker.queued_windows  # submitted, not yet taken for a batch
        unacked = self.outputs.undelivered
        batches = self.commits.outstanding
        if not (windows or unacked or batches):
            return "stopping: nothing in flight"
        return (f"stopping: waiting for {windows:,} windows queued for scoring and their alerts ({unacked:,} outputs "
                f"unacknowledged), then committing {batches:,} consumed batches")

    def backpressure(self) -> None:
        # Holding back consume() instead of Consumer.pause()/resume(): in a soak here librdkafka
        # once never fetched the resumed partitions again (lag grew, nothing arrived; cf.
        # librdkafka #5111). Meanwhile its prefetch queue is bounded by queued.max.messages.kbytes,
        # heartbeats continue on its own thread, and the queue drains in seconds, far inside
        # max.poll.interval.ms.
        if not self.paused and self.worker.full:
            self.paused = True
        elif self.paused and self.worker.drained_enough:
            self.paused = False
        self.metrics.paused.set(len(self.partitions.assigned) if self.paused else 0)

    def observe(self) -> None:
        """Measure consumer lag (published for scrapes), note consumption progress and feed the
        eviction counter: what needs the consumer or the stores' running counts."""
        m = self.metrics
        stores = self.partitions.stores.values()
        lag: dict[int, int] = {}
        behind = 0
        for tp in self.consumer.assignment():
            try:
                lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
                pos = self.consumer.position([tp])[0].offset
            except Exception:
                continue
            if hi >= 0 and pos >= 0:
                lag[tp.partition] = max(0, hi - pos)
                behind += max(0, hi - pos)
            elif 0 <= lo < hi:  # no position yet (e.g. a recreated topic) yet messages waiting: behind, not idle
                behind += hi - lo
        self.lag_messages = lag  # one assignment: a scrape sees the old dict or the new one
        consumed = m.tally.counts().consumed
        if consumed != self._consumed_seen or behind == 0:  # a stall is being behind *and* consuming nothing
            self._consumed_seen, self.progress_at = consumed, time.monotonic()
        # The stores count evictions since they were created; the counter takes only what is new.
        # (Counts of revoked partitions' stores are gone with them, so a total can drop: never negative.)
        evicted = {"idle": sum(s.evicted_idle for s in stores), "lru": sum(s.evicted_lru for s in stores)}
        for cause, n in evicted.items():
            delta = n - self._evicted_seen[cause]
            if delta > 0:
                m.evicted.labels(cause).inc(delta)
                self._evicted_seen[cause] = n

    # ---- the loop -------------------------------------------------------------------------
    def run(self, stopping: threading.Event) -> None:
        """Consume until ``stopping`` is set; then finish in-flight work. Raises DetectorFailed."""
        try:
            self._run(stopping)
        except BaseException as exc:
            self.failed = str(exc) or type(exc).__name__
            raise

    def _run(self, stopping: threading.Event) -> None:
        self.consumer.subscribe([self.cfg.topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
        errors = self.outputs.errors
        last_observe = 0.0
        progress_line = ProgressLine(self.metrics.tally, log.info)
        while not stopping.is_set():
            self.heartbeat = time.monotonic()
            if errors.fatal is not None:
                raise DetectorFailed(f"fatal Kafka error, stopping: {errors.fatal}")
            if self.worker.error is not None:
                raise DetectorFailed(f"inference worker failed: {self.outputs.fatal_reason(self.worker.error)}")
            # consume() waits for a full batch or the timeout: the timeout is latency under light load
            if self.paused:
                msgs = []
                time.sleep(self.cfg.poll_wait_ms / 1000)
            else:
                msgs = self.consumer.consume(self.cfg.consume_batch, timeout=self.cfg.poll_wait_ms / 1000)
            if msgs:
                self.handle(msgs)
            self.outputs.poll()
            self.backpressure()
            self.commit(force=False)
            if time.monotonic() - last_observe > OBSERVE_EVERY_S:
                self.observe()
                progress_line.tick()
                last_observe = time.monotonic()
        log.info(self.stopping_message())
        self.finish_in_flight()
