"""`seqsentry score`: the detection pipeline over a recorded log, without Kafka.

Same parsing, windows, encoding, model, threshold, cooldown and alert code as the live
detector (stream.detector), so the alerts it writes are the ones `seqsentry run`
publishes when the same log is replayed through Kafka (same ids, same scores within
float tolerance). Rejected records go to a dead-letter file with their reasons.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from stream import events, logs, progress
from stream.detector import Detector


@dataclass
class ScoreStats:
    events: int = 0
    rejected: int = 0
    too_late: int = 0
    windows: int = 0
    alerts: int = 0
    seconds: float = 0.0


def score_log(path: Path | str, detector: Detector, alerts_out: Path | str, *, spec: logs.LogSpec | None = None,
              dead_letter_out: Path | str | None = None, show_progress: bool = False) -> ScoreStats:
    """Score every event of a log; write alerts (JSONL) and, optionally, dead letters."""
    stats = ScoreStats()
    t0 = time.monotonic()
    store = detector.new_store()
    dlq = open(dead_letter_out, "wb") if dead_letter_out else None  # noqa: SIM115
    try:
        with open(alerts_out, "wb") as out, progress.bar(show_progress) as bar:
            task = bar.add_task(f"score {Path(path).name}", total=None, rate="")
            for chunk in logs.iter_chunks(path, spec):
                if chunk.raw is not None:  # JSONL: parse the bytes exactly as the consumer parses messages
                    res = events.parse_batch(chunk.raw)
                else:
                    res = events.validate_records(chunk.records)
                pending, too_late = detector.ingest(store, res.events)
                for p, found in zip(pending, detector.score(pending), strict=True):
                    stats.windows += len(p)
                    for a in found:
                        out.write(orjson.dumps(a) + b"\n")
                    stats.alerts += len(found)
                n_in = len(chunk.records)
                stats.events += n_in
                stats.rejected += len(res.rejects)
                stats.too_late += len(too_late)
                if dlq is not None:
                    for r in res.rejects:
                        dlq.write(orjson.dumps({"reason": r.reason, "detail": r.detail,
                                                "value": _raw(chunk, r.index)}) + b"\n")
                    for row in too_late.tolist():
                        dlq.write(orjson.dumps({"reason": "too-late", "detail": "outside allowed lateness",
                                                "value": _raw(chunk, int(res.events.index[row]))}) + b"\n")
                elapsed = time.monotonic() - t0
                bar.update(task, completed=stats.events, rate=f"{stats.events / max(elapsed, 1e-9):,.0f} ev/s, "
                                                               f"{stats.alerts:,} alerts")
    finally:
        if dlq is not None:
            dlq.close()
    stats.seconds = time.monotonic() - t0
    return stats


def _raw(chunk: logs.RawChunk, index: int) -> str:
    if chunk.raw is not None:
        return chunk.raw[index].decode("utf-8", "replace")
    rec = chunk.records[index]
    return orjson.dumps(rec, default=str).decode() if not isinstance(rec, events.Reject) else ""
