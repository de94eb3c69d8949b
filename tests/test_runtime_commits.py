"""Commit tracking without a broker: tickets, the completed prefix, failures, exactly-once."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream.metrics import Metrics
from stream.runtime.commits import CommitTracker, DetectorFailed, Ticket, to_commit


class RecordingConsumer:
    """Stands in for the consumer: records what would have been committed."""

    def __init__(self) -> None:
        self.commits: list[dict[tuple[str, int], int]] = []

    def commit(self, *, offsets, asynchronous):
        assert asynchronous is False  # commits are synchronous: a commit that may fail silently is no commit
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})


def tracker(**kw) -> CommitTracker:
    return CommitTracker(Metrics(), **kw)


def test_a_new_ticket_is_held_open_by_the_consumer_until_it_hands_everything_on():
    t = Ticket({("ev", 0): 9})
    assert not t.complete
    t.done()
    assert t.complete


def test_a_ticket_completes_only_when_every_unit_of_work_is_done():
    t = Ticket({("ev", 0): 9})
    t.add(2)  # e.g. a window for inference and a dead letter
    t.done()  # the consumer's own hold
    t.done()
    assert not t.complete
    t.done()
    assert t.complete


def test_a_failed_unit_completes_the_ticket_but_marks_it_failed():
    t = Ticket({})
    t.add()
    t.done()
    t.fail("delivery to alerts failed: timed out")
    assert t.complete and t.error == "delivery to alerts failed: timed out"


def test_kafka_commits_the_offset_after_the_last_one_done():
    [tp] = to_commit({("ev", 3): 41})
    assert (tp.topic, tp.partition, tp.offset) == ("ev", 3, 42)


def test_only_the_completed_prefix_of_tickets_is_committed():
    c, consumer = tracker(), RecordingConsumer()
    first, second, third = c.open({("ev", 0): 10}), c.open({("ev", 0): 20}), c.open({("ev", 0): 30})
    first.done()
    third.done()  # done, but behind the unfinished second: committing it would skip the second's work
    c.commit(consumer)
    assert consumer.commits == [{("ev", 0): 11}]
    assert c.outstanding == 2
    second.done()
    c.commit(consumer)
    assert consumer.commits[-1] == {("ev", 0): 31}
    assert c.outstanding == 0


def test_a_prefix_spanning_partitions_commits_each_partition_at_its_newest_offset():
    c, consumer = tracker(), RecordingConsumer()
    c.open({("ev", 0): 5, ("ev", 1): 7}).done()
    c.open({("ev", 1): 9}).done()
    c.commit(consumer)
    assert consumer.commits == [{("ev", 0): 6, ("ev", 1): 10}]


def test_nothing_is_committed_while_the_oldest_ticket_is_open():
    c, consumer = tracker(), RecordingConsumer()
    c.open({("ev", 0): 1})
    c.open({("ev", 0): 2}).done()
    c.commit(consumer)
    assert consumer.commits == []


def test_each_commit_is_counted():
    c, consumer = tracker(), RecordingConsumer()
    c.open({("ev", 0): 1}).done()
    c.commit(consumer)
    assert c.metrics.registry.get_sample_value("seqsentry_offset_commits_total") == 1


def test_the_commit_stops_the_detector_at_a_failed_ticket_naming_the_root_cause():
    c = tracker(fatal_reason=lambda error: f"root cause behind {error}")
    c.open({("ev", 0): 1}).fail("delivery to alerts failed")
    with pytest.raises(DetectorFailed, match="cannot commit past failed work: root cause behind delivery"):
        c.commit(RecordingConsumer())


def test_commits_are_deferred_to_the_commit_interval_unless_forced():
    c = tracker(commit_interval_ms=60_000)
    assert c.due(force=False)  # the first is never deferred
    assert not c.due(force=False)
    assert c.due(force=True)  # revoke and stop commit at once


class FakeTransactionalProducer:
    def __init__(self, unacked: int = 0) -> None:
        self.unacked = unacked
        self.calls: list[str] = []
        self.offsets = None

    def flush(self, timeout):
        return self.unacked

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        self.calls.append("send_offsets")
        self.offsets = {(tp.topic, tp.partition): tp.offset for tp in offsets}

    def commit_transaction(self, timeout):
        self.calls.append("commit")

    def begin_transaction(self):
        self.calls.append("begin")


class GroupConsumer:
    def consumer_group_metadata(self):
        return "group-metadata"


def test_exactly_once_commits_the_outputs_and_every_offset_in_one_transaction_then_opens_the_next():
    c, producer = tracker(), FakeTransactionalProducer()
    c.open({("ev", 0): 4}).done()
    c.open({("ev", 1): 8}).done()
    c.commit_transaction(producer, GroupConsumer(), drain=lambda timeout: True, worker_error=lambda: None)
    assert producer.calls == ["send_offsets", "commit", "begin"]
    assert producer.offsets == {("ev", 0): 5, ("ev", 1): 9}
    assert c.outstanding == 0


def test_exactly_once_with_nothing_consumed_commits_nothing():
    producer = FakeTransactionalProducer()
    tracker().commit_transaction(producer, GroupConsumer(), drain=lambda timeout: True, worker_error=lambda: None)
    assert producer.calls == []


def test_exactly_once_refuses_to_commit_when_the_worker_does_not_drain():
    c, producer = tracker(), FakeTransactionalProducer()
    c.open({("ev", 0): 4}).done()
    with pytest.raises(DetectorFailed, match="transaction not committed"):
        c.commit_transaction(producer, GroupConsumer(), drain=lambda timeout: False, worker_error=lambda: None)
    assert producer.calls == []


def test_exactly_once_refuses_to_commit_unacknowledged_outputs():
    c, producer = tracker(), FakeTransactionalProducer(unacked=3)
    c.open({("ev", 0): 4}).done()
    with pytest.raises(DetectorFailed, match="not acknowledged"):
        c.commit_transaction(producer, GroupConsumer(), drain=lambda timeout: True, worker_error=lambda: None,
                             timeout=0.2)
    assert producer.calls == []


def test_exactly_once_stops_at_once_when_the_producer_is_fenced_while_flushing():
    fenced: list[str] = []

    class FencedWhileFlushing(FakeTransactionalProducer):
        def flush(self, timeout):  # the error callback runs inside flush; the message never goes
            fenced.append("PRODUCER_FENCED: fenced by a newer instance")
            return 1

    c = tracker(fatal=lambda: fenced[0] if fenced else None)
    c.open({("ev", 0): 4}).done()
    t0 = time.monotonic()
    with pytest.raises(DetectorFailed, match="fenced"):
        c.commit_transaction(FencedWhileFlushing(), GroupConsumer(), drain=lambda timeout: True,
                             worker_error=lambda: None, timeout=60)
    assert time.monotonic() - t0 < 5  # not the whole commit timeout


def test_exactly_once_refuses_to_commit_incomplete_work():
    c, producer = tracker(), FakeTransactionalProducer()
    c.open({("ev", 0): 4})  # still held: the worker claims to have drained, yet work is missing
    with pytest.raises(DetectorFailed, match="work incomplete"):
        c.commit_transaction(producer, GroupConsumer(), drain=lambda timeout: True, worker_error=lambda: None)
    assert producer.calls == []


def test_exactly_once_work_stays_outstanding_until_its_transaction_has_committed():
    c = tracker()
    seen: list[int] = []

    class Watching(FakeTransactionalProducer):
        def commit_transaction(self, timeout):  # what another thread reading progress sees meanwhile
            seen.append(c.outstanding)
            super().commit_transaction(timeout)

    c.open({("ev", 0): 4}).done()
    c.open({("ev", 1): 8}).done()
    c.commit_transaction(Watching(), GroupConsumer(), drain=lambda timeout: True, worker_error=lambda: None)
    assert (seen, c.outstanding) == ([2], 0)


def test_exactly_once_keeps_the_work_outstanding_when_the_commit_fails():
    class Refused(FakeTransactionalProducer):
        def commit_transaction(self, timeout):
            raise KafkaException(KafkaError(KafkaError._FENCED))

    c = tracker()
    c.open({("ev", 0): 4}).done()
    with pytest.raises(DetectorFailed, match="transaction not committed"):
        c.commit_transaction(Refused(), GroupConsumer(), drain=lambda timeout: True, worker_error=lambda: None)
    assert c.outstanding == 1
