"""Reading recorded logs: format detection and the chunked JSONL, CSV and Parquet readers.

Everything streams in chunks, so a log never has to fit in memory; gzip is read
transparently. Each record goes through :func:`stream.log_spec.apply_spec` (mapping,
constants, timestamp unit, labels) on the way out. Validation is
:mod:`stream.events`' - a log reader never has rules of its own.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from stream import events as ev
from stream.log_spec import Label, LogFormatError, LogSpec, apply_spec, target

FORMATS = ("jsonl", "csv", "parquet")


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
    raise LogFormatError(f"cannot tell the format of {path}: name it .jsonl, .csv, .tsv or .parquet (optionally .gz), "
                         f"or pass --format {'|'.join(FORMATS)} (a tab- or semicolon-separated file is --format csv: "
                         "the delimiter is detected)")


def read_labels(path: Path | str) -> dict[str, Label]:
    """Read a labels CSV with columns ``user_id,label[,attack][,since]`` (a header row is required;
    other columns, such as those `seqsentry feedback` writes, are ignored)."""
    with _open_text(Path(path)) as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "user_id" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise LogFormatError(f"{path}: a labels file needs a header with user_id and label columns")
        out: dict[str, Label] = {}
        for n, row in enumerate(reader, start=2):
            since = (row.get("since") or "").strip()
            if since and not since.lstrip("-").isdigit():
                raise LogFormatError(f"{path}:{n}: since must be an event time in epoch ms, got {since[:40]!r}")
            out[row["user_id"]] = Label(int(row["label"]), row.get("attack") or None, int(since) if since else None)
        return out


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")  # noqa: SIM115


def _open_text(path: Path) -> IO[str]:
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8", newline="")


@dataclass(slots=True)
class RawChunk:
    """A chunk of a log as it was written: records plus, for JSONL, the original line bytes."""

    records: list[Any]  # decoded values, or events.Reject for lines that did not decode
    raw: list[bytes] | None  # JSONL lines, re-encoded where the log options changed the record
    rows: list[int] | None = None  # each record's position in the file, when a reader reordered them


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
                value = apply_spec(value, spec)
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
        column_types={c: pa.string() for c in names if target(spec, c) not in numeric},
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
            names = {target(spec, c) for c in batch.schema.names} | set(spec.constants)
            missing = [f for f in ("user_id", "ts", "type") if f not in names]
            if missing:
                headerless = any(_looks_like_data(c) for c in batch.schema.names)
                hint = ("; the first row looks like data, not a header: name the columns with --columns a,b,c"
                        if headerless else "; map them with --map SOURCE=FIELD or set one value with --set FIELD=VALUE")
                raise LogFormatError(f"log columns {batch.schema.names} do not provide {missing}{hint}")
            checked = True
        yield RawChunk([apply_spec(r, spec) for r in batch.to_pylist()], None)


def _looks_like_data(name: str) -> bool:
    """A header cell that is a number (or empty) is a data row read as a header."""
    try:
        float(name)
        return True
    except ValueError:
        return not name.strip()
