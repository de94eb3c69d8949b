"""`seqsentry topics`: list, describe and create topics on any Kafka-compatible cluster."""

from __future__ import annotations

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
    probe = Consumer(kafka.client_config(bootstrap, options, **{"group.id": "seqsentry-topics", "enable.auto.commit": False}))
    try:
        out = []
        for name in wanted:
            parts = []
            for p in sorted(found[name].partitions):
                low, high = probe.get_watermark_offsets(TopicPartition(name, p), timeout=timeout)
                parts.append(PartitionInfo(p, low, high))
            out.append(TopicInfo(name, parts))
        return out
    finally:
        probe.close()
