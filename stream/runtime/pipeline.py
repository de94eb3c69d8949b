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

from stream import events
from stream.detector import Detector, Pending
from stream.encoding import UNKNOWN_TYPES_WARN, Vocabulary
from stream.metrics import Metrics
from stream.runtime.ratelimit import RateLimit
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


def check_clock_skew(batch: events.EventBatch, kafka_ts: np.ndarray | None,
                     max_clock_skew_ms: int | None) -> tuple[events.EventBatch, list[events.Rejected]]:
    """``batch`` without the events dated more than ``max_clock_skew_ms`` after their message's
    broker timestamp, and those events as ``bad-timestamp`` rejects.

    Event time drives a user's window order and the idle expiry of every user of the
    partition, so one event dated 2099 would make all of its user's later events
    too-late (hiding the user) and expire the others. The broker's timestamp is a clock
    the producer of one event does not control (for LogAppendTime topics not at all).
    Messages without a broker timestamp (``kafka_ts`` <= 0) and offline scoring
    (``kafka_ts`` None) are not checked. The window rebuild applies the same check, so a
    restart does not bring a refused event back.

    An event within the bound still only moves the partition's clock (session ends, idle
    expiry: ``EventBatch.clock``) as far as its broker timestamp: one producer whose clock
    runs ahead cannot end other users' sessions or expire them early. Replayed history is
    stamped by the broker after its event times, so its clock is its event time, exactly as
    offline scoring reads it.
    """
    if kafka_ts is None or not len(batch):
        return batch, []
    broker_ts = np.asarray(kafka_ts, dtype=np.int64)[batch.index]
    batch = dataclasses.replace(batch, clock=np.where(broker_ts > 0, np.minimum(batch.ts, broker_ts), batch.ts))
    if max_clock_skew_ms is None:
        return batch, []
    ahead = batch.ts - broker_ts
    bad = (broker_ts > 0) & (ahead > max_clock_skew_ms)
    if not bad.any():
        return batch, []
    rejects = [events.Rejected(int(batch.index[r]), BAD_TIMESTAMP,
                               f"{int(ahead[r])} ms ahead of the message's broker timestamp "
                               f"(limit {max_clock_skew_ms} ms, --max-clock-skew-s)") for r in np.flatnonzero(bad)]
    return batch.take(np.flatnonzero(~bad)), rejects


def parse(values: Sequence[bytes | None], max_message_bytes: int = events.DEFAULT_MAX_BYTES) -> events.ParseResult:
    """Message payloads -> valid events and contract rejects (never raises on bad input)."""
    return events.parse_batch(values, max_message_bytes)


def step(detector: Detector, store: WindowStore, parsed: events.ParseResult, *, topic: str | None = None,
         partition: int | None = None, offsets: np.ndarray | None = None, kafka_ts: np.ndarray | None = None,
         keys: Sequence[bytes | None] | None = None, metrics: Metrics | None = None,
         max_clock_skew_ms: int | None = None) -> StepResult:
    """Ingest one parsed batch of one partition into ``store``; return windows to score and dead letters.

    ``offsets``, ``kafka_ts`` and ``keys`` are indexed by input position, like the
    parsed batch's rejects and ``events.index``. With ``kafka_ts`` and ``max_clock_skew_ms``
    (the streaming runtimes pass both), an event more than ``max_clock_skew_ms`` ahead of
    its message's broker timestamp is dead-lettered (``bad-timestamp``) before it reaches
    the store (:func:`check_clock_skew`). With
    ``metrics`` the step counts consumed, valid, rejected (by reason), too-late and
    key-mismatched inputs.
    """
    batch = parsed.events
    n_in = len(batch) + len(parsed.rejects)
    batch, skewed = check_clock_skew(batch, kafka_ts, max_clock_skew_ms)
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
        metrics.events_consumed.inc(n_in)
        if ended:
            metrics.sessions_ended.inc(ended)
        metrics.events_valid.inc(len(batch))
        for r in rejects:
            metrics.events_rejected.labels(r.reason).inc()
        if late_rows:
            metrics.events_late.inc(len(late_rows))
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
