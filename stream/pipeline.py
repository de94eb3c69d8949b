"""The one pipeline step every runtime calls: parse -> dead letters -> ingest -> windows to score.

`seqsentry run` (stream.runtime.consumer), `seqsentry faust` (stream.faust_app) and
`seqsentry score` (stream.offline) differ only in where the bytes come from and where
the outputs go; what is a dead letter, with which reason and detail, which metrics
count it and which windows are due for scoring is decided here, once. The step neither
scores nor produces: each runtime scores the pending windows on its own thread and
delivers the dead letters to its own sink.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from stream import events
from stream.detector import Detector, Pending
from stream.encoding import UNKNOWN_TYPES_WARN, Vocabulary
from stream.metrics import Metrics
from stream.ratelimit import RateLimit
from stream.windows import WindowStore

log = logging.getLogger(__name__)
TOO_LATE = "too-late"
BAD_TIMESTAMP = "bad-timestamp"
DEFAULT_MAX_CLOCK_SKEW_MS = 3_600_000  # an hour: beyond any honest producer clock or buffering delay


@dataclass(slots=True)
class StepResult:
    """What one step over one partition's batch produced."""

    pending: list[Pending]  # windows to score, in order
    # contract rejects and future-dated events (reason "bad-timestamp") first, then too-late events
    # (reason "too-late"), each in input order
    dead_letters: list[events.Rejected]
    valid: int  # inputs that passed the contract and the clock-skew bound
    rejected: int  # inputs that broke either (each also a dead letter)
    too_late: int  # valid inputs outside the allowed lateness (each also a dead letter)
    sessions_ended: int  # windows of ended sessions among ``pending`` (scored beyond one per event)


def too_late_detail(store: WindowStore) -> str:
    """The detail of a too-late dead letter (the same text from every runtime)."""
    return f"more than {store.config.allowed_lateness_ms} ms behind the user's newest event"


def trusted_clock(timestamps: Sequence[tuple[int, int]], wall_ms: int) -> np.ndarray:
    """Per message, the latest time it can have been produced, by a clock its producer does not control.

    ``timestamps`` are confluent-kafka's ``Message.timestamp()`` pairs (type, ms); ``wall_ms``
    is the consumer's wall clock when the batch was fetched. A ``LogAppendTime`` timestamp is
    the broker's own clock: trusted as it is (and the same on every re-read, so a rebuild
    decides as the live consumer did). A ``CreateTime`` timestamp is set by the producer, so
    it only ever lowers the bound (an honest producer stamps before it sends): the bound is
    ``min(CreateTime, wall clock at receipt)``, and the wall clock alone without a timestamp.
    Nothing can have been produced after the consumer received it.
    """
    out = np.empty(len(timestamps), dtype=np.int64)
    for i, (kind, ts) in enumerate(timestamps):
        out[i] = ts if kind == TIMESTAMP_LOG_APPEND_TIME else min(ts, wall_ms) if ts > 0 else wall_ms
    return out


def check_clock_skew(batch: events.EventBatch, trusted_ts: np.ndarray | None,
                     max_clock_skew_ms: int | None) -> tuple[events.EventBatch, list[events.Rejected]]:
    """``batch`` with every event time bounded by when its message was received (by a clock its
    producer does not control), and the events dated more than ``max_clock_skew_ms`` beyond
    that as ``bad-timestamp`` rejects.

    ``trusted_ts`` (indexed by input position, see :func:`trusted_clock`) is the latest time
    each message can have been produced. Event time orders a user's window, measures
    lateness and ages every user of the partition (session ends, idle expiry), and the
    producer sets it. Unbounded, one event dated ahead makes its user's honest later events
    too late (the user hides), and one message dated 2099 (event time and CreateTime both)
    moves the partition's clock to 2099 and ends or expires every session. So, live:

    * an event dated more than ``max_clock_skew_ms`` after its bound is dead-lettered;
    * any other event dated after its bound is taken at its bound: nothing happens after it
      is received. An honest event that follows it is then behind it by no more than its
      own delivery time, so it is placed (late events within the allowed lateness are
      inserted in place), never too late; and the partition's clock (session ends, idle
      expiry) never runs ahead of the trusted clock, whatever any producer's clock says.

    Replayed history was produced before it is received, so none of this changes it: its
    times are exactly what offline scoring (``trusted_ts`` None: no clock to trust, nothing
    bounded or checked) reads. The window rebuild applies the same bounds, so a restart does
    not bring a refused event back.
    """
    if trusted_ts is None or not len(batch):
        return batch, []
    bound = np.asarray(trusted_ts, dtype=np.int64)[batch.index]
    rejects: list[events.Rejected] = []
    if max_clock_skew_ms is not None:
        ahead = batch.ts - bound
        bad = ahead > max_clock_skew_ms
        if bad.any():
            rejects = [events.Rejected(int(batch.index[r]), BAD_TIMESTAMP,
                                       f"{int(ahead[r])} ms ahead of the time it was received "
                                       f"(limit {max_clock_skew_ms} ms, --max-clock-skew-s)")
                       for r in np.flatnonzero(bad)]
            keep = np.flatnonzero(~bad)
            batch, bound = batch.take(keep), bound[keep]
    return dataclasses.replace(batch, ts=np.minimum(batch.ts, bound)), rejects


def parse(values: Sequence[bytes | None], max_message_bytes: int = events.DEFAULT_MAX_BYTES) -> events.ParseResult:
    """Message payloads -> valid events and contract rejects (never raises on bad input)."""
    return events.parse_batch(values, max_message_bytes)


def step(detector: Detector, store: WindowStore, parsed: events.ParseResult, *, topic: str | None = None,
         partition: int | None = None, offsets: np.ndarray | None = None, kafka_ts: np.ndarray | None = None,
         keys: Sequence[bytes | None] | None = None, metrics: Metrics | None = None,
         trusted_ts: np.ndarray | None = None, max_clock_skew_ms: int | None = None) -> StepResult:
    """Ingest one parsed batch of one partition into ``store``; return windows to score and dead letters.

    ``offsets``, ``kafka_ts``, ``trusted_ts`` and ``keys`` are indexed by input position, like
    the parsed batch's rejects and ``events.index``. With ``trusted_ts`` (the streaming
    runtimes pass :func:`trusted_clock`), event times are bounded by it and an event more
    than ``max_clock_skew_ms`` ahead of it is dead-lettered (``bad-timestamp``) before it
    reaches the store (:func:`check_clock_skew`). With
    ``metrics`` the step counts consumed, valid, rejected (by reason), too-late and
    key-mismatched inputs.
    """
    batch = parsed.events
    n_in = len(batch) + len(parsed.rejects)
    batch, skewed = check_clock_skew(batch, trusted_ts, max_clock_skew_ms)
    rejects = sorted([*parsed.rejects, *skewed], key=lambda r: r.index)
    dead = list(rejects)
    pending, too_late = detector.ingest(store, batch, topic=topic, partition=partition, offsets=offsets,
                                        kafka_ts=kafka_ts)
    late_rows = too_late.tolist()
    if late_rows:
        detail = too_late_detail(store)
        dead += [events.Rejected(int(batch.index[row]), TOO_LATE, detail) for row in late_rows]
    ended = sum(len(p) for p in pending if p.closing)
    if metrics is not None:
        metrics.count_consumed(n_in)
        if ended:
            metrics.sessions_ended.inc(ended)
        metrics.events_valid.inc(len(batch))
        metrics.count_rejected([r.reason for r in rejects])
        if late_rows:
            metrics.count_late(len(late_rows))
        if keys is not None:  # a producer keying by something else breaks per-user partitioning
            mismatched = sum(keys[i] != u.encode() for i, u in zip(batch.index.tolist(), batch.user_id, strict=True))
            if mismatched:
                metrics.key_mismatch.inc(mismatched)
    if topic is not None:
        warn_on_reject_spike(topic, n_in, rejects)
        warn_on_unknown_types(topic, batch, detector.scorer.artifact.vocab)
    return StepResult(pending, dead, valid=len(batch), rejected=len(rejects), too_late=len(late_rows),
                      sessions_ended=ended)


REJECT_SPIKE_SHARE = 0.5  # a batch where more than this share breaks the contract is a producer problem
REJECT_SPIKE_MIN = 20  # ... when it holds at least this many messages (a lone bad message is not a spike)
_spikes = RateLimit(interval_s=30.0)


_unknown = RateLimit(interval_s=30.0)


def warn_on_unknown_types(topic: str, batch: events.EventBatch, vocab: Vocabulary) -> None:
    """Log (at most once per topic every 30 s) when many of a batch's events have types the
    model never saw: they all score as the unknown type (a zero-label model alerts on each),
    usually because a producer renamed its events."""
    if len(batch) < REJECT_SPIKE_MIN:
        return
    counts = Counter(batch.type)  # per distinct type, not per event
    unknown = {t: c for t, c in counts.items() if vocab.type_index(t) == 0}
    n = sum(unknown.values())
    if n <= UNKNOWN_TYPES_WARN * len(batch):
        return
    held = _unknown.allow(topic)
    if held is None:
        return
    log.warning("topic %s: %d of %d events in a batch have event types the model never saw in training (e.g. %s); "
                "they score as <unk> - rename them to the model's types at the producer, or retrain%s", topic, n,
                len(batch), ", ".join(repr(t[:40]) for t in sorted(unknown, key=unknown.get, reverse=True)[:3]),
                f" ({held} more such batches not shown)" if held else "")


def warn_on_reject_spike(topic: str, n_in: int, rejects: Sequence[events.Rejected]) -> None:
    """Log (at most once per topic every 30 s) when most of a batch was refused: a producer that
    changed its format or clock is otherwise only visible as a dead-letter metric."""
    if n_in < REJECT_SPIKE_MIN or len(rejects) <= REJECT_SPIKE_SHARE * n_in:
        return
    held = _spikes.allow(topic)
    if held is None:
        return
    reasons = Counter(r.reason for r in rejects)
    top, _ = reasons.most_common(1)[0]
    example = next(r.detail for r in rejects if r.reason == top)[:160]
    log.warning("topic %s: %d of %d messages in a batch broke the event contract (mostly %s, e.g. %s); they are in "
                "the dead-letter topic - check the producer%s", topic, len(rejects), n_in, top, example,
                f" ({held} more such batches not shown)" if held else "")
