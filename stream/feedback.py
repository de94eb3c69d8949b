"""Analysts' verdicts in: the verdict contract, dead letters, and the labels file `train --labels` takes.

A verdict is one JSON object (stream/schemas/verdict.schema.json): ``alert_id`` or
``user_id``, ``verdict`` (``abuse`` / ``legitimate``), optional ``kind``, ``analyst``,
``at`` (when it was given) and ``since`` (event time it applies from). It is validated the
way events are - decoded straight into a typed msgspec struct - and a verdict that breaks
the contract never raises: it comes back with one machine-readable reason (the event
contract's, plus ``unknown-alert`` for an ``alert_id`` no alert given has), so it can be
dead-lettered to a file or topic.

Verdicts become labels by user: ``abuse`` is label 1 with its kind as the attack,
``legitimate`` label 0 (a dismissed alert: a hard negative). The latest verdict per user
wins, by ``at``; a labels file already there (a chargeback export, the last run's output)
is merged, its rows without a time counting as older than any verdict.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta

from stream import events as ev
from stream.dead_letter import dead_letter_headers, fit_dead_letter
from stream.events import TS_MAX_MS, TS_MIN_MS, Reject

VERDICTS = ("abuse", "legitimate")
DEFAULT_KIND = "confirmed"  # the attack name of an abuse verdict without a kind
DEFAULT_TOPIC = "feedback"
#: the labels file's columns: the three `train --labels` reads, then where each label came from
LABEL_COLUMNS = ("user_id", "label", "attack", "since", "at", "verdict", "analyst", "alert_id")
REJECT_REASONS = (*ev.REJECT_REASONS, "unknown-alert")
DLQ_MAX_VALUE_BYTES = 256 * 1024

_Str = Annotated[str, Meta(min_length=1, max_length=ev.MAX_FIELD_CHARS)]
_Time = Annotated[int, Meta(ge=TS_MIN_MS, lt=TS_MAX_MS)] | str


class Verdict(msgspec.Struct, gc=False):
    """One verdict as sent; after :func:`parse_verdict` ``user_id`` is a string and times are epoch ms."""

    verdict: Literal["abuse", "legitimate"]
    alert_id: _Str | None = None
    user_id: _Str | int | None = None
    kind: _Str | None = None
    analyst: _Str | None = None
    at: _Time | None = None
    since: _Time | None = None


def schema() -> dict:
    """The verdict JSON Schema (stream/schemas/verdict.schema.json)."""
    from importlib import resources

    return orjson.loads(resources.files("stream").joinpath("schemas/verdict.schema.json").read_bytes())


def _reject(exc: msgspec.ValidationError) -> Reject:
    msg = str(exc)
    at = msg.rpartition(" - at `")[2].rstrip("`") if " - at `" in msg else ""
    if msg.startswith("Object missing required field") or (at == "$.verdict" and "got `null`" in msg):
        return Reject("missing-field", "verdict is required (abuse or legitimate)")
    if not at:
        return Reject("not-object", msg[:200])
    if at in ("$.at", "$.since") and "got `" not in msg:
        return Reject("bad-timestamp", f"{msg}; times are epoch ms in [2000-01-01, 2100-01-01) or ISO-8601")
    return Reject("bad-type" if "got `" in msg else "bad-value", msg[:200])


def parse_verdict(payload: bytes | Mapping[str, Any] | None, max_bytes: int = ev.DEFAULT_MAX_BYTES) -> Verdict:
    """Validate one verdict (message bytes or an already-decoded record); raise :class:`Reject`."""
    if payload is None:
        raise Reject("not-json", "empty (null) message value")
    value = ev.decode(payload, max_bytes) if isinstance(payload, bytes | bytearray) else payload
    if not isinstance(value, Mapping):
        raise Reject("not-object", f"a verdict is a JSON object, got {type(value).__name__}")
    try:
        v = msgspec.convert(dict(value), Verdict)
    except msgspec.ValidationError as exc:
        raise _reject(exc) from None
    if v.user_id.__class__ is int:
        v.user_id = ev._int_id("user_id", v.user_id)  # type: ignore[arg-type]
    if v.alert_id is None and v.user_id is None:
        raise Reject("missing-field", "a verdict names an alert_id or a user_id")
    for name in ("at", "since"):
        t = getattr(v, name)
        if isinstance(t, str):
            try:
                setattr(v, name, ev._parse_iso(t))
            except Reject as r:
                raise Reject("bad-timestamp", f"{name}: {r.detail}") from None
    return v


@dataclass(frozen=True)
class LabelRow:
    """One user's label and where it came from (a row of the labels file)."""

    user_id: str
    label: int
    attack: str | None = None
    since: int | None = None  # event time (ms) the verdict applies from
    at: int | None = None  # when the verdict was given (ms); None: a labels row without a time
    verdict: str | None = None
    analyst: str | None = None
    alert_id: str | None = None

    def csv_row(self) -> list[str]:
        return ["" if getattr(self, c) is None else str(getattr(self, c)) for c in LABEL_COLUMNS]


@dataclass(frozen=True)
class AlertRef:
    user_id: str
    event_time: int | None


def read_alerts(paths: Iterable[Path | str]) -> dict[str, AlertRef]:
    """alert_id -> (user, event time) from alerts JSONL files: `seqsentry score --out`, `alerts --json`,
    or `record --headers` of the alerts topic (the alert is the line's ``value``). Lines that are not
    alerts are skipped."""
    out: dict[str, AlertRef] = {}
    for path in paths:
        with _open(Path(path)) as f:
            for line in f:
                _add_alert(out, line)
    return out


def alerts_from_topic(bootstrap: str, topic: str, options: Mapping[str, str] | None = None, *,
                      idle_timeout: float = 5.0) -> dict[str, AlertRef]:
    """alert_id -> (user, event time) from every alert on the alerts topic."""
    out: dict[str, AlertRef] = {}
    for item in from_topic(bootstrap, topic, options, idle_timeout=idle_timeout):
        if isinstance(item.payload, bytes):
            _add_alert(out, item.payload)
    return out


def _add_alert(out: dict[str, AlertRef], raw: bytes) -> None:
    try:
        a = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    if isinstance(a, dict) and isinstance(a.get("value"), dict) and "alert_id" not in a:
        a = a["value"]
    if isinstance(a, dict) and isinstance(a.get("alert_id"), str) and isinstance(a.get("user_id"), str):
        t = a.get("event_time")
        out[a["alert_id"]] = AlertRef(a["user_id"], t if isinstance(t, int) else None)


def _open(path: Path) -> io.BufferedReader:
    import gzip

    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]  # noqa: SIM115


def resolve(v: Verdict, alerts: Mapping[str, AlertRef] | None, default_at: int) -> LabelRow:
    """The labels row of a valid verdict; raise :class:`Reject` (``unknown-alert``) when its alert
    cannot be found, or (``bad-value``) when its user_id is not its alert's user."""
    user, since = v.user_id, v.since
    if v.alert_id is not None and (alerts or v.user_id is None):
        ref = (alerts or {}).get(v.alert_id)
        if ref is None:
            if v.user_id is None:
                hint = "" if alerts else "; give the alerts it came from with --alerts FILE"
                raise Reject("unknown-alert", f"alert_id {v.alert_id} is in none of the alerts given{hint}")
        else:
            if v.user_id is not None and v.user_id != ref.user_id:
                raise Reject("bad-value", f"user_id {v.user_id} is not alert {v.alert_id}'s user ({ref.user_id})")
            user = ref.user_id
            # no default from the alert's event time: that is when the model noticed, not when the
            # abuse began, and `train` labels everything from `since` on (the whole account without it)
    abuse = v.verdict == "abuse"
    return LabelRow(str(user), int(abuse), (v.kind or DEFAULT_KIND) if abuse else None, since,
                    v.at if v.at is not None else default_at, v.verdict, v.analyst, v.alert_id)


def read_labels_file(path: Path | str) -> list[LabelRow]:
    """Rows of a labels CSV (``user_id,label[,attack,...]``: this module's or any `train --labels` file)."""
    from stream.log_spec import LogFormatError

    with _open(Path(path)) as fb, io.TextIOWrapper(fb, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "user_id" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise LogFormatError(f"{path}: a labels file needs a header with user_id and label columns")

        def num(s: str | None) -> int | None:
            return int(s) if s not in (None, "") else None

        return [LabelRow(r["user_id"], int(r["label"]), r.get("attack") or None, num(r.get("since")), num(r.get("at")),
                         r.get("verdict") or None, r.get("analyst") or None, r.get("alert_id") or None)
                for r in reader]


def merge(rows: Iterable[LabelRow]) -> dict[str, LabelRow]:
    """The latest row per user, by ``at`` (a row without one is older than any timed row); a tie goes
    to the row given last."""
    out: dict[str, LabelRow] = {}
    for r in rows:
        old = out.get(r.user_id)
        if old is None or (r.at if r.at is not None else -1) >= (old.at if old.at is not None else -1):
            out[r.user_id] = r
    return out


def write_labels(path: Path | str, rows: Mapping[str, LabelRow]) -> None:
    """Write the labels CSV atomically (a reader sees the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(LABEL_COLUMNS)
        for uid in sorted(rows):
            w.writerow(rows[uid].csv_row())
    os.replace(tmp, path)


# ---- sources: one (payload, default time, where) per verdict --------------------------------------
@dataclass
class Incoming:
    """A verdict as read, before validation: its bytes (or CSV record) and where it came from."""

    payload: bytes | dict | None
    default_at: int  # the message's broker timestamp, or when the file was read
    key: bytes | None = None
    partition: int = -1
    offset: int = -1
    where: str = ""


def from_file(path: Path | str) -> Iterator[Incoming]:
    """Verdicts from a JSONL file (one object a line) or a CSV with the contract's column names."""
    path = Path(path)
    now = int(time.time() * 1000)
    name = path.name.lower().removesuffix(".gz")
    with _open(path) as fb:
        if name.endswith((".csv", ".tsv")):
            text = io.TextIOWrapper(fb, encoding="utf-8", newline="")
            first = text.readline()
            delimiter = max(",;\t|", key=first.count)
            reader = csv.DictReader(io.StringIO(first + text.read()), delimiter=delimiter)
            for n, row in enumerate(reader, 1):
                rec = {k: _csv_value(k, v) for k, v in row.items() if k and v not in (None, "")}
                yield Incoming(rec, now, where=f"{path}:row {n}", offset=n - 1)
            return
        for n, line in enumerate(fb, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield Incoming(line, now, where=f"{path}:{n}", offset=n - 1)


def _csv_value(key: str, value: str) -> Any:
    return int(value) if key in ("at", "since") and value.strip().lstrip("-").isdigit() else value


def from_topic(bootstrap: str, topic: str, options: Mapping[str, str] | None = None, *, idle_timeout: float = 5.0,
               max_messages: int | None = None) -> Iterator[Incoming]:
    """Every verdict on ``topic`` (all partitions, from the beginning) until ``idle_timeout`` s pass
    without one. Re-reading the whole topic is what makes the labels file a pure function of it."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    from stream import kafka

    parts = kafka.require_topic(bootstrap, topic, options)
    cons = kafka.consumer(bootstrap, "seqsentry-feedback", options)
    cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(parts)])
    n, last = 0, time.monotonic()
    try:
        while max_messages is None or n < max_messages:
            msgs = cons.consume(500, timeout=0.5)
            if not msgs:
                if time.monotonic() - last > idle_timeout:
                    break
                continue
            last = time.monotonic()
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise kafka.KafkaUnavailable(f"reading verdicts from {topic} failed: {m.error()}")
                kind, ts = m.timestamp()
                yield Incoming(m.value(), ts if kind and ts > 0 else int(time.time() * 1000), m.key(), m.partition(),
                               m.offset(), f"{topic}[{m.partition()}]@{m.offset()}")
                n += 1
    finally:
        cons.close()


# ---- dead letters ------------------------------------------------------------------------------
class DeadLetters:
    """Refused verdicts, to a JSONL file (``{"reason", "detail", "where", "value"}``) and/or a topic
    (the original bytes with the seqsentry.* dead-letter headers, like refused events)."""

    def __init__(self, path: Path | str | None = None, topic: str | None = None, bootstrap: str | None = None,
                 options: Mapping[str, str] | None = None, source_topic: str = "") -> None:
        self.path, self.topic, self.source_topic = (Path(path) if path else None), topic, source_topic
        if self.path is not None:
            self.path.unlink(missing_ok=True)  # this run's refusals only (feedback re-reads every verdict)
        self._file = None
        self._producer = None
        self.by_reason: dict[str, int] = {}
        self.examples: dict[str, str] = {}
        if topic:
            from stream import kafka

            if not bootstrap:
                raise ValueError("a dead-letter topic needs the cluster: give -b HOST:PORT")
            kafka.require_topic(bootstrap, topic, options)
            self._producer = kafka.producer(bootstrap, options)

    def add(self, item: Incoming, reject: Reject) -> None:
        self.by_reason[reject.reason] = self.by_reason.get(reject.reason, 0) + 1
        self.examples.setdefault(reject.reason, f"{item.where}: {reject.detail}"[:300])
        raw = item.payload if isinstance(item.payload, bytes | None) else orjson.dumps(item.payload)
        if self.path is not None:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "wb")  # noqa: SIM115
            self._file.write(orjson.dumps({"reason": reject.reason, "detail": reject.detail, "where": item.where,
                                           "value": None if raw is None else raw.decode("utf-8", "replace")}) + b"\n")
        if self._producer is not None:
            headers = dead_letter_headers(reject.reason, reject.detail, self.source_topic or item.where,
                                          item.partition, item.offset)
            # far past the verdict limit: keep its head (the events' contract, with a smaller ceiling)
            raw, headers = fit_dead_letter(raw, item.key, headers, DLQ_MAX_VALUE_BYTES)
            self._producer.produce(self.topic, raw, item.key, headers=headers)
            self._producer.poll(0)

    @property
    def rejected(self) -> int:
        return sum(self.by_reason.values())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._producer is not None:
            left = self._producer.flush(30)
            if left:
                from stream import kafka

                raise kafka.KafkaUnavailable(f"{left} dead-lettered verdicts were not acknowledged by the broker")


@dataclass
class FeedbackResult:
    read: int = 0
    accepted: int = 0
    labels: dict[str, LabelRow] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def abuse(self) -> int:
        return sum(r.label == 1 for r in self.labels.values())

    @property
    def legitimate(self) -> int:
        return sum(r.label == 0 for r in self.labels.values())


def collect(items: Iterable[Incoming], dead: DeadLetters, alerts: Mapping[str, AlertRef] | None = None,
            existing: Iterable[LabelRow] = ()) -> FeedbackResult:
    """Validate and resolve every verdict; dead-letter the refused; merge the rest over ``existing``."""
    rows = list(existing)
    res = FeedbackResult()
    for item in items:
        res.read += 1
        try:
            rows.append(resolve(parse_verdict(item.payload), alerts, item.default_at))
            res.accepted += 1
        except Reject as r:
            dead.add(item, r)
    res.labels = merge(rows)
    res.by_reason, res.examples = dict(dead.by_reason), dict(dead.examples)
    return res


def verdict_message(target: str, verdict: str, *, is_user: bool = False, kind: str | None = None,
                    analyst: str | None = None, at: int | None = None) -> bytes:
    """One verdict as the JSON the feedback topic carries, checked against the contract first."""
    rec = {("user_id" if is_user else "alert_id"): target, "verdict": verdict,
           "at": at if at is not None else int(time.time() * 1000)}
    if kind:
        rec["kind"] = kind
    if analyst:
        rec["analyst"] = analyst
    payload = orjson.dumps(rec)
    try:
        parse_verdict(payload)
    except Reject as r:
        raise ValueError(f"not a valid verdict ({r.reason}): {r.detail}") from None
    return payload
