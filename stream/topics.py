"""`seqsentry topics`: list, describe and create topics on any Kafka-compatible cluster."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from stream import kafka
from stream.broker import create_topics as _create


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """One partition's offsets: ``high - low`` messages are held."""

    partition: int
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: list[PartitionInfo]

    @property
    def messages(self) -> int:
        return sum(p.high - p.low for p in self.partitions)


def create(bootstrap: str, names: list[str], partitions: int, options: Mapping[str, str] | None = None) -> None:
    """Create ``names`` (those that exist already are left alone) and wait until they are visible."""
    _create(bootstrap, dict.fromkeys(names, partitions), **kafka.client_config(bootstrap, options))


def describe(bootstrap: str, names: list[str] | None = None, options: Mapping[str, str] | None = None,
             timeout: float = 10.0) -> list[TopicInfo]:
    """Partitions and watermarks of ``names`` (default: every topic but internal ones), sorted by name."""
    found = kafka.check_reachable(bootstrap, options, timeout=timeout)
    missing = [n for n in names or [] if n not in found]
    if missing:
        raise kafka.KafkaUnavailable(f"topic {missing[0]!r} does not exist on {bootstrap}; "
                                     f"create it with `seqsentry topics create {missing[0]} -b {bootstrap}`")
    wanted = sorted(names or [n for n in found if not n.startswith("__")])
    probe = Consumer(kafka.client_config(bootstrap, options, **{"group.id": "seqsentry-topics", "enable.auto.commit": False,
                                                                 "enable.partition.eof": True}))
    try:
        marks = {(name, p): probe.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)
                 for name in wanted for p in sorted(found[name].partitions)}
        ends = _read_ends(probe, marks, timeout)
        parts: dict[str, list[PartitionInfo]] = {name: [] for name in wanted}
        for (name, p), (low, high) in marks.items():
            parts[name].append(PartitionInfo(p, low, max(high, ends.get((name, p), high))))
        return [TopicInfo(name, parts[name]) for name in wanted]
    finally:
        probe.close()


def _read_ends(probe: Consumer, marks: dict[tuple[str, int], tuple[int, int]], timeout: float) -> dict:
    """Each non-empty partition's end, read off its last messages: (topic, partition) -> last offset + 1.

    A broker's high watermark can lag what it holds (the embedded Tansu broker reports the base
    offset of a partition's last record batch, plus one: e.g. 18,295 of 20,000 just replayed), so the
    tail is read from the reported mark to the end. On Kafka, where the mark is exact, that is
    one message per partition; a partition that does not reach its end in ``timeout`` keeps its mark.
    """
    from confluent_kafka import KafkaError

    todo = {tp: high - 1 for tp, (low, high) in marks.items() if high > low}
    if not todo:
        return {}
    probe.assign([TopicPartition(name, p, start) for (name, p), start in todo.items()])
    ends: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout
    while todo and time.monotonic() < deadline:
        for m in probe.consume(1000, timeout=0.2):
            tp = (m.topic(), m.partition())
            if m.error() is None:
                ends[tp] = m.offset() + 1
            elif m.error().code() == KafkaError._PARTITION_EOF:
                todo.pop(tp, None)
    return ends
