"""Partition state: one window store per assigned partition, rebuilt from the input topic.

On assignment the store is rebuilt by re-reading the input topic from (time of the last
committed event - window span - allowed lateness - session gap) up to the committed offset,
without scoring: the input topic is the changelog. The alert cooldown of the rebuilt users
is restored from the alerts already published for events before the committed offset, so
the alerts after a restart or rebalance are exactly an uninterrupted run's. The rebuild stops on offsets, never on the
high watermark (Tansu reports it inexactly). On revocation in-flight work is finished
and committed first (``finish``), then the stores and their users' cooldown are dropped.

Threads: the rebalance callbacks run inside ``consumer.consume()``, so on the consumer
thread; everything here is owned by it (the metrics observer reads ``stores`` there too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, Message, TopicPartition

from stream import events, kafka, pipeline
from stream.detector import Detector
from stream.metrics import Metrics
from stream.runtime.config import ServiceConfig
from stream.windows import WindowStore

log = logging.getLogger(__name__)
IDLE_GIVE_UP_S = 10.0  # a partition that yields nothing for this long has nothing more to give
ALERTS_SETTLE_S = 0.3  # the alerts topic, read back for the cooldown: past its high watermarks, nothing more


def rebuild(cfg: ServiceConfig, tp: TopicPartition, store: WindowStore, metrics: Metrics) -> int | None:
    """Re-read [committed time - span - lateness - session gap, committed) of ``tp`` into ``store``.

    Returns the message time the rebuild started from (None: from the partition's start).
    """
    win = store.config
    reader = kafka.consumer(cfg.bootstrap, f"{cfg.group}-rebuild", cfg.kafka_options)
    try:
        reader.assign([TopicPartition(tp.topic, tp.partition, tp.offset - 1)])
        last = [m for m in reader.consume(1, timeout=10) if not m.error()]
        start, since = OFFSET_BEGINNING, None
        if last and last[0].timestamp()[1] > 0:
            # a session still open at the committed offset ends after it, and its window reaches a span back
            # from its user's last event: that far back, so the windows scored after a restart are complete.
            # (From the trusted clock: a forged CreateTime on the last message must not shorten the rebuild.)
            stamp = int(pipeline.trusted_clock([last[0].timestamp()], int(time.time() * 1000))[0])
            since = stamp - win.span_ms - win.allowed_lateness_ms - min(win.session_gap_ms, win.idle_ttl_ms)
            found = reader.offsets_for_times([TopicPartition(tp.topic, tp.partition, since)], timeout=10)
            start = found[0].offset if found and found[0].offset >= 0 else OFFSET_BEGINNING
            since = since if start != OFFSET_BEGINNING else None
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
        return since
    finally:
        reader.close()


def published_alerts(cfg: ServiceConfig, since_ms: int | None, committed: dict[tuple[str, int], int]) -> dict[
        tuple[str, int], dict[str, int]]:
    """Per input partition, each user's newest alert time among the alerts already published for
    events before its committed offset (alerts topic from ``since_ms``; None: from its start).

    That is the cooldown an uninterrupted run has at the committed offsets: an offset is only
    committed once its alerts are acknowledged (or, exactly-once, in the same transaction, so
    only committed transactions are read). Alerts of events at or after the committed offset
    (published before a crash, not committed) are left out: those events are scored again.
    """
    reader = kafka.consumer(cfg.bootstrap, f"{cfg.group}-rebuild", cfg.kafka_options,
                            **{"isolation.level": "read_committed", "fetch.wait.max.ms": 50})
    found: dict[tuple[str, int], dict[str, int]] = {}
    try:
        for msg in _read_to_end(reader, cfg.alerts_topic, since_ms):
            try:
                a = orjson.loads(msg.value())
                trig = a["trigger"]
                key, offset, user, at = (trig["topic"], trig["partition"]), trig["offset"], a["user_id"], a["event_time"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue  # not one of ours: nothing to restore from it
            if key in committed and isinstance(offset, int) and offset < committed[key]:
                users = found.setdefault(key, {})
                users[user] = max(at, users.get(user, at))
        return found
    finally:
        reader.close()


def _read_to_end(reader: Consumer, topic: str, since_ms: int | None) -> Iterator[Message]:
    """Every message of ``topic`` from ``since_ms`` (None: its start) up to its end."""
    parts = list(reader.list_topics(topic, timeout=10).topics[topic].partitions)
    if since_ms is None:
        starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
    else:
        starts = reader.offsets_for_times([TopicPartition(topic, p, since_ms) for p in parts], timeout=10)
    ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
    todo = [tp for tp in starts if tp.offset != OFFSET_END and ends[tp.partition][1] > max(tp.offset, ends[tp.partition][0])]
    if not todo:
        return
    reader.assign(todo)
    left = {tp.partition for tp in todo}
    idle_since = time.monotonic()
    # the end is where the high watermark was, once nothing more comes (Tansu's may be reported off either way)
    while time.monotonic() - idle_since < (ALERTS_SETTLE_S if not left else IDLE_GIVE_UP_S):
        for msg in reader.consume(5000, timeout=0.1):
            if msg.error():
                continue
            idle_since = time.monotonic()
            if msg.offset() >= ends[msg.partition()][1] - 1:
                left.discard(msg.partition())
            yield msg
    if left:  # the cooldown of users alerted there is not restored: say so
        log.warning("%s: partitions %s yielded nothing for %.0f s before their high watermark; read no further",
                    topic, sorted(left), IDLE_GIVE_UP_S)


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
        resumed: dict[tuple[str, int], int] = {}
        since: list[int | None] = []
        for tp in committed:
            self.stores[tp.partition] = store = self.detector.new_store()
            if tp.offset is not None and tp.offset > 0:
                since.append(rebuild(self.cfg, tp, store, self.metrics))
                resumed[(tp.topic, tp.partition)] = tp.offset
        if resumed:
            self.restore_cooldown(resumed, since)
        self.assigned += partitions
        log.info("assigned partitions %s, resuming at offsets %s", [tp.partition for tp in partitions],
                 [tp.offset for tp in committed])

    def restore_cooldown(self, resumed: dict[tuple[str, int], int], since: list[int | None]) -> None:
        """Rebuild the alert cooldown of the resumed partitions' users with their windows.

        Read from the earliest rebuild start less one cooldown, so that every alert that can still
        hold back one after the committed offset is seen; kept only for users whose windows were
        rebuilt, so the cooldown stays within the stores' user cap.
        """
        cooldown = self.detector.cooldown
        start = None if None in since else min(s for s in since if s is not None) - cooldown.cooldown_ms
        try:
            published = published_alerts(self.cfg, start, resumed)
        except KafkaException as exc:  # the windows are rebuilt; an alert too many beats a detector that stops
            log.warning("alert cooldown not restored (alerts topic %s unreadable: %s): a user alerted just before "
                        "the restart may be alerted once more", self.cfg.alerts_topic, exc)
            return
        restored = 0
        for (_, part), users in published.items():
            store = self.stores[part]
            # an alert is never later than its user's newest event: one forged into the alerts topic with a
            # time ahead holds the user's alerts back for one cooldown at most, not until its forged time
            kept = {u: min(t, int(store.last_ts[slot])) for u, t in users.items()
                    if (slot := store.slot_of(u)) is not None}
            cooldown.restore(kept)
            restored += len(kept)
        log.info("restored the alert cooldown of %d users from the alerts topic", restored)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: finish and commit in-flight work, then drop the partitions' state."""
        self.metrics.rebalances.labels("revoke").inc()
        self.finish()
        gone = {tp.partition for tp in partitions}
        for p in gone:
            store = self.stores.pop(p, None)
            if store is not None:  # its users' cooldown goes with their windows (rebuilt if they come back)
                self.detector.cooldown.forget(u for u in store.user_of if u is not None)
        self.assigned = [p for p in self.assigned if p.partition not in gone]
        log.info("revoked partitions %s", [tp.partition for tp in partitions])
