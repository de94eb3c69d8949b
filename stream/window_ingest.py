"""Writing a batch into the window store's ring buffers, the two ways it can go.

* **In order** (the common case: no event older than its user's newest stored one): the
  windows of every event are assembled in one vectorised gather from the stored history
  and the batch itself, then the batch is written with one scatter.
* **With late events**: the batch is applied in rounds of one event per user; a late
  event within the allowed lateness is inserted in place, one later than that is
  returned as too late.

:class:`stream.windows.WindowStore` owns the arrays and passes them in as one
:class:`~stream.window_types.StoreArrays`, with the batch grouped by user as a
:class:`~stream.window_types.Grouping`. These functions write those arrays in place and keep
no state of their own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stream.events import EventBatch
from stream.window_types import COLUMNS, AddResult, Change, Grouping, StoreArrays, WindowConfig, Windows


def add_in_order(arrays: StoreArrays, config: WindowConfig, batch: EventBatch, g: Grouping, types: np.ndarray,
                 on_change: Callable[[Change], None] | None) -> AddResult:
    """Fast path: every user's events arrive in time order after its stored history.

    ``g`` groups the batch by user; ``types`` are its events' store type ids.
    """
    cols, count, last_ts, user_of = arrays.cols, arrays.count, arrays.last_ts, arrays.user_of
    order, s_sorted, first, start, rank = g.order, g.s_sorted, g.first, g.start, g.rank
    n_ev = config.max_events
    group = np.cumsum(first) - 1  # group (user) index of each sorted event
    g_slots = s_sorted[first]
    sizes = np.diff(np.r_[np.flatnonzero(first), len(order)])
    cnt = count[g_slots]
    new = {k: v[order] for k, v in _batch_columns(batch, types).items()}
    if on_change is not None:
        # window of event e = last N of (stored history ++ the user's batch events up to e)
        hpos = cnt[:, None] - n_ev + np.arange(n_ev)[None, :]
        hist = {k: v[g_slots[:, None], hpos % n_ev] for k, v in cols.items()}
        c = rank[:, None] + 1 + np.arange(n_ev)[None, :]  # position in history ++ batch coordinates
        from_hist = c < n_ev
        hc = np.where(from_hist, c, 0)
        bc = np.where(from_hist, 0, start[:, None] + c - n_ev)
        g2 = group[:, None]
        win = {k: np.where(from_hist, hist[k][g2, hc], new[k][bc]) for k in cols}
        valid = np.where(from_hist, (hpos >= 0)[g2, hc], True)
        valid &= win["ts"] >= (new["ts"] - config.span_ms)[:, None]
        windows = Windows([user_of[s] or "" for s in s_sorted.tolist()], win["ts"], win["type"], win["item"],
                          win["price"], win["label"], valid.sum(axis=1))
        on_change(Change(s_sorted, order, windows, cnt[group] + rank + 1))
    keep = rank >= sizes[group] - n_ev  # earlier ones would be overwritten in the ring anyway
    dest = (cnt[group] + rank)[keep] % n_ev
    for k, arr in cols.items():
        arr[s_sorted[keep], dest] = new[k][keep]
    count[g_slots] += sizes
    last = np.r_[np.flatnonzero(first)[1:], len(order)] - 1
    last_ts[g_slots] = new["ts"][last]
    return AddResult(g_slots, order[last], np.empty(0, dtype=np.int64))


def _batch_columns(batch: EventBatch, types: np.ndarray) -> dict[str, np.ndarray]:
    """The batch's values of every store column (:data:`COLUMNS`), by row."""
    return {"ts": batch.ts, "type": types, "item": batch.item, "price": batch.price, "label": batch.label}


def apply_round(arrays: StoreArrays, config: WindowConfig, rows: np.ndarray, slots: np.ndarray, types: np.ndarray,
                batch: EventBatch) -> tuple[np.ndarray, np.ndarray, int]:
    """Place one event per slot; return (rows placed, rows too late, late events inserted in place)."""
    cols, count, last_ts = arrays.cols, arrays.count, arrays.last_ts
    ts = batch.ts[rows]
    held = count[slots] > 0
    last = last_ts[slots]
    late = held & (ts < last)
    too_late = late & (last - ts > config.allowed_lateness_ms)
    inorder = ~late
    r, s = rows[inorder], slots[inorder]
    col = count[s] % config.max_events
    values = _batch_columns(batch, types)
    for k in COLUMNS:
        cols[k][s, col] = values[k][r]
    count[s] += 1
    last_ts[s] = ts[inorder]
    placed, fell_off = [r], []
    insert = late & ~too_late
    for row, slot in zip(rows[insert].tolist(), slots[insert].tolist(), strict=True):
        if insert_late(cols, count, config.max_events, slot, {k: v[row] for k, v in values.items()}):
            placed.append(np.array([row]))
        else:  # older than the whole full window: it has no place, so it is too late, not lost
            fell_off.append(row)
    inserted = int(insert.sum()) - len(fell_off)
    return (np.sort(np.concatenate(placed)), np.sort(np.r_[rows[too_late], np.array(fell_off, dtype=np.int64)]),
            inserted)


def insert_late(cols: dict[str, np.ndarray], count: np.ndarray, n: int, slot: int, event: dict) -> bool:
    """Insert one late event (its value of every column) in time order; False if it fell straight
    off a full window of ``n``."""
    cnt = int(count[slot])
    held = min(cnt, n)
    old_cols = (np.arange(cnt - held, cnt)) % n
    ts_row = cols["ts"][slot, old_cols]
    at = int(np.searchsorted(ts_row, event["ts"], side="right"))
    if held == n and at == 0:
        return False
    new_cols = np.arange(cnt + 1 - min(held + 1, n), cnt + 1) % n
    for name in COLUMNS:
        arr = cols[name]
        merged = np.insert(arr[slot, old_cols], at, event[name])[-n:]
        arr[slot, new_cols] = merged
    count[slot] = cnt + 1
    return True


def window_as_of(w: Windows, ts: np.ndarray, span_ms: int) -> Windows:
    """Windows ``w`` (users' current windows) as they stood at event time ``ts``: the events up to
    it, within the span before it. For an in-place late event, that is the window a reader
    expects - the events before it, ending with it - not the user's newest events."""
    n = w.ts.shape[1]
    valid = w.valid()
    after = (valid & (w.ts > ts[:, None])).sum(axis=1)
    if not after.any():
        return w
    # shift each row right by the events newer than ts, then re-apply the span from ts
    src = np.arange(n)[None, :] - after[:, None]
    keep = src >= 0
    src = np.clip(src, 0, n - 1)
    cols = {k: np.take_along_axis(getattr(w, k), src, axis=1) for k in ("ts", "type", "item", "price", "label")}
    shifted_valid = keep & np.take_along_axis(valid, src, axis=1)
    in_span = shifted_valid & (cols["ts"] >= (ts - span_ms)[:, None])
    return Windows(w.user_id, cols["ts"], cols["type"], cols["item"], cols["price"], cols["label"],
                   in_span.sum(axis=1))
