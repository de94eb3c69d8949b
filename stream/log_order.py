"""Logs in any order: detect a log that is not in time order and read it in time order.

Public clickstreams are usually grouped by user or session, not sorted by time. Read in
file order, the partition clock would jump back and forth and nearly every event would end
a session. ``score``, ``train`` and ``evaluate`` therefore read such a log in time order (a
stable sort: events with the same timestamp keep their file order) and say what they did;
a recorded stream with a few late events is read as it is (:data:`UNORDERED_SHARE`).

Memory: a log already in time order streams as before (the check keeps one int64 per
event); one that is not is held in memory to be sorted (its records, a few hundred bytes
each).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream import events as ev
from stream.log_readers import RawChunk, iter_chunks
from stream.log_spec import LogSpec


@dataclass(frozen=True)
class TimeOrder:
    """How a log was read: its size and how many events came before an older one."""

    events: int
    out_of_order: int  # valid events older than an event before them in the file
    users: int | None = None

    @property
    def sorted(self) -> bool:
        """Whether the log had to be sorted by time (see :data:`UNORDERED_SHARE`)."""
        return self.out_of_order > UNORDERED_SHARE * self.events

    def line(self) -> str:
        """One line for the user: how the log was read."""
        who = f" of {self.users:,} users" if self.users is not None else ""
        if not self.out_of_order:
            return f"read {self.events:,} events{who}, already in time order"
        if not self.sorted:
            return (f"read {self.events:,} events{who} in file order; {self.out_of_order:,} arrived late, as in a "
                    f"recorded stream, and are handled as the live detector handles late events")
        return (f"read {self.events:,} events{who}; {self.out_of_order:,} were older than an event before them "
                f"(a log grouped by user or session): sorted by time before windowing")


#: A log is sorted only when more than this share of its events are older than one before
#: them: a log grouped by user or session has most of them out of order, while a recorded
#: stream has a few late events, which are read in file order exactly as a replay of it would
#: deliver them (so offline scoring keeps agreeing with the live detector).
UNORDERED_SHARE = 0.01


def out_of_order(ts: np.ndarray) -> int:
    """How many timestamps are older than one before them."""
    return int((ts < np.maximum.accumulate(ts)).sum()) if len(ts) else 0


def stable_time_order(ts: np.ndarray) -> np.ndarray:
    """Indices that put ``ts`` in time order, ties in their original order."""
    return np.argsort(ts, kind="stable")


def _chunk_ts(chunk: RawChunk) -> np.ndarray:
    """Each record's event time (ms), or -1 for a record the contract refuses."""
    out = np.full(len(chunk.records), -1, dtype=np.int64)
    for i, r in enumerate(chunk.records):
        if isinstance(r, ev.Reject):
            continue
        with contextlib.suppress(ev.Reject):  # refused records stay -1; the real pass dead-letters them
            out[i] = ev.validate_record(r).ts
    return out


def chunks_in_time_order(path: Path | str, spec: LogSpec | None = None) -> tuple[Iterator[RawChunk], TimeOrder]:
    """A log's chunks in time order, and how it was read.

    A first pass reads only timestamps. A log in time order then streams again unchanged; one
    that is not is read whole and its records (and JSONL lines) are reordered by time, the
    records the contract refuses first, in file order, so they are still dead-lettered.
    """
    spec = spec or LogSpec()
    ts = np.concatenate([_chunk_ts(c) for c in iter_chunks(path, spec)] or [np.empty(0, dtype=np.int64)])
    valid = ts >= 0
    order = TimeOrder(int(valid.sum()), out_of_order(ts[valid]))
    if not order.sorted:
        return iter_chunks(path, spec), order
    chunks = list(iter_chunks(path, spec))
    records = [r for c in chunks for r in c.records]
    raw = [line for c in chunks for line in c.raw] if chunks and chunks[0].raw is not None else None
    idx = np.r_[np.flatnonzero(~valid), np.flatnonzero(valid)[stable_time_order(ts[valid])]]

    def sorted_chunks() -> Iterator[RawChunk]:
        for i in range(0, len(idx), spec.chunk_size):
            part = idx[i : i + spec.chunk_size].tolist()
            yield RawChunk([records[j] for j in part], None if raw is None else [raw[j] for j in part], part)

    return sorted_chunks(), order
