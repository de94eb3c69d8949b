"""Session ends in the window store: which sessions a batch closes, and routing their windows.

A user's session closes when the partition's clock (the newest ``ts`` seen, in
arrival order; live, each first bounded by the time its message was received, by a clock
its producer does not control: ``runtime.pipeline.check_clock_skew``) passes the user's newest event by more than ``session_gap_ms`` before the
user's next event arrives (or when that next event itself comes after the gap). Closes
are decided per event in arrival order, before anything of the batch is written, so
they do not depend on how the stream is cut into batches. :class:`stream.windows.WindowStore`
calls these functions with the arrays they need; none of them keeps state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stream.events import EventBatch
from stream.window_types import Change, Grouping, StoreArrays, WindowConfig, Windows


@dataclass(frozen=True, slots=True)
class Closes:
    """Sessions a batch closes: stored ones (slot + closing row) and batch events (row + closing row)."""

    stored: np.ndarray
    stored_by: np.ndarray
    rows: np.ndarray
    rows_by: np.ndarray
    final_slots: np.ndarray  # each batch user's slot ...
    final_closed: np.ndarray  # ... and whether its newest batch event's session is already closed


def session_closes(config: WindowConfig, arrays: StoreArrays, max_ts: int, batch: EventBatch,
                   g: Grouping) -> Closes:
    """Which sessions the batch closes, decided per event in arrival order (before anything is written).

    ``arrays``: the store's per-slot state before the batch; ``max_ts``: its watermark. Each event
    tells the partition's clock its ``EventBatch.clock_ts``. ``g``: the batch grouped by user, as
    :meth:`WindowStore.add` walks it.
    """
    open_, last_ts, count = arrays.open, arrays.last_ts, arrays.count
    ts, clock = batch.ts, batch.clock_ts
    order, s_sorted, first, start = g.order, g.s_sorted, g.first, g.start
    n = len(ts)
    gap = min(config.session_gap_ms, config.idle_ttl_ms)  # a session ends before its user expires
    watermark = np.maximum.accumulate(np.r_[max_ts, clock])[1:]  # the partition's clock after each arrival
    us, first_at = s_sorted[first], order[first]  # each batch user's slot and first arrival row
    # sessions stored before this batch: closed if the watermark passes them before their user's next event
    cand = np.flatnonzero(open_ & (count > 0) & (last_ts + gap < watermark[-1]))
    at = np.minimum(np.searchsorted(us, cand), len(us) - 1)
    nxt = np.where(us[at] == cand, first_at[at], n)
    by = np.searchsorted(watermark, last_ts[cand] + gap, side="right")
    hit = (by < n) & (by <= nxt)
    # sessions whose newest event is in this batch
    ts_sorted = ts[order]
    stored = np.where(count[s_sorted] > 0, last_ts[s_sorted], ts_sorted[start])
    newest = _segment_running_max(ts_sorted, first, stored)
    nxt_b = np.r_[np.where(first[1:], n, order[1:]), n]  # arrival row of the same user's next event
    by_b = np.maximum(np.searchsorted(watermark, newest + gap, side="right"), order + 1)
    closed_b = (by_b < n) & (by_b <= nxt_b)
    last_of_user = np.r_[first[1:], True]
    by_row = np.argsort(order[closed_b])  # rows ascending, for lookups
    return Closes(stored=cand[hit], stored_by=by[hit], rows=order[closed_b][by_row], rows_by=by_b[closed_b][by_row],
                  final_slots=s_sorted[last_of_user], final_closed=closed_b[last_of_user])


def capture_closes(closes: Closes, on_change: Callable[[Change], None] | None,
                   on_close: Callable[[Change], None] | None) -> Callable[[Change], None] | None:
    """Wrap ``on_change`` so that the windows of session-closing events also reach ``on_close``
    (in-order batches, where every event's window is its user's newest).

    Per user, a session's end reaches ``on_close`` after the session's last event and before the
    user's next event, as it would with the stream cut anywhere between them: the alert cooldown
    is applied in this order, so an end handed over after the next session's windows was held back
    by their alert in one batching and alerted in another (kill -9 parity). A batch where users
    come back after a session ended is handed over in phases - phase k holds each user's events
    after its k-th session end in the batch, then those sessions' ends.
    """
    if on_close is None or not len(closes.rows):
        return on_change

    def both(change: Change) -> None:
        ends = np.isin(change.rows, closes.rows)
        # change rows are grouped by user (slot), each user's in arrival order: a row's phase is the
        # number of its user's ends before it
        first = np.r_[True, change.slots[1:] != change.slots[:-1]]
        before = np.cumsum(ends) - ends
        phase = before - before[first][np.cumsum(first) - 1]
        if not phase.any():  # nobody came back within the batch: one phase, the batch as it is
            parts = [np.arange(len(phase))]
        else:  # a stable sort keeps each phase in batch order, and costs one pass however many phases
            order = np.argsort(phase, kind="stable")
            parts = np.split(order, np.flatnonzero(np.diff(phase[order])) + 1)
        for k, rows in enumerate(parts):
            if on_change is not None:
                on_change(change if k == 0 and len(parts) == 1 else _take(change, rows))
            pick = rows[ends[rows]]
            if len(pick):
                closing = _take(change, pick)
                by = closes.rows_by[np.searchsorted(closes.rows, closing.rows)]
                on_close(Change(closing.slots, by, closing.windows, closing.seq))

    return both


def _take(change: Change, pick: np.ndarray) -> Change:
    """The events of ``change`` at positions ``pick``."""
    w = change.windows
    sub = Windows([w.user_id[i] for i in pick.tolist()], w.ts[pick], w.type[pick], w.item[pick], w.price[pick],
                  w.label[pick], w.length[pick])
    return Change(change.slots[pick], change.rows[pick], sub, change.seq[pick])


def mark_sessions(open_: np.ndarray, closes: Closes) -> None:
    """Record in the store's per-slot ``open_`` flags which sessions are still open after the batch."""
    open_[closes.stored] = False
    open_[closes.final_slots] = ~closes.final_closed


def _segment_running_max(values: np.ndarray, first: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Running maximum within each group of a grouped array (groups start where ``first``),
    each element at least ``initial`` (same value across a group)."""
    if not len(values):
        return values.astype(np.int64)
    v = np.maximum(values, initial).astype(np.int64)
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    lo, hi = np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)
    # lift each group above every earlier one, so one global running max never crosses groups
    base = np.r_[0, np.cumsum(hi - lo + 1)[:-1]]
    shift = base[group] - lo[group]
    return np.maximum.accumulate(v + shift) - shift
