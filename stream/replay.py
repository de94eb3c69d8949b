"""Replay a recorded log into a topic, and record a topic back to a file.

Replay keys every message by ``user_id`` (so one user's events stay in one partition,
in order) and sends JSONL lines byte for byte - malformed lines included, so the
detector's dead-letter path sees what the platform really produced. CSV and Parquet
rows are sent as contract JSON after column mapping.
"""

from __future__ import annotations

import gzip
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from stream import kafka, logs, progress
from stream.events import Reject


@dataclass
class ReplayStats:
    """What a replay sent: messages, those without a usable key (sent unkeyed), seconds."""

    sent: int = 0
    unkeyed: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


PROGRESS_LINE_S = 30.0  # without a terminal (no live bar), a progress line this often


@dataclass
class _Progress:
    """What a replay has sent so far, on the bar - refreshed within a chunk, not only between
    chunks (a paced replay can spend minutes on one) - and, without a terminal, as a line on
    stderr every :data:`PROGRESS_LINE_S`, with the event time reached when pacing."""

    bar: Any
    task: Any
    stats: ReplayStats
    t0: float
    lines: bool
    speed: float | None = None
    event_ts: int | None = None
    _bar_at: float = 0.0
    _line_at: float = 0.0

    def __post_init__(self) -> None:
        self._line_at = self.t0

    def update(self, now: float) -> None:
        rate = f"{self.stats.sent / max(now - self.t0, 1e-9):,.0f} ev/s"
        at = (f", event time {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(self.event_ts / 1000))}"
              if self.speed is not None and self.event_ts is not None else "")
        if now - self._bar_at >= 0.25:
            self._bar_at = now
            self.bar.update(self.task, completed=self.stats.sent, rate=rate + at)
        if self.lines and now - self._line_at >= PROGRESS_LINE_S:
            self._line_at = now
            pace = f" at {self.speed:g}x recorded pace" if self.speed is not None else ""
            print(f"replay: {self.stats.sent:,} events sent{pace} ({rate}{at})", file=sys.stderr, flush=True)


def _key_and_ts(record: object) -> tuple[bytes | None, int | None]:
    if not isinstance(record, dict):
        return None, None
    uid = record.get("user_id")
    key = str(uid).encode() if isinstance(uid, str | int) and not isinstance(uid, bool) and uid != "" else None
    ts = record.get("ts")
    return key, ts if isinstance(ts, int) and not isinstance(ts, bool) else None


def _contract_rejects(chunk: logs.RawChunk) -> list:
    from stream import events

    if chunk.raw is not None:
        return events.parse_batch(chunk.raw).rejects
    return events.validate_records(chunk.records).rejects


def _wait(prod: Producer, ahead_s: float) -> None:
    """Pacing: serve delivery callbacks, then sleep while the sender is ``ahead_s`` early."""
    if ahead_s > 0:
        prod.poll(0)
        time.sleep(ahead_s)


def _produce(prod: Producer, topic: str, value: bytes, key: bytes | None,
             on_delivery: Callable[[KafkaError | None, object], None]) -> None:
    while True:
        try:
            prod.produce(topic, value, key, on_delivery=on_delivery)
            return
        except BufferError:  # local queue full: let deliveries drain
            prod.poll(0.05)


def replay(
    path: Path | str,
    bootstrap: str,
    topic: str,
    *,
    spec: logs.LogSpec | None = None,
    speed: float | None = None,
    options: Mapping[str, str] | None = None,
    limit: int | None = None,
    rate: float | None = None,
    stop: threading.Event | None = None,
    show_progress: bool = False,
    tally: logs.RejectTally | None = None,
) -> ReplayStats:
    """Send a log's events to ``topic`` in file order.

    ``speed`` None sends as fast as the broker takes them; otherwise events are paced by
    their timestamps, ``speed`` times faster than recorded (2.0 = twice as fast).
    ``rate`` caps the send rate in events per second instead. ``stop`` aborts early.
    """
    if speed is not None and speed <= 0:
        raise ValueError("speed must be > 0 (or omitted for as fast as possible)")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 events/s (or omitted for as fast as possible)")
    kafka.require_topic(bootstrap, topic, options)
    prod = kafka.producer(bootstrap, options)
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    stats = ReplayStats()
    t_wall0 = time.monotonic()
    t_event0: int | None = None
    size = Path(path).stat().st_size
    with progress.bar(show_progress) as bar:
        task = bar.add_task(f"replay → {topic}", total=limit, rate="")
        shown = _Progress(bar, task, stats, t_wall0, lines=show_progress and not progress.interactive(), speed=speed)
        if show_progress and speed is not None:
            print(f"replay: pacing {path} by its event times, {speed:g}x faster than recorded", file=sys.stderr,
                  flush=True)
        for chunk in logs.iter_chunks(path, spec):
            raws = chunk.raw
            if tally is not None:  # what the detector will dead-letter, told before it is sent
                tally.add(_contract_rejects(chunk), len(chunk.records))
            for i, record in enumerate(chunk.records):
                if (limit is not None and stats.sent >= limit) or (stop is not None and stop.is_set()):
                    break
                if rate is not None:
                    _wait(prod, stats.sent / rate - (time.monotonic() - t_wall0))
                key, ts = (None, None) if isinstance(record, Reject) else _key_and_ts(record)
                value = raws[i] if raws is not None else orjson.dumps(record, default=str)
                if speed is not None and ts is not None:
                    if t_event0 is None:
                        t_event0 = ts
                    shown.event_ts = ts
                    _wait(prod, (ts - t_event0) / 1000.0 / speed - (time.monotonic() - t_wall0))
                _produce(prod, topic, value, key, on_delivery)
                stats.sent += 1
                stats.unkeyed += key is None
                if show_progress and (speed is not None or rate is not None or not stats.sent & 4095):
                    shown.update(time.monotonic())
            prod.poll(0)
            if errors:
                break
            shown.update(time.monotonic())
            if (limit is not None and stats.sent >= limit) or (stop is not None and stop.is_set()):
                break
        remaining = prod.flush(60)
        stats.seconds = time.monotonic() - t_wall0
        bar.update(task, completed=stats.sent, total=stats.sent)
    if errors or remaining:
        raise kafka.KafkaUnavailable(
            f"replay of {path} ({size} bytes) incomplete: {len(errors)} delivery errors, {remaining} undelivered; "
            f"first error: {errors[0] if errors else 'flush timed out'}"
        )
    return stats


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


def _value_line(value: bytes) -> bytes:
    """A value as one line: as it is, or, holding a newline, compact JSON (or a JSON string)."""
    if b"\n" not in value:
        return value
    try:
        return orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        return orjson.dumps(value.decode("utf-8", "replace"))


def message_line(m: Message) -> bytes:
    """A message as one JSON object: its value (parsed when it is JSON, else a string), key,
    headers (values as strings; a repeated key keeps its last value) and place in the topic."""
    raw = m.value()
    try:
        value = None if raw is None else orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = _text(raw)
    headers = {k: _text(v) for k, v in m.headers() or []}
    return orjson.dumps({"value": value, "key": _text(m.key()), "headers": headers, "partition": m.partition(),
                         "offset": m.offset()})


def record(
    bootstrap: str,
    topic: str,
    path: Path | str,
    *,
    options: Mapping[str, str] | None = None,
    max_messages: int | None = None,
    idle_timeout: float = 5.0,
    show_progress: bool = False,
    headers: bool = False,
) -> int:
    """Write every message of ``topic`` (all partitions, from the beginning) to a JSONL file.

    Stops after ``max_messages`` or when nothing arrives for ``idle_timeout`` seconds -
    not at the high watermark, which some Kafka-compatible brokers report inexactly.
    Values are written one per line as they are; a value containing a newline is
    re-serialised compactly if it is JSON, and otherwise written as a JSON string.
    With ``headers``, each line is instead a JSON object holding the value with the
    message's key, headers, partition and offset (dead letters carry their reasons there).
    """
    partitions = kafka.require_topic(bootstrap, topic, options)
    cons: Consumer = kafka.consumer(bootstrap, "seqsentry-record", options)
    cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    path = Path(path)
    n = 0
    out = gzip.open(path, "wb", compresslevel=5) if str(path).endswith(".gz") else open(path, "wb")  # noqa: SIM115
    try:
        with progress.bar(show_progress) as bar:
            task = bar.add_task(f"record ← {topic}", total=max_messages, rate="")
            last = time.monotonic()
            t0 = last
            while max_messages is None or n < max_messages:
                want = 10_000 if max_messages is None else min(10_000, max_messages - n)
                msgs = cons.consume(want, timeout=0.5)
                if not msgs:
                    if time.monotonic() - last > idle_timeout:
                        break
                    continue
                last = time.monotonic()
                lines = []
                for m in msgs:
                    if m.error():
                        if m.error().code() == KafkaError._PARTITION_EOF:
                            continue
                        raise kafka.KafkaUnavailable(f"record failed: {m.error()}")
                    lines.append(message_line(m) if headers else _value_line(m.value() or b""))
                out.write(b"\n".join(lines) + b"\n")
                n += len(lines)
                bar.update(task, completed=n, rate=f"{n / max(last - t0, 1e-9):,.0f} msg/s")
    finally:
        out.close()
        cons.close()
    return n
