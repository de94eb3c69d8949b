"""Commit tracking: which input offsets are safe to commit, and exactly-once transactions.

At-least-once (default): each consumed batch gets a :class:`Ticket` counting its
outstanding work - windows waiting for inference, alerts and dead letters waiting for
the broker's ack. Offsets are committed only for the *prefix* of tickets whose work is
entirely done, so a crash at any point replays, never skips. A failed ticket stops the
detector at the commit: committing past it would lose its work.

Exactly-once (``exactly_once``): the producer is transactional instead; every commit
interval the worker drains and the outputs plus the offsets they cover commit as one
transaction, so read_committed readers of the alert topic see each alert once.

Threads: tickets are opened, committed and dropped on the consumer thread; ``add``,
``done`` and ``fail`` are called from the consumer, the inference worker and the
producer's delivery callbacks, under the ticket's lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import KafkaException, TopicPartition

from stream.errors import SeqsentryError
from stream.metrics import Metrics

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> last offset consumed
FLUSH_SLICE_S = 0.5  # exactly-once: how often a transaction's flush looks for a fatal producer error


class DetectorFailed(SeqsentryError):
    """The detector stopped because continuing could lose or duplicate work; a restart resumes safely."""


class Ticket:
    """Outstanding work of one consumed batch; its offsets may be committed when it reaches 0."""

    def __init__(self, offsets: Offsets) -> None:
        self.offsets = offsets
        self._pending = 1  # held by the consumer until it has handed everything on
        self._lock = threading.Lock()
        self.error: str | None = None

    def add(self, n: int = 1) -> None:
        """``n`` more units of work hang on this batch."""
        with self._lock:
            self._pending += n

    def done(self, n: int = 1) -> None:
        """``n`` units of work finished."""
        with self._lock:
            self._pending -= n

    def fail(self, reason: str) -> None:
        """A unit of work finished unsuccessfully: the batch may never be committed."""
        self.error = reason
        self.done()

    @property
    def complete(self) -> bool:
        return self._pending == 0


class _Committer(Protocol):  # the consumer, as far as commits go
    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> object: ...


def to_commit(offsets: Offsets) -> list[TopicPartition]:
    """Kafka commits the *next* offset to read: one past the last one done."""
    return [TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()]


class CommitTracker:
    """The open tickets, oldest first, and the rule for committing them."""

    def __init__(self, metrics: Metrics, *, commit_interval_ms: float = 200.0,
                 fatal_reason: Callable[[str | BaseException | None], str] = str,
                 fatal: Callable[[], str | None] = lambda: None) -> None:
        self.metrics = metrics
        self.commit_interval_s = commit_interval_ms / 1000
        self.fatal_reason = fatal_reason  # names the root cause of a failed ticket (e.g. fencing)
        self.fatal = fatal  # a fatal producer error seen so far (set by its error callback), or None
        self._tickets: deque[Ticket] = deque()
        self._last_commit = 0.0
        # last time a ticket completed or none was open: liveness fails when work waits and none completes
        self.progress_at = time.monotonic()

    def open(self, offsets: Offsets) -> Ticket:
        """A ticket for a batch just consumed (holds itself open until :meth:`Ticket.done`)."""
        ticket = Ticket(offsets)
        self._tickets.append(ticket)
        return ticket

    @property
    def outstanding(self) -> int:
        """Batches consumed but not yet committed."""
        return len(self._tickets)

    def due(self, force: bool = True) -> bool:
        """Whether to commit now. A synchronous commit costs a broker round trip; paying it every
        few-ms loop would take the consumer thread's time from fetching. Deferring only widens replay."""
        now = time.monotonic()
        if not force and now - self._last_commit < self.commit_interval_s:
            return False
        self._last_commit = now
        return True

    def take_completed(self) -> Offsets:
        """Drop the completed prefix of tickets; the offsets it covers. Raises on a failed ticket."""
        done: Offsets = {}
        while self._tickets and self._tickets[0].complete:
            t = self._tickets.popleft()
            if t.error:
                raise DetectorFailed(f"cannot commit past failed work: {self.fatal_reason(t.error)}")
            done.update(t.offsets)
        if done or not self._tickets:
            self.progress_at = time.monotonic()
        return done

    def commit(self, consumer: _Committer) -> None:
        """At-least-once: commit the completed prefix, synchronously."""
        done = self.take_completed()
        if done:
            consumer.commit(offsets=to_commit(done), asynchronous=False)
            self.metrics.commits.inc()

    def all_offsets(self) -> Offsets:
        """Exactly-once: the offsets every ticket covers, which must all be complete (the worker
        drained first). The tickets stay outstanding until their transaction has committed, so
        nobody reading ``outstanding`` sees work as committed while the commit is in flight."""
        done: Offsets = {}
        for t in self._tickets:
            if t.error or not t.complete:
                raise DetectorFailed(f"transaction not committed: {self.fatal_reason(t.error or 'work incomplete')}")
            done.update(t.offsets)
        return done

    def commit_transaction(self, producer: object, consumer: object, drain: Callable[[float], bool],
                           worker_error: Callable[[], BaseException | None], timeout: float = 60.0) -> None:
        """Exactly-once: commit every output so far together with the offsets they cover.

        A transaction may hold only finished work, so consumption waits while the worker
        drains; that pause, once per commit interval, is the price of exactly-once. Any
        failure stops the detector: its open transaction is aborted (by the broker, or by
        the restarted instance fencing it) and the restart resumes from the last commit.
        """
        if not self._tickets:
            return
        if not drain(timeout):
            raise DetectorFailed(f"transaction not committed: {self.fatal_reason(worker_error())}")
        # flushed in slices: a fenced producer's error callback runs inside flush, but flush itself
        # may wait out the whole timeout for messages that can never be delivered
        deadline = time.monotonic() + timeout
        while producer.flush(min(FLUSH_SLICE_S, max(deadline - time.monotonic(), 0.0))):  # type: ignore[attr-defined]
            if (fatal := self.fatal()) is not None:
                raise DetectorFailed(f"transaction not committed: {fatal}")
            if time.monotonic() >= deadline:
                raise DetectorFailed("transaction not committed: alerts not acknowledged within the commit timeout")
        done = self.all_offsets()
        try:
            producer.send_offsets_to_transaction(to_commit(done), consumer.consumer_group_metadata(),  # type: ignore[attr-defined]
                                                 timeout)
            producer.commit_transaction(timeout)  # type: ignore[attr-defined]
        except KafkaException as exc:
            raise DetectorFailed(f"transaction not committed ({exc.args[0].str() if exc.args else exc}); "
                                 "the restart resumes from the last committed transaction") from None
        self._tickets.clear()
        self.progress_at = time.monotonic()
        try:
            producer.begin_transaction()  # type: ignore[attr-defined]
        except KafkaException as exc:
            raise DetectorFailed(f"cannot begin the next transaction ({exc.args[0].str() if exc.args else exc}); "
                                 "the restart resumes from the last committed transaction") from None
        self.metrics.commits.inc()
