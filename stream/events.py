"""Event contract: bytes or records -> validated, columnar event batches.

Every path into seqsentry (the live consumer, offline scoring, training datasets, log
readers) goes through :func:`validate_record`, so a record accepted or rejected here is
accepted or rejected everywhere. Rejects never raise: they come back with a
machine-readable reason so the caller can dead-letter them.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

#: Reasons a message can be rejected; stable strings, used as metric labels and DLQ headers.
REJECT_REASONS: tuple[str, ...] = (
    "too-large",  # payload bigger than the configured limit (checked before decoding)
    "bad-encoding",  # not valid UTF-8
    "not-json",  # not parseable as JSON (includes nesting too deep)
    "not-object",  # valid JSON but not an object
    "missing-field",  # user_id, ts or type absent (or null)
    "bad-type",  # a field has the wrong JSON type
    "bad-timestamp",  # unparseable, non-finite or outside [2000-01-01, 2100-01-01)
    "bad-value",  # right type, impossible value (empty id, negative price, label not 0/1, ...)
)

DEFAULT_MAX_BYTES = 64 * 1024
MAX_FIELD_CHARS = 256  # ids and types longer than this are hostile or broken, not behaviour
TS_MIN_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z

_ID_FIELDS = ("event_id", "item_id", "category_id", "session_id", "device_id", "ip")


class Reject(Exception):
    """A record that breaks the contract; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Event:
    """One validated behaviour event. ``ts`` is epoch milliseconds (UTC)."""

    user_id: str
    ts: int
    type: str
    event_id: str | None = None
    item_id: str | None = None
    category_id: str | None = None
    price: float | None = None
    quantity: int | None = None
    session_id: str | None = None
    device_id: str | None = None
    ip: str | None = None
    label: int | None = None
    attack: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The event as a contract record (absent optional fields omitted)."""
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


def _parse_ts(value: Any) -> int:
    if isinstance(value, bool):
        raise Reject("bad-type", "ts must be epoch ms or ISO-8601, got bool")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Reject("bad-timestamp", f"ts is not finite: {value!r}")
        ms = int(value)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise Reject("bad-timestamp", f"ts is not ISO-8601: {value[:40]!r}") from None
        if dt.tzinfo is None:  # naive timestamps are read as UTC, never as local time
            dt = dt.replace(tzinfo=UTC)
        ms = int(dt.timestamp() * 1000)
    else:
        raise Reject("bad-type", f"ts must be epoch ms or ISO-8601, got {type(value).__name__}")
    if not TS_MIN_MS <= ms < TS_MAX_MS:
        raise Reject("bad-timestamp", f"ts {ms} outside [2000-01-01, 2100-01-01) in epoch ms")
    return ms


def _parse_id(rec: dict[str, Any], name: str, required: bool) -> str | None:
    value = rec.get(name)
    if value is None:
        if required:
            raise Reject("missing-field", f"{name} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Reject("bad-type", f"{name} must be a string, got {type(value).__name__}")
    text = value if isinstance(value, str) else str(value)
    if required and not text:
        raise Reject("bad-value", f"{name} is empty")
    if len(text) > MAX_FIELD_CHARS:
        raise Reject("bad-value", f"{name} longer than {MAX_FIELD_CHARS} characters")
    return text


def validate_record(rec: Any) -> Event:
    """Validate one decoded record against the contract; raise :class:`Reject` if it breaks it."""
    if not isinstance(rec, dict):
        raise Reject("not-object", f"expected a JSON object, got {type(rec).__name__}")
    user_id = _parse_id(rec, "user_id", True)
    if rec.get("ts") is None:
        raise Reject("missing-field", "ts is required")
    ts = _parse_ts(rec["ts"])
    etype = rec.get("type")
    if etype is None:
        raise Reject("missing-field", "type is required")
    if not isinstance(etype, str):
        raise Reject("bad-type", f"type must be a string, got {type(etype).__name__}")
    if not etype or len(etype) > MAX_FIELD_CHARS:
        raise Reject("bad-value", "type must be 1..256 characters")

    price = rec.get("price")
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise Reject("bad-type", f"price must be a number, got {type(price).__name__}")
        price = float(price)
        if not math.isfinite(price) or price < 0:
            raise Reject("bad-value", f"price must be finite and >= 0, got {price!r}")
    quantity = rec.get("quantity")
    if quantity is not None and (isinstance(quantity, bool) or not isinstance(quantity, int)):
        raise Reject("bad-type", f"quantity must be an integer, got {type(quantity).__name__}")
    label = rec.get("label")
    if label is not None:
        if isinstance(label, bool):
            label = int(label)
        if not isinstance(label, int):
            raise Reject("bad-type", f"label must be 0 or 1, got {type(label).__name__}")
        if label not in (0, 1):
            raise Reject("bad-value", f"label must be 0 or 1, got {label}")
    attack = rec.get("attack")
    if attack is not None and not isinstance(attack, str):
        raise Reject("bad-type", f"attack must be a string, got {type(attack).__name__}")
    ids = {name: _parse_id(rec, name, False) for name in _ID_FIELDS}
    return Event(user_id, ts, etype, price=price, quantity=quantity, label=label, attack=attack or None, **ids)  # type: ignore[arg-type]


def decode(payload: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode one message payload to a JSON value; raise :class:`Reject` on failure."""
    if len(payload) > max_bytes:
        raise Reject("too-large", f"{len(payload)} bytes > limit {max_bytes}")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "utf-8" in msg.lower() or "surrogate" in msg.lower():
            raise Reject("bad-encoding", msg[:200]) from None
        raise Reject("not-json", msg[:200]) from None


def parse_event(payload: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Event:
    """Parse and validate one message; raise :class:`Reject` on failure."""
    return validate_record(decode(payload, max_bytes))


def item_hash(item_id: str | None) -> int:
    """Stable 32-bit hash of an item id (0 = no item); stable across processes, unlike hash()."""
    if item_id is None:
        return 0
    return zlib.crc32(item_id.encode()) or 1


@dataclass(slots=True)
class EventBatch:
    """Columnar batch of valid events. ``index`` maps each row back to its input position."""

    user_id: list[str]
    ts: np.ndarray  # int64 epoch ms
    type: list[str]
    item: np.ndarray  # uint32 item hash, 0 = absent
    price: np.ndarray  # float32, NaN = absent
    label: np.ndarray  # int8, -1 = unknown
    index: np.ndarray  # int64 position in the input sequence
    events: list[Event] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user_id)

    @classmethod
    def from_events(cls, events: Sequence[Event], index: Sequence[int] | None = None) -> EventBatch:
        """Build the columnar view of ``events``."""
        n = len(events)
        return cls(
            user_id=[e.user_id for e in events],
            ts=np.fromiter((e.ts for e in events), dtype=np.int64, count=n),
            type=[e.type for e in events],
            item=np.fromiter((item_hash(e.item_id) for e in events), dtype=np.uint32, count=n),
            price=np.fromiter((np.nan if e.price is None else e.price for e in events), dtype=np.float32, count=n),
            label=np.fromiter((-1 if e.label is None else e.label for e in events), dtype=np.int8, count=n),
            index=np.arange(n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64),
            events=list(events),
        )

    def take(self, rows: np.ndarray) -> EventBatch:
        """Sub-batch with the given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return EventBatch(
            user_id=[self.user_id[i] for i in rows],
            ts=self.ts[rows],
            type=[self.type[i] for i in rows],
            item=self.item[rows],
            price=self.price[rows],
            label=self.label[rows],
            index=self.index[rows],
            events=[self.events[i] for i in rows],
        )


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that broke the contract: its input position, reason and a human detail."""

    index: int
    reason: str
    detail: str


@dataclass(slots=True)
class ParseResult:
    events: EventBatch
    rejects: list[Rejected]


def parse_batch(payloads: Sequence[bytes | None], max_bytes: int = DEFAULT_MAX_BYTES) -> ParseResult:
    """Parse a batch of message payloads (the hot path); never raises on bad input."""
    good: list[Event] = []
    good_idx: list[int] = []
    rejects: list[Rejected] = []
    for i, payload in enumerate(payloads):
        try:
            if payload is None:
                raise Reject("not-json", "empty (null) message value")
            good.append(validate_record(decode(payload, max_bytes)))
            good_idx.append(i)
        except Reject as r:
            rejects.append(Rejected(i, r.reason, r.detail))
    return ParseResult(EventBatch.from_events(good, good_idx), rejects)


def validate_records(records: Iterable[Any]) -> ParseResult:
    """Validate already-decoded records (log readers); same rules as :func:`parse_batch`."""
    good: list[Event] = []
    good_idx: list[int] = []
    rejects: list[Rejected] = []
    for i, rec in enumerate(records):
        try:
            good.append(validate_record(rec))
            good_idx.append(i)
        except Reject as r:
            rejects.append(Rejected(i, r.reason, r.detail))
    return ParseResult(EventBatch.from_events(good, good_idx), rejects)


def encode_event(event: Event) -> bytes:
    """Serialise an event as a contract JSON message."""
    return orjson.dumps(event.to_record())
