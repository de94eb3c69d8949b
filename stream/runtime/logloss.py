"""Detecting a broker that lost the data this detector had already read (issue 20, item 3).

An in-memory broker restarted empty, a topic deleted and recreated, a log truncated: the
consumer then reads offsets it has already read, or a group's committed offsets vanish or
lie past the log's end, and librdkafka quietly resets to ``auto.offset.reset`` and goes on.
The alerts and dead letters written for the old log may be gone with it, so it must be said,
once, in one line. Two signs, both impossible on a broker that keeps its data:

* a partition's first offset after assignment is *behind its committed offset*, or any
  later batch starts behind the one before (offsets never go back without a seek, and the
  detector never seeks its group consumer);
* a partition this process has consumed comes back assigned with *no committed offset*
  (the group's offsets are gone).

A forward gap is not a sign: transaction markers and retention skip offsets normally.

Threads: consumer thread only (the rebalance callbacks and the consume loop).
"""

from __future__ import annotations

from confluent_kafka import TopicPartition

Key = tuple[str, int]  # (topic, partition)


class LogLossWatch:
    """Per partition: the offset the log must deliver at least next, and the last one consumed."""

    def __init__(self) -> None:
        self._next: dict[Key, int] = {}  # this assignment: nothing below it may arrive
        self._consumed: dict[Key, int] = {}  # last offset consumed, kept across assignments

    def assigned(self, committed: list[TopicPartition]) -> list[str]:
        """Note the committed offsets of newly assigned partitions; what they show lost."""
        found = []
        for tp in committed:
            key = (tp.topic, tp.partition)
            if tp.offset is not None and tp.offset >= 0:
                self._next[key] = tp.offset
                continue
            self._next.pop(key, None)
            seen = self._consumed.get(key)
            if seen is not None:
                found.append(f"{tp.topic}[{tp.partition}] has no committed offset although this detector consumed "
                             f"it up to offset {seen:,}")
        return found

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Partitions gone to another consumer: their next assignment starts from its commit."""
        for tp in partitions:
            self._next.pop((tp.topic, tp.partition), None)

    def consumed(self, topic: str, partition: int, first: int, last: int) -> str | None:
        """A batch of ``topic[partition]`` from offset ``first`` to ``last``; what it shows lost, if anything."""
        key = (topic, partition)
        floor = self._next.get(key)
        self._next[key] = last + 1
        self._consumed[key] = last
        if floor is not None and first < floor:
            return f"{topic}[{partition}] delivered offset {first:,} after offset {floor - 1:,} was consumed or committed"
        return None


def loss_line(found: list[str]) -> str:
    """One line for everything one callback or batch showed lost."""
    return ("broker lost data: " + "; ".join(found) + " (restarted empty, topic recreated or log truncated). Alerts "
            "and dead letters written for what was lost may be gone too; consumption goes on with the log as it is now")
