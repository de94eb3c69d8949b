"""Per-user sliding-window store: the last N events within span T, in event-time order.

Storage is one set of 2-D numpy ring buffers (slot x position), so a batch of events is
written with a handful of vectorised scatters rather than per-event Python lists. Each
user owns a slot; ``count[slot]`` is how many events it has ever accepted, and position
``p`` of its history lives at column ``p % N``.

Policies (all in event time, so replaying a log gives the same windows as the live run):

* **Order.** Windows are kept sorted by ``ts``. An event older than the user's newest
  event but within ``allowed_lateness_ms`` is inserted in place. An event later than
  that is *too late*: it is not placed in any window, it is counted, and its batch row
  is returned so the caller can dead-letter it (nothing disappears silently).
* **Span.** A window holds at most ``max_events`` events, and only those within
  ``span_ms`` of the user's newest event count as part of it when it is read.
* **Idle TTL.** A user whose newest event is ``idle_ttl_ms`` older than the newest event
  the store has seen is evicted by :meth:`WindowStore.expire` (run automatically).
* **Cap.** At most ``max_users`` users are tracked; a new user beyond the cap evicts
  the least recently updated ones (never one touched by the batch being added).
* **Session end.** A user's session closes when the partition's event time (the newest
  ``ts`` seen, in arrival order) passes the user's newest event by more than
  ``session_gap_ms`` before the user's next event arrives (or when that next event itself
  comes after the gap). ``on_close`` then receives the window as it stood at the session's
  last event: what a session *did not do* before it stopped (a checkout never paid, a
  block never closed) is evidence too. Closes are decided per event in arrival order, so
  they do not depend on how the stream is cut into batches either.

Every event completes a window, and ``on_change`` receives the window of every event of a
batch. Events of one user are taken in arrival order (late ones go into place), so the
window each event completes is the same however the stream is cut into batches - which is
what makes offline scoring and the live stream agree. In-order batches (the common case)
are applied with one vectorised gather; batches with late events are applied in rounds of
one event per user.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stream.events import EventBatch

MAX_TYPES = 65_535  # type ids are uint16; id 0 collects every type past the cap


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """Bounds of a window and of the store. Times in milliseconds."""

    max_events: int = 64
    span_ms: int = 3_600_000
    allowed_lateness_ms: int = 60_000
    idle_ttl_ms: int = 6 * 3_600_000
    max_users: int = 1_000_000
    session_gap_ms: int = 1_800_000  # web analytics' usual 30 min of inactivity ends a session

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.span_ms <= 0 or self.max_users < 1:
            raise ValueError("max_events, span_ms and max_users must be positive")
        if self.allowed_lateness_ms < 0 or self.idle_ttl_ms <= 0:
            raise ValueError("allowed_lateness_ms must be >= 0 and idle_ttl_ms > 0")
        if self.idle_ttl_ms < self.span_ms:  # else expiry would change windows, and replays would differ
            raise ValueError("idle_ttl_ms must be >= span_ms")
        if self.session_gap_ms <= 0:
            raise ValueError("session_gap_ms must be > 0")


@dataclass(slots=True)
class Windows:
    """Windows read from the store, oldest -> newest along axis 1, right-aligned.

    Only the last ``length[b]`` columns of row ``b`` belong to the window.
    """

    user_id: list[str]
    ts: np.ndarray  # int64 [B, N]
    type: np.ndarray  # uint16 [B, N] store type ids (see WindowStore.type_names)
    item: np.ndarray  # uint32 [B, N]
    price: np.ndarray  # float32 [B, N]
    label: np.ndarray  # int8 [B, N]
    length: np.ndarray  # int64 [B]

    def __len__(self) -> int:
        return len(self.user_id)

    def valid(self) -> np.ndarray:
        """Boolean [B, N] mask of the columns that belong to each window."""
        n = self.ts.shape[1]
        return np.arange(n)[None, :] >= (n - self.length)[:, None]


@dataclass(frozen=True, slots=True)
class Change:
    """Windows completed by events of a batch: per event, its store slot, its batch row, the
    window it completed (a snapshot) and its 1-based position in its user's history."""

    slots: np.ndarray
    rows: np.ndarray
    windows: Windows
    seq: np.ndarray


@dataclass(slots=True)
class AddResult:
    """Outcome of :meth:`WindowStore.add`.

    ``slots``/``rows``: every user whose window changed, with the batch row of the newest
    event that changed it (the trigger). ``too_late``: batch rows placed in no window.
    """

    slots: np.ndarray
    rows: np.ndarray
    too_late: np.ndarray


class WindowStore:
    """Vectorised per-user sliding windows. Not thread-safe: one owner (a partition) each."""

    def __init__(self, config: WindowConfig | None = None, initial_capacity: int = 1024) -> None:
        self.config = config or WindowConfig()
        self.type_names: list[str] = ["<other>"]
        self._type_ids: dict[str, int] = {}
        self._slot: dict[str, int] = {}
        self._free: list[int] = []
        self._clock = 0
        self._last_expiry_ts = 0
        self.max_ts = 0  # newest event time seen: the store's event-time watermark
        self.late_inserted = 0
        self.too_late = 0
        self.evicted_lru = 0
        self.evicted_idle = 0
        self._alloc(min(initial_capacity, self.config.max_users))

    # ---- storage -------------------------------------------------------------------
    def _alloc(self, capacity: int) -> None:
        n = self.config.max_events
        old = getattr(self, "capacity", 0)

        def grow(name: str, shape: tuple[int, ...], dtype: type, fill: int | float) -> None:
            arr = np.full(shape, fill, dtype=dtype)
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)

        grow("ts", (capacity, n), np.int64, 0)
        grow("type", (capacity, n), np.uint16, 0)
        grow("item", (capacity, n), np.uint32, 0)
        grow("price", (capacity, n), np.float32, np.nan)
        grow("label", (capacity, n), np.int8, -1)
        grow("count", (capacity,), np.int64, 0)
        grow("last_ts", (capacity,), np.int64, 0)
        grow("touched", (capacity,), np.int64, 0)
        grow("open", (capacity,), np.bool_, False)  # events since the user's last session close
        self.user_of: list[str | None] = getattr(self, "user_of", []) + [None] * (capacity - old)
        self._free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    @property
    def users(self) -> int:
        """Number of users currently tracked."""
        return len(self._slot)

    def slot_of(self, user_id: str) -> int | None:
        """The slot holding ``user_id``'s window, or None if it is not tracked."""
        return self._slot.get(user_id)

    def nbytes(self) -> int:
        """Bytes held by the store: arrays plus an estimate of the user index."""
        arrays = sum(
            getattr(self, a).nbytes
            for a in ("ts", "type", "item", "price", "label", "count", "last_ts", "touched", "open")
        )
        index = sys.getsizeof(self._slot) + sys.getsizeof(self.user_of)
        index += sum(sys.getsizeof(u) for u in self._slot)
        return arrays + index

    # ---- ingest --------------------------------------------------------------------
    def _type_ids_for(self, names: list[str]) -> np.ndarray:
        ids = self._type_ids
        out = np.empty(len(names), dtype=np.uint16)
        for i, name in enumerate(names):
            t = ids.get(name)
            if t is None:
                t = len(self.type_names) if len(self.type_names) <= MAX_TYPES else 0
                if t:
                    ids[name] = t
                    self.type_names.append(name)
            out[i] = t
        return out

    def _evict(self, slots: np.ndarray) -> None:
        for s in slots.tolist():
            user = self.user_of[s]
            if user is not None:
                del self._slot[user]
                self.user_of[s] = None
                self._free.append(s)
        self.count[slots] = 0
        self.last_ts[slots] = 0
        self.touched[slots] = 0
        self.open[slots] = False

    def _slots_for(self, user_ids: list[str]) -> np.ndarray:
        get = self._slot.get
        found = [get(u, -1) for u in user_ids]
        slots = np.array(found, dtype=np.int64)
        missing = slots < 0
        if missing.any():
            new_users = list(dict.fromkeys(u for u, s in zip(user_ids, found, strict=True) if s < 0))
            self.touched[slots[~missing]] = self._clock  # protect this batch's users from LRU
            need = len(new_users) - len(self._free)
            if need > 0 and self.capacity < self.config.max_users:
                self._alloc(min(self.config.max_users, max(self.capacity * 2, self.capacity + need)))
                need = len(new_users) - len(self._free)
            if need > 0:
                in_use = np.flatnonzero(self.count > 0)
                idle = in_use[self.touched[in_use] < self._clock]
                # evict a little more than needed so floods do not pay for a partition per user
                k = min(len(idle), max(need, self.config.max_users // 100))
                victims = idle[np.argpartition(self.touched[idle], k - 1)[:k]] if k < len(idle) else idle
                self._evict(victims)
                self.evicted_lru += len(victims)
            for u in new_users:
                s = self._free.pop()
                self._slot[u] = s
                self.user_of[s] = u
            slots[missing] = [self._slot[u] for u, m in zip(user_ids, missing.tolist(), strict=True) if m]
        self.touched[slots] = self._clock
        return slots

    def add(self, batch: EventBatch, on_change: Callable[[Change], None] | None = None,
            on_close: Callable[[Change], None] | None = None) -> AddResult:
        """Add a batch of valid events; report which windows changed and which sessions closed.

        ``on_change`` (optional) receives the window every event completed. ``on_close``
        (optional) receives the windows of sessions that closed (see the module docstring);
        its ``rows`` are the batch rows whose arrival closed them and its ``seq`` the
        position of each session's last event in its user's history. In the common
        case (no event older than its user's newest stored one) all windows of the batch are
        assembled in one vectorised gather from the stored history and the batch itself;
        with late events the batch is applied in rounds (one event per user per round) and
        each round's windows are read back before the next round overwrites them.
        """
        if len(batch) == 0:
            empty = np.empty(0, dtype=np.int64)
            return AddResult(empty, empty, empty)
        chunk = max(1, self.config.max_users // 2)
        if len(batch) > chunk:  # only with tiny caps: a chunk must fit beside the users it protects
            parts = []
            for start in range(0, len(batch), chunk):
                sub = batch.take(np.arange(start, min(start + chunk, len(batch))))
                def shift(cb: Callable[[Change], None] | None, o: int = start) -> Callable[[Change], None] | None:
                    return None if cb is None else (lambda c: cb(Change(c.slots, c.rows + o, c.windows, c.seq)))
                parts.append(self.add(sub, shift(on_change), shift(on_close)))
            return _merge_results(parts, chunk)
        self._clock += 1
        slots = self._slots_for(batch.user_id)
        types = self._type_ids_for(batch.type)
        n = len(batch)
        # per user, events are taken in arrival order: an event older than the one before it is
        # late and goes into place. That makes every event's window independent of batching.
        order = np.lexsort((np.arange(n), slots))
        s_sorted = slots[order]
        first = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        rank = np.arange(n) - start
        ts_sorted = batch.ts[order]
        closes = self._session_closes(batch.ts, order, s_sorted, first, start)
        if on_close is not None and len(closes.stored):
            on_close(Change(closes.stored, closes.stored_by, self.read(closes.stored), self.count[closes.stored].copy()))
        stored_last = np.where(self.count[s_sorted] > 0, self.last_ts[s_sorted], np.iinfo(np.int64).min)
        prev = np.where(first, stored_last, np.r_[stored_last[:1], ts_sorted[:-1]])
        if not (ts_sorted < prev).any():
            res = self._add_in_order(batch, order, s_sorted, first, start, rank, types,
                                     self._capture_closes(closes, on_change, on_close))
            self._mark_sessions(closes)
            return res
        changed_slots: list[np.ndarray] = []
        changed_rows: list[np.ndarray] = []
        late_rows: list[np.ndarray] = []
        for r in range(int(rank.max()) + 1):
            rows = order[rank == r]
            placed, too_late = self._apply_round(rows, slots[rows], types, batch)
            late_rows.append(too_late)
            if len(placed):
                changed_slots.append(slots[placed])
                changed_rows.append(placed)
                if on_change is not None:
                    ps = slots[placed]
                    on_change(Change(ps, placed, self._read_as_of(ps, batch.ts[placed]), self.count[ps].copy()))
            ending = rows[np.isin(rows, closes.rows)]
            if on_close is not None and len(ending):  # the session as it stands now, newest events included
                es = slots[ending]
                by = closes.rows_by[np.searchsorted(closes.rows, ending)]
                on_close(Change(es, by, self.read(es), self.count[es].copy()))
        self._after_add(batch)
        self._mark_sessions(closes)
        all_slots = np.concatenate(changed_slots) if changed_slots else np.empty(0, dtype=np.int64)
        all_rows = np.concatenate(changed_rows) if changed_rows else np.empty(0, dtype=np.int64)
        # later rounds hold later events, so the last occurrence of a slot is its trigger
        rev_unique, rev_idx = np.unique(all_slots[::-1], return_index=True)
        too_late_rows = np.sort(np.concatenate(late_rows))
        self.too_late += len(too_late_rows)
        return AddResult(rev_unique, all_rows[::-1][rev_idx], too_late_rows)

    def _session_closes(self, ts: np.ndarray, order: np.ndarray, s_sorted: np.ndarray, first: np.ndarray,
                        start: np.ndarray) -> _Closes:
        """Which sessions the batch closes, decided per event in arrival order (before anything is written).

        ``order``/``s_sorted``/``first``/``start``: the batch grouped by user, as :meth:`add` sorts it.
        """
        n = len(ts)
        gap = min(self.config.session_gap_ms, self.config.idle_ttl_ms)  # a session ends before its user expires
        watermark = np.maximum.accumulate(np.r_[self.max_ts, ts])[1:]  # event time after each arrival
        us, first_at = s_sorted[first], order[first]  # each batch user's slot and first arrival row
        # sessions stored before this batch: closed if the watermark passes them before their user's next event
        cand = np.flatnonzero(self.open & (self.last_ts + gap < watermark[-1]))
        at = np.minimum(np.searchsorted(us, cand), len(us) - 1)
        nxt = np.where(us[at] == cand, first_at[at], n)
        by = np.searchsorted(watermark, self.last_ts[cand] + gap, side="right")
        hit = (by < n) & (by <= nxt)
        # sessions whose newest event is in this batch
        ts_sorted = ts[order]
        stored = np.where(self.count[s_sorted] > 0, self.last_ts[s_sorted], ts_sorted[start])
        newest = _segment_running_max(ts_sorted, first, stored)
        nxt_b = np.r_[np.where(first[1:], n, order[1:]), n]  # arrival row of the same user's next event
        by_b = np.maximum(np.searchsorted(watermark, newest + gap, side="right"), order + 1)
        closed_b = (by_b < n) & (by_b <= nxt_b)
        last_of_user = np.r_[first[1:], True]
        by_row = np.argsort(order[closed_b])  # rows ascending, for lookups
        return _Closes(stored=cand[hit], stored_by=by[hit], rows=order[closed_b][by_row], rows_by=by_b[closed_b][by_row],
                       final_slots=s_sorted[last_of_user], final_closed=closed_b[last_of_user])

    def _capture_closes(self, closes: _Closes, on_change: Callable[[Change], None] | None,
                        on_close: Callable[[Change], None] | None) -> Callable[[Change], None] | None:
        """Wrap ``on_change`` so that the windows of session-closing events also reach ``on_close``
        (in-order batches, where every event's window is its user's newest)."""
        if on_close is None or not len(closes.rows):
            return on_change

        def both(change: Change) -> None:
            if on_change is not None:
                on_change(change)
            pick = np.flatnonzero(np.isin(change.rows, closes.rows))
            if len(pick):
                w = change.windows
                sub = Windows([w.user_id[i] for i in pick.tolist()], w.ts[pick], w.type[pick], w.item[pick],
                              w.price[pick], w.label[pick], w.length[pick])
                by = closes.rows_by[np.searchsorted(closes.rows, change.rows[pick])]
                on_close(Change(change.slots[pick], by, sub, change.seq[pick]))

        return both

    def _mark_sessions(self, closes: _Closes) -> None:
        self.open[closes.stored] = False
        self.open[closes.final_slots] = ~closes.final_closed

    def _after_add(self, batch: EventBatch) -> None:
        self.max_ts = max(self.max_ts, int(batch.ts.max()))
        if self.max_ts - self._last_expiry_ts > self.config.idle_ttl_ms // 10:
            self.expire()

    def _add_in_order(self, batch: EventBatch, order: np.ndarray, s_sorted: np.ndarray, first: np.ndarray,
                      start: np.ndarray, rank: np.ndarray, types: np.ndarray,
                      on_change: Callable[[Change], None] | None) -> AddResult:
        """Fast path: every user's events arrive in time order after its stored history.

        ``order`` sorts the batch by (slot, arrival); ``start``/``rank`` locate each event in its group.
        """
        n_ev = self.config.max_events
        group = np.cumsum(first) - 1  # group (user) index of each sorted event
        g_slots = s_sorted[first]
        sizes = np.diff(np.r_[np.flatnonzero(first), len(order)])
        cnt = self.count[g_slots]
        cols = {name: getattr(self, name) for name in ("ts", "type", "item", "price", "label")}
        new = {"ts": batch.ts[order], "type": types[order], "item": batch.item[order], "price": batch.price[order],
               "label": batch.label[order]}
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
            valid &= win["ts"] >= (new["ts"] - self.config.span_ms)[:, None]
            windows = Windows([self.user_of[s] or "" for s in s_sorted.tolist()], win["ts"], win["type"], win["item"],
                              win["price"], win["label"], valid.sum(axis=1))
            on_change(Change(s_sorted, order, windows, cnt[group] + rank + 1))
        keep = rank >= sizes[group] - n_ev  # earlier ones would be overwritten in the ring anyway
        dest = (cnt[group] + rank)[keep] % n_ev
        for k, arr in cols.items():
            arr[s_sorted[keep], dest] = new[k][keep]
        self.count[g_slots] += sizes
        last = np.r_[np.flatnonzero(first)[1:], len(order)] - 1
        self.last_ts[g_slots] = new["ts"][last]
        self._after_add(batch)
        return AddResult(g_slots, order[last], np.empty(0, dtype=np.int64))

    def _apply_round(
        self, rows: np.ndarray, slots: np.ndarray, types: np.ndarray, batch: EventBatch
    ) -> tuple[np.ndarray, np.ndarray]:
        """Place one event per slot; return (rows placed, rows too late)."""
        ts = batch.ts[rows]
        held = self.count[slots] > 0
        last = self.last_ts[slots]
        late = held & (ts < last)
        too_late = late & (last - ts > self.config.allowed_lateness_ms)
        inorder = ~late
        r, s = rows[inorder], slots[inorder]
        col = self.count[s] % self.config.max_events
        self.ts[s, col] = ts[inorder]
        self.type[s, col] = types[r]
        self.item[s, col] = batch.item[r]
        self.price[s, col] = batch.price[r]
        self.label[s, col] = batch.label[r]
        self.count[s] += 1
        self.last_ts[s] = ts[inorder]
        placed, fell_off = [r], []
        insert = late & ~too_late
        for row, slot in zip(rows[insert].tolist(), slots[insert].tolist(), strict=True):
            if self._insert_late(slot, row, int(types[row]), batch):
                placed.append(np.array([row]))
            else:  # older than the whole full window: it has no place, so it is too late, not lost
                fell_off.append(row)
        self.late_inserted += int(insert.sum()) - len(fell_off)
        return np.sort(np.concatenate(placed)), np.sort(np.r_[rows[too_late], np.array(fell_off, dtype=np.int64)])

    def _insert_late(self, slot: int, row: int, type_id: int, batch: EventBatch) -> bool:
        """Insert one late event in time order; False if it fell straight off a full window."""
        n = self.config.max_events
        cnt = int(self.count[slot])
        held = min(cnt, n)
        cols = (np.arange(cnt - held, cnt)) % n
        ts_row = self.ts[slot, cols]
        at = int(np.searchsorted(ts_row, batch.ts[row], side="right"))
        if held == n and at == 0:
            return False
        new_cols = np.arange(cnt + 1 - min(held + 1, n), cnt + 1) % n
        for name, value in (
            ("ts", batch.ts[row]),
            ("type", type_id),
            ("item", batch.item[row]),
            ("price", batch.price[row]),
            ("label", batch.label[row]),
        ):
            arr = getattr(self, name)
            merged = np.insert(arr[slot, cols], at, value)[-n:]
            arr[slot, new_cols] = merged
        self.count[slot] = cnt + 1
        return True

    # ---- reading & eviction ----------------------------------------------------------
    def _read_as_of(self, slots: np.ndarray, ts: np.ndarray) -> Windows:
        """Windows of ``slots`` as they stood at event time ``ts``: the events up to it, within
        the span before it. For an in-place late event, that is the window a reader expects -
        the events before it, ending with it - not the user's newest events."""
        w = self.read(slots)
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
        in_span = shifted_valid & (cols["ts"] >= (ts - self.config.span_ms)[:, None])
        return Windows(w.user_id, cols["ts"], cols["type"], cols["item"], cols["price"], cols["label"],
                       in_span.sum(axis=1))

    def read(self, slots: np.ndarray) -> Windows:
        """Current windows of ``slots`` (span applied relative to each user's newest event)."""
        slots = np.asarray(slots, dtype=np.int64)
        n = self.config.max_events
        cnt = self.count[slots]
        pos = cnt[:, None] - n + np.arange(n)[None, :]
        cols = pos % n
        rows = slots[:, None]
        ts = self.ts[rows, cols]
        valid = (pos >= 0) & (ts >= (self.last_ts[slots] - self.config.span_ms)[:, None])
        return Windows(
            user_id=[self.user_of[s] or "" for s in slots.tolist()],
            ts=ts,
            type=self.type[rows, cols],
            item=self.item[rows, cols],
            price=self.price[rows, cols],
            label=self.label[rows, cols],
            length=valid.sum(axis=1),
        )

    def expire(self, watermark_ms: int | None = None) -> int:
        """Evict users idle for longer than the TTL before ``watermark_ms`` (default: newest seen)."""
        watermark = self.max_ts if watermark_ms is None else watermark_ms
        self._last_expiry_ts = watermark
        stale = np.flatnonzero((self.count > 0) & (self.last_ts < watermark - self.config.idle_ttl_ms))
        if len(stale):
            self._evict(stale)
            self.evicted_idle += len(stale)
        return len(stale)


@dataclass(frozen=True, slots=True)
class _Closes:
    """Sessions a batch closes: stored ones (slot + closing row) and batch events (row + closing row)."""

    stored: np.ndarray
    stored_by: np.ndarray
    rows: np.ndarray
    rows_by: np.ndarray
    final_slots: np.ndarray  # each batch user's slot ...
    final_closed: np.ndarray  # ... and whether its newest batch event's session is already closed


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


def _merge_results(parts: list[AddResult], chunk: int) -> AddResult:
    offsets = [i * chunk for i in range(len(parts))]
    slots = np.concatenate([p.slots for p in parts])
    rows = np.concatenate([p.rows + o for p, o in zip(parts, offsets, strict=True)])
    late = np.concatenate([p.too_late + o for p, o in zip(parts, offsets, strict=True)])
    rev_unique, rev_idx = np.unique(slots[::-1], return_index=True)
    return AddResult(rev_unique, rows[::-1][rev_idx], late)
