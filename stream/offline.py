"""`seqsentry score`: the detection pipeline over a recorded log, without Kafka.

Same parsing, windows, encoding, model, threshold, cooldown and alert code as the live
detector (stream.detector), so the alerts it writes are the ones `seqsentry run`
publishes when the same log is replayed through Kafka (same ids, same scores within
float tolerance): the step from raw records to windows is the same function too
(stream.pipeline). Rejected records go to a dead-letter file with their reasons.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from stream import events, log_order, logs, pipeline, progress
from stream.detector import Detector


@dataclass
class ScoreStats:
    """Counts of one offline run."""

    events: int = 0
    rejected: int = 0
    too_late: int = 0
    unknown_types: int = 0  # valid events whose type the model never saw in training
    windows: int = 0  # one per valid in-time event, plus one per ended session
    sessions_ended: int = 0
    alerts: int = 0
    seconds: float = 0.0
    order: str = ""  # how the log was read (already in time order, or sorted)


def score_log(path: Path | str, detector: Detector, alerts_out: Path | str, *, spec: logs.LogSpec | None = None,
              dead_letter_out: Path | str | None = None, show_progress: bool = False,
              tally: logs.RejectTally | None = None) -> ScoreStats:
    """Score every event of a log; write alerts (JSONL) and, optionally, dead letters.

    ``tally`` (optional) counts every dead letter by reason, for the end-of-run summary.
    """
    stats = ScoreStats()
    known = set(detector.scorer.artifact.vocab.types[1:])
    t0 = time.monotonic()
    store = detector.new_store()
    log_name = str(path)
    dlq = open(dead_letter_out, "wb") if dead_letter_out else None  # noqa: SIM115
    try:
        with open(alerts_out, "wb") as out, progress.bar(show_progress) as bar:
            task = bar.add_task(f"score {Path(path).name}", total=None, rate="")
            chunks, order = log_order.chunks_in_time_order(path, spec)
            stats.order = order.line()
            for chunk in chunks:
                if chunk.raw is not None:  # JSONL: parse the bytes exactly as the consumer parses messages
                    parsed = pipeline.parse(chunk.raw)
                else:
                    parsed = events.validate_records(chunk.records)
                res = pipeline.step(detector, store, parsed)
                records = _log_records(chunk, stats.events)
                for p in res.pending:  # the alert's trigger names the log and the record
                    p.log, p.log_records = log_name, records
                stats.unknown_types += sum(t not in known for t in parsed.events.type)
                if tally is not None:
                    tally.add(res.dead_letters, len(chunk.records))
                for p, found in zip(res.pending, detector.score(res.pending), strict=True):
                    stats.windows += len(p)
                    for a in found:
                        out.write(orjson.dumps(a) + b"\n")
                    stats.alerts += len(found)
                stats.events += len(chunk.records)
                stats.rejected += res.rejected
                stats.too_late += res.too_late
                stats.sessions_ended += res.sessions_ended
                if dlq is not None:
                    for d in res.dead_letters:
                        dlq.write(orjson.dumps({"reason": d.reason, "detail": d.detail,
                                                "value": _raw(chunk, d.index)}) + b"\n")
                elapsed = time.monotonic() - t0
                bar.update(task, completed=stats.events, rate=f"{stats.events / max(elapsed, 1e-9):,.0f} ev/s, "
                                                               f"{stats.alerts:,} alerts")
    finally:
        if dlq is not None:
            dlq.close()
    stats.seconds = time.monotonic() - t0
    return stats


def _log_records(chunk: logs.RawChunk, start: int) -> np.ndarray:
    """The log record (0-based, in file order) of each of ``chunk``'s records, ``start`` records in.

    A reader that hands records over in another order than the file's (a log sorted by time)
    says where each came from in the chunk's ``rows``; otherwise they are the file's next ones.
    """
    rows = chunk.rows
    return np.asarray(rows, dtype=np.int64) if rows is not None else np.arange(start, start + len(chunk.records))


def _raw(chunk: logs.RawChunk, index: int) -> str:
    if chunk.raw is not None:
        return chunk.raw[index].decode("utf-8", "replace")
    rec = chunk.records[index]
    return orjson.dumps(rec, default=str).decode() if not isinstance(rec, events.Reject) else ""
