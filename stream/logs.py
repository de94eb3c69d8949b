"""Recorded event logs: read and write JSONL, CSV and Parquet, optionally gzip-compressed.

Everything streams in chunks, so a log never has to fit in memory. Real logs rarely use
the contract's column names: ``columns`` maps source names onto contract fields
(``{"visitorid": "user_id", "event": "type", "timestamp": "ts"}``) and ``ts_unit`` says
how numeric timestamps are expressed. Labels can come from a separate CSV keyed by
user id. Validation is :mod:`stream.events`' - a log reader never has rules of its own.

This module is the front door: validated events from a log (:func:`iter_events`), the
tally of rejects and :func:`write_log`. How a log is read lives in :mod:`stream.log_spec`
(the options) and :mod:`stream.log_readers` (the formats); their public names are
re-exported here, so callers need only ``stream.logs``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from stream import events as ev
from stream.log_readers import FORMATS, RawChunk, detect_format, iter_chunks, read_labels
from stream.log_spec import (
    CONTRACT_FIELDS,
    TS_UNITS,
    LogFormatError,
    LogSpec,
    parse_column_map,
    parse_constants,
    parse_value_maps,
)

__all__ = [
    "CONTRACT_FIELDS", "FORMATS", "TS_UNITS", "LogFormatError", "LogSpec", "RawChunk", "RejectTally",
    "detect_format", "iter_chunks", "iter_events", "parse_column_map", "parse_constants", "parse_value_maps",
    "read_labels", "write_log",
]  # fmt: skip

_SCHEMA = pa.schema(
    [
        (name, pa.int64() if name in ("ts", "quantity") else pa.float64() if name == "price"
         else pa.int8() if name == "label" else pa.string())
        for name in CONTRACT_FIELDS
    ]
)  # fmt: skip


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
