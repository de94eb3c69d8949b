"""Recorded event logs: read and write JSONL, CSV and Parquet, optionally gzip-compressed.

Everything streams in chunks, so a log never has to fit in memory. Real logs rarely use
the contract's column names: ``columns`` maps source names onto contract fields
(``{"visitorid": "user_id", "event": "type", "timestamp": "ts"}``) and ``ts_unit`` says
how numeric timestamps are expressed. Labels can come from a separate CSV keyed by
user id. Validation is :mod:`stream.events`' - a log reader never has rules of its own.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from stream import events as ev
from stream.errors import SeqsentryError

FORMATS = ("jsonl", "csv", "parquet")
CONTRACT_FIELDS = (
    "user_id", "ts", "type", "event_id", "item_id", "category_id", "price", "quantity",
    "session_id", "device_id", "ip", "label", "attack",
)  # fmt: skip
_SCHEMA = pa.schema(
    [
        (name, pa.int64() if name in ("ts", "quantity") else pa.float64() if name == "price"
         else pa.int8() if name == "label" else pa.string())
        for name in CONTRACT_FIELDS
    ]
)  # fmt: skip
TS_UNITS = {"ms": 1, "s": 1000, "us": 0.001, "ns": 0.000001}


class LogFormatError(SeqsentryError, ValueError):
    """A log's format or columns cannot be read; the message says what to pass instead."""


def detect_format(path: Path | str, fmt: str | None = None) -> tuple[str, bool]:
    """(format, gzipped) from an explicit format or the file name (``x.jsonl.gz`` ...)."""
    name = str(path).lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    if fmt:
        if fmt not in FORMATS:
            raise LogFormatError(f"unknown log format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt, gz
    for suffix, found in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".csv", "csv"),
                          (".tsv", "csv"), (".parquet", "parquet"), (".pq", "parquet")):  # fmt: skip
        if name.endswith(suffix):
            return found, gz
    raise LogFormatError(f"cannot tell the format of {path}: name it .jsonl/.csv/.tsv/.parquet (optionally .gz) or pass --format")


@dataclass
class LogSpec:
    """How to read a log: format, column mapping, timestamp unit, optional labels."""

    fmt: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # source column -> contract field
    column_names: list[str] | None = None  # for CSVs without a header row
    delimiter: str | None = None  # CSV; detected from the first line when None
    # auto: the unit is read off the magnitude - unambiguous for the contract's years 2000-2100,
    # where seconds, ms, us and ns each fill their own, non-overlapping range
    ts_unit: str = "auto"  # auto | ms | s | us | ns
    labels: dict[str, tuple[int, str | None]] | None = None
    chunk_size: int = 20_000
    constants: dict[str, str] = field(default_factory=dict)  # contract field -> value for every record
    value_maps: dict[str, dict[str, str]] = field(default_factory=dict)  # field -> {source value: value}

    def __post_init__(self) -> None:
        if self.ts_unit not in (*TS_UNITS, "auto"):
            raise LogFormatError(f"unknown ts unit {self.ts_unit!r}; use one of ms, s, us, ns, auto")
        bad = sorted((set(self.columns.values()) | set(self.constants) | set(self.value_maps)) - set(CONTRACT_FIELDS))
        if bad:
            raise LogFormatError(f"cannot map onto unknown contract field(s) {bad}; fields are {', '.join(CONTRACT_FIELDS)}")


def _pairs(items: Iterable[str], what: str, shape: str) -> dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b", ...}``; ``what`` and ``shape`` name the option and its form in errors."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise LogFormatError(f"{what} {item!r} must look like {shape}")
        out[key] = value
    return out


def parse_column_map(items: Iterable[str]) -> dict[str, str]:
    """``["visitorid=user_id", "event=type"]`` -> ``{"visitorid": "user_id", "event": "type"}``."""
    return _pairs(items, "column mapping", "SOURCE=FIELD, e.g. visitorid=user_id")


def parse_constants(items: Iterable[str]) -> dict[str, str]:
    """``["type=click"]`` -> ``{"type": "click"}`` (a field set to one value on every record)."""
    return _pairs(items, "--set", "FIELD=VALUE, e.g. type=click")


def parse_value_maps(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["type:pv=view,buy=purchase"]`` -> ``{"type": {"pv": "view", "buy": "purchase"}}``."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        name, sep, pairs = item.partition(":")
        mapping = dict(p.partition("=")[::2] for p in pairs.split(",")) if sep else {}
        if not name or not mapping or any(not k or not v for k, v in mapping.items()):
            raise LogFormatError(f"--map-values {item!r} must look like FIELD:FROM=TO[,FROM=TO...], e.g. type:pv=view")
        out.setdefault(name, {}).update(mapping)
    return out


def read_labels(path: Path | str) -> dict[str, tuple[int, str | None]]:
    """Read a labels CSV with columns ``user_id,label[,attack]`` (a header row is required)."""
    with _open_text(Path(path)) as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "user_id" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise LogFormatError(f"{path}: a labels file needs a header with user_id and label columns")
        return {row["user_id"]: (int(row["label"]), row.get("attack") or None) for row in reader}


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")  # noqa: SIM115


def _open_text(path: Path) -> IO[str]:
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8", newline="")


def _convert_ts(value: Any, unit: str) -> Any:
    """A numeric timestamp in ``unit`` (integer or float) -> integer epoch ms; anything else unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if unit == "auto":
        mag = abs(value)
        unit = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
    scale = TS_UNITS[unit]
    if scale == 1 and isinstance(value, int):
        return value
    ms = value * scale
    return int(round(ms)) if ms == ms and abs(ms) < 1e18 else value  # NaN / huge: left for validation to refuse


def _apply_spec(rec: dict[str, Any], spec: LogSpec) -> dict[str, Any]:
    if spec.columns:
        rec = {spec.columns.get(k, k): v for k, v in rec.items()}
    if spec.constants:
        rec.update(spec.constants)
    for name, mapping in spec.value_maps.items():
        value = rec.get(name)
        if value is not None:
            rec[name] = mapping.get(str(value), value)
    if "ts" in rec:
        rec["ts"] = _convert_ts(rec["ts"], spec.ts_unit)
    if spec.labels is not None and "user_id" in rec:
        label, attack = spec.labels.get(str(rec["user_id"]), (0, None))
        rec["label"] = label
        if attack:
            rec["attack"] = attack
    return rec


@dataclass(slots=True)
class RawChunk:
    """A chunk of a log as it was written: records plus, for JSONL, the original line bytes."""

    records: list[Any]  # decoded values, or events.Reject for lines that did not decode
    raw: list[bytes] | None  # JSONL lines, re-encoded where the log options changed the record


def iter_chunks(path: Path | str, spec: LogSpec | None = None) -> Iterator[RawChunk]:
    """Stream a log in chunks of decoded records (mapping and labels applied)."""
    spec = spec or LogSpec()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such log: {path}")
    fmt, _ = detect_format(path, spec.fmt)
    if fmt == "jsonl":
        yield from _jsonl_chunks(path, spec)
    elif fmt == "csv":
        yield from _table_chunks(_csv_batches(path, spec), spec)
    else:
        yield from _table_chunks(pq.ParquetFile(path).iter_batches(batch_size=spec.chunk_size), spec)


def _jsonl_chunks(path: Path, spec: LogSpec) -> Iterator[RawChunk]:
    with _open_binary(path) as f:
        raw: list[bytes] = []
        for line in f:
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            raw.append(line)
            if len(raw) >= spec.chunk_size:
                yield _decode_lines(raw, spec)
                raw = []
        if raw:
            yield _decode_lines(raw, spec)


def _decode_lines(raw: list[bytes], spec: LogSpec) -> RawChunk:
    records: list[Any] = []
    rewrites = bool(spec.columns or spec.constants or spec.value_maps or spec.labels is not None)
    for i, line in enumerate(raw):
        try:
            value = ev.decode(line, max_bytes=1 << 30)
            if isinstance(value, dict):
                ts = value.get("ts")
                value = _apply_spec(value, spec)
                if rewrites or value.get("ts") is not ts:  # send and parse what the options made of the line
                    raw[i] = orjson.dumps(value)
            records.append(value)
        except ev.Reject as r:
            records.append(r)
    return RawChunk(records, raw)


def _csv_batches(path: Path, spec: LogSpec) -> Iterator[pa.RecordBatch]:
    with _open_text(path) as f:
        first = f.readline().rstrip("\r\n")
    delimiter = spec.delimiter or max(",;\t|", key=first.count)
    names = spec.column_names or first.split(delimiter)
    read = pacsv.ReadOptions(column_names=spec.column_names, block_size=1 << 22)
    # ids stay strings: '007' must not become 7
    numeric = ("ts", "price", "quantity", "label")
    convert = pacsv.ConvertOptions(
        strings_can_be_null=True,
        column_types={c: pa.string() for c in names if spec.columns.get(c, c) not in numeric},
    )
    stream = pa.input_stream(str(path), compression="gzip" if str(path).endswith(".gz") else None)
    try:
        reader = pacsv.open_csv(stream, read_options=read, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise LogFormatError(f"{path}: not a readable CSV ({exc}); check --delimiter / --columns") from None
    for batch in reader:
        for start in range(0, batch.num_rows, spec.chunk_size):
            yield batch.slice(start, spec.chunk_size)


def _table_chunks(batches: Iterable[pa.RecordBatch], spec: LogSpec) -> Iterator[RawChunk]:
    checked = False
    for batch in batches:
        if not checked:
            names = {spec.columns.get(c, c) for c in batch.schema.names} | set(spec.constants)
            missing = [f for f in ("user_id", "ts", "type") if f not in names]
            if missing:
                headerless = any(_looks_like_data(c) for c in batch.schema.names)
                hint = ("; the first row looks like data, not a header: name the columns with --columns a,b,c"
                        if headerless else "; map them with --map SOURCE=FIELD or set one value with --set FIELD=VALUE")
                raise LogFormatError(f"log columns {batch.schema.names} do not provide {missing}{hint}")
            checked = True
        yield RawChunk([_apply_spec(r, spec) for r in batch.to_pylist()], None)


def _looks_like_data(name: str) -> bool:
    """A header cell that is a number (or empty) is a data row read as a header."""
    try:
        float(name)
        return True
    except ValueError:
        return not name.strip()


@dataclass
class RejectTally:
    """Rejected records of a run, by reason, with the first example of each (for the end-of-run summary)."""

    seen: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, rejects: Iterable[ev.Rejected], total: int) -> None:
        """Count one chunk: ``total`` records read, ``rejects`` refused."""
        self.seen += total
        for r in rejects:
            self.by_reason[r.reason] = self.by_reason.get(r.reason, 0) + 1
            self.examples.setdefault(r.reason, r.detail[:200])

    @property
    def rejected(self) -> int:
        return sum(self.by_reason.values())

    def summary(self) -> list[str]:
        """One line per reason, most frequent first, each with an example."""
        return [f"rejected {n:,} of {self.seen:,} records ({n / max(self.seen, 1):.1%}): {reason} - e.g. "
                f"{self.examples[reason]}" for reason, n in sorted(self.by_reason.items(), key=lambda kv: -kv[1])]

    def check(self, max_share: float) -> None:
        """Raise :class:`LogFormatError` naming the likely fix when more than ``max_share`` was rejected."""
        if self.seen and self.rejected / self.seen > max_share:
            top = max(self.by_reason, key=self.by_reason.__getitem__)
            fix = {"bad-timestamp": "check --ts-unit and which column is mapped to ts",
                   "missing-field": "map the log's columns with --map SOURCE=FIELD / --columns, or --set FIELD=VALUE",
                   "bad-type": "check --columns order and --map: a field holds the wrong kind of value"}.get(
                       top, "see the examples above")
            raise LogFormatError(f"{self.rejected:,} of {self.seen:,} records rejected (mostly {top}, more than "
                                 f"{max_share:.0%}): {fix}")


def iter_events(path: Path | str, spec: LogSpec | None = None, tally: RejectTally | None = None,
                max_reject_share: float | None = None) -> Iterator[ev.ParseResult]:
    """Stream a log as validated event batches (rejects reported, never raised).

    With ``tally``, rejects are counted there; with ``max_reject_share`` as well, the end
    of the log raises :class:`LogFormatError` if more than that share was rejected.
    """
    for chunk in iter_chunks(path, spec):
        result = ev.validate_records([None if isinstance(r, ev.Reject) else r for r in chunk.records])
        decode_errors = {i: r for i, r in enumerate(chunk.records) if isinstance(r, ev.Reject)}
        if decode_errors:  # keep the decoder's own reason rather than validate's "not-object"
            result.rejects = [
                ev.Rejected(x.index, decode_errors[x.index].reason, decode_errors[x.index].detail)
                if x.index in decode_errors else x
                for x in result.rejects
            ]
        if tally is not None:
            tally.add(result.rejects, len(chunk.records))
        yield result
    if tally is not None and max_reject_share is not None:
        tally.check(max_reject_share)


def write_log(path: Path | str, chunks: Iterable[list[dict]], fmt: str | None = None) -> int:
    """Write chunks of records; returns the number written. CSV/Parquet keep contract fields only."""
    path = Path(path)
    fmt, gz = detect_format(path, fmt)
    n = 0
    if fmt == "jsonl":
        with (gzip.open(path, "wb", compresslevel=5) if gz else open(path, "wb")) as f:  # noqa: SIM115
            for chunk in chunks:
                f.write(b"".join(orjson.dumps(r) + b"\n" for r in chunk))
                n += len(chunk)
        return n
    sink = pa.output_stream(str(path), compression="gzip" if gz else None)
    writer: Any = pq.ParquetWriter(sink, _SCHEMA) if fmt == "parquet" else pacsv.CSVWriter(sink, _SCHEMA)
    try:
        for chunk in chunks:
            cols = {name: [r.get(name) for r in chunk] for name in CONTRACT_FIELDS}
            writer.write_table(pa.table(cols, schema=_SCHEMA)) if fmt == "parquet" else writer.write(
                pa.record_batch(cols, schema=_SCHEMA))
            n += len(chunk)
    finally:
        writer.close()
        sink.close()
    return n
