"""Partition state: one window store per assigned partition, rebuilt from the input topic.

On assignment the store is rebuilt by re-reading the input topic from (time of the last
committed event - window span - allowed lateness) up to the committed offset, without
scoring: the input topic is the changelog. The rebuild stops on offsets, never on the
high watermark (Tansu reports it inexactly). On revocation in-flight work is finished
and committed first (``finish``), then the stores are dropped.

Threads: the rebalance callbacks run inside ``consumer.consume()``, so on the consumer
thread; everything here is owned by it (the metrics observer reads ``stores`` there too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from stream import events, kafka
from stream.detector import Detector
from stream.metrics import Metrics
from stream.runtime import pipeline
from stream.runtime.config import ServiceConfig
from stream.windows import WindowStore

log = logging.getLogger(__name__)
IDLE_GIVE_UP_S = 10.0  # a partition that yields nothing for this long has nothing more to give


def rebuild(cfg: ServiceConfig, tp: TopicPartition, store: WindowStore, metrics: Metrics) -> int:
    """Re-read [committed time - span - lateness, committed) of ``tp`` into ``store``; events read."""
    win = store.config
    reader = kafka.consumer(cfg.bootstrap, f"{cfg.group}-rebuild", cfg.kafka_options)
    try:
        reader.assign([TopicPartition(tp.topic, tp.partition, tp.offset - 1)])
        last = [m for m in reader.consume(1, timeout=10) if not m.error()]
        start = OFFSET_BEGINNING
        if last and last[0].timestamp()[1] > 0:
            since = last[0].timestamp()[1] - win.span_ms - win.allowed_lateness_ms
            found = reader.offsets_for_times([TopicPartition(tp.topic, tp.partition, since)], timeout=10)
            start = found[0].offset if found and found[0].offset >= 0 else OFFSET_BEGINNING
        reader.assign([TopicPartition(tp.topic, tp.partition, start)])
        n = 0
        done = False
        idle_since = time.monotonic()
        while not done and time.monotonic() - idle_since < IDLE_GIVE_UP_S:
            msgs = [m for m in reader.consume(5000, timeout=0.5) if not m.error()]
            if msgs:
                idle_since = time.monotonic()
            keep = [m for m in msgs if m.offset() < tp.offset]
            done = len(keep) < len(msgs) or (bool(keep) and keep[-1].offset() >= tp.offset - 1)
            res = events.parse_batch([m.value() for m in keep], cfg.max_message_bytes)
            # the same bounds as the consumer's: refused future-dated events do not come back, and no
            # event dated ahead reorders a window or moves the partition's clock beyond them
            trusted = pipeline.trusted_clock([m.timestamp() for m in keep], int(time.time() * 1000))
            batch, _ = pipeline.check_clock_skew(res.events, trusted, cfg.max_clock_skew_ms)
            store.add(batch)
            n += len(keep)
        metrics.rebuilt_events.inc(n)
        log.info("partition %d: rebuilt %d users' windows from %d events (offsets %s..%d)", tp.partition,
                 store.users, n, start, tp.offset - 1)
        return n
    finally:
        reader.close()


class Partitions:
    """The consumer thread's per-partition state, kept in step with the group's assignment."""

    def __init__(self, cfg: ServiceConfig, detector: Detector, metrics: Metrics, finish: Callable[[], None]) -> None:
        self.cfg = cfg
        self.detector = detector
        self.metrics = metrics
        self.finish = finish  # drain, flush and commit in-flight work before partitions go
        self.stores: dict[int, WindowStore] = {}
        self.assigned: list[TopicPartition] = []
        self.last_ts: dict[int, int] = {}  # Kafka timestamp of the last message consumed, per partition

    def store(self, partition: int) -> WindowStore:
        """The partition's store (created if the assignment callback was not seen: be safe, not silent)."""
        store = self.stores.get(partition)
        if store is None:
            store = self.stores[partition] = self.detector.new_store()
        return store

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: new stores, rebuilt up to the committed offsets."""
        self.metrics.rebalances.labels("assign").inc()
        committed = consumer.committed(partitions, timeout=10)
        for tp in committed:
            self.stores[tp.partition] = store = self.detector.new_store()
            if tp.offset is not None and tp.offset > 0:
                rebuild(self.cfg, tp, store, self.metrics)
        self.assigned += partitions
        log.info("assigned partitions %s", [tp.partition for tp in partitions])

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: finish and commit in-flight work, then drop the partitions' state."""
        self.metrics.rebalances.labels("revoke").inc()
        self.finish()
        gone = {tp.partition for tp in partitions}
        for p in gone:
            self.stores.pop(p, None)
        self.assigned = [p for p in self.assigned if p.partition not in gone]
        log.info("revoked partitions %s", [tp.partition for tp in partitions])
