"""Event contract: bytes or records -> validated, columnar event batches.

Every path into seqsentry (the live consumer, offline scoring, training datasets, log
readers) goes through :func:`validate_record`, so a record accepted or rejected here is
accepted or rejected everywhere. Rejects never raise: they come back with a
machine-readable reason so the caller can dead-letter them.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import numpy as np
from msgspec import Meta

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


_Str = Annotated[str, Meta(min_length=1, max_length=MAX_FIELD_CHARS)]
_Opt = Annotated[str, Meta(max_length=MAX_FIELD_CHARS)] | int | None


class Event(msgspec.Struct, gc=False):
    """One validated behaviour event. ``ts`` is epoch milliseconds (UTC).

    The type annotations *are* the contract: msgspec checks them in C while decoding,
    which is ~10x faster than decoding to dicts and checking in Python (bench/parse.py).
    After :func:`parse_event`/:func:`validate_record`, ids are ``str`` and ``ts`` is ``int``.
    """

    user_id: _Str | int
    ts: Annotated[int, Meta(ge=TS_MIN_MS, lt=TS_MAX_MS)] | str
    type: _Str
    event_id: _Opt = None
    item_id: _Opt = None
    category_id: _Opt = None
    price: Annotated[float, Meta(ge=0, le=1e15)] | None = None  # the bound also refuses inf
    quantity: int | None = None
    session_id: _Opt = None
    device_id: _Opt = None
    ip: _Opt = None
    label: Annotated[int, Meta(ge=0, le=1)] | None = None
    attack: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The event as a contract record (absent optional fields omitted)."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


_decoder = msgspec.json.Decoder(Event)
_REQUIRED = ("$.user_id", "$.ts", "$.type")


def _reject_from(exc: Exception, payload: bytes | None = None) -> Reject:
    """Map msgspec's error onto a contract reason (only ever on the error path)."""
    msg = str(exc)
    if isinstance(exc, RecursionError):
        return Reject("not-json", "nesting too deep")
    if not isinstance(exc, msgspec.ValidationError):  # (ValidationError subclasses DecodeError)
        if payload is not None:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError as u:
                return Reject("bad-encoding", f"invalid UTF-8 at byte {u.start}")
        return Reject("not-json", msg[:200])
    at = msg.rpartition(" - at `")[2].rstrip("`") if " - at `" in msg else ""
    if msg.startswith("Object missing required field"):
        return Reject("missing-field", msg)
    if at in _REQUIRED and msg.endswith(f"got `null` - at `{at}`"):
        return Reject("missing-field", f"{at[2:]} is required")
    if not at:
        return Reject("not-object", msg)
    if at == "$.ts" and "got `" not in msg:
        return Reject("bad-timestamp", f"{msg}; ts is epoch ms in [2000-01-01, 2100-01-01) or ISO-8601")
    if "got `" in msg:
        return Reject("bad-type", msg)
    return Reject("bad-value", msg)


def _normalise(e: Event) -> Event:
    """ISO timestamps -> epoch ms, integer ids -> strings."""
    if e.ts.__class__ is str:
        e.ts = _parse_iso(e.ts)  # type: ignore[arg-type]
    if e.user_id.__class__ is int:
        e.user_id = _int_id("user_id", e.user_id)  # type: ignore[arg-type]
    for name in _ID_FIELDS:
        if getattr(e, name).__class__ is int:
            setattr(e, name, _int_id(name, getattr(e, name)))
    return e


def _int_id(name: str, value: int) -> str:
    """An integer id as a string, held to the same length bound as string ids."""
    # str() of a huge int is itself slow (and refused past 4,300 digits): compare first
    digits = len(str(value)) if abs(value) < 10**MAX_FIELD_CHARS else MAX_FIELD_CHARS + 1
    if digits > MAX_FIELD_CHARS:
        raise Reject("bad-value", f"{name} has more than {MAX_FIELD_CHARS} digits")
    return str(value)


def _parse_iso(value: str) -> int:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise Reject("bad-timestamp", f"ts is not ISO-8601: {value[:40]!r}") from None
    if dt.tzinfo is None:  # naive timestamps are read as UTC, never as local time
        dt = dt.replace(tzinfo=UTC)
    ms = int(dt.timestamp() * 1000)
    if not TS_MIN_MS <= ms < TS_MAX_MS:
        raise Reject("bad-timestamp", f"ts {value[:40]!r} outside [2000-01-01, 2100-01-01)")
    return ms


def parse_event(payload: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Event:
    """Parse and validate one message; raise :class:`Reject` on failure."""
    if len(payload) > max_bytes:
        raise Reject("too-large", f"{len(payload)} bytes > limit {max_bytes}")
    try:
        return _normalise(_decoder.decode(payload))
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise _reject_from(exc, payload) from None


def validate_record(rec: Any) -> Event:
    """Validate one already-decoded record (log readers); same rules as :func:`parse_event`."""
    try:
        return _normalise(msgspec.convert(rec, Event))
    except (msgspec.ValidationError, RecursionError) as exc:
        raise _reject_from(exc) from None


def decode(payload: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode one payload to a plain JSON value (no contract checks); raise :class:`Reject`."""
    if len(payload) > max_bytes:
        raise Reject("too-large", f"{len(payload)} bytes > limit {max_bytes}")
    try:
        return msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _reject_from(exc, payload) from None


def item_hash(item_id: str | int | None) -> int:
    """Stable 32-bit hash of an item id (0 = no item); stable across processes, unlike hash()."""
    if item_id is None:
        return 0
    return zlib.crc32(str(item_id).encode()) or 1


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
    #: int64 partition clock per event, where it differs from event time; None = event time (live,
    #: event times are already bounded by when their messages were received, by a clock their
    #: producers do not control: runtime.pipeline.check_clock_skew). Drives session ends and idle expiry.
    clock: np.ndarray | None = None

    @property
    def clock_ts(self) -> np.ndarray:
        """What each event tells the partition's clock: ``clock`` when set, else its event time."""
        return self.ts if self.clock is None else self.clock

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
            events=[self.events[i] for i in rows] if self.events else [],
            clock=None if self.clock is None else self.clock[rows],
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


def _collect(items: Iterable[Any], parse: Callable[[Any], Event]) -> ParseResult:
    """Run ``parse`` over items; gather events with their positions and rejects with reasons."""
    good: list[Event] = []
    good_idx: list[int] = []
    rejects: list[Rejected] = []
    for i, item in enumerate(items):
        try:
            good.append(parse(item))
            good_idx.append(i)
        except Reject as r:
            rejects.append(Rejected(i, r.reason, r.detail))
    return ParseResult(EventBatch.from_events(good, good_idx), rejects)


def parse_batch(payloads: Sequence[bytes | None], max_bytes: int = DEFAULT_MAX_BYTES) -> ParseResult:
    """Parse a batch of message payloads (the hot path); never raises on bad input."""

    def parse(payload: bytes | None) -> Event:
        if payload is None:
            raise Reject("not-json", "empty (null) message value")
        return parse_event(payload, max_bytes)

    return _collect(payloads, parse)


def validate_records(records: Iterable[Any]) -> ParseResult:
    """Validate already-decoded records (log readers); same rules as :func:`parse_batch`."""
    return _collect(records, validate_record)


def encode_event(event: Event) -> bytes:
    """Serialise an event as a contract JSON message."""
    return msgspec.json.encode(event.to_record())
