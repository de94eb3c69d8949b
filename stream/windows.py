"""Per-user sliding-window store: the last N events within span T, in event-time order.

Storage is one set of 2-D numpy ring buffers (slot x position), so a batch of events is
written with a handful of vectorised scatters rather than per-event Python lists. Each
user owns a slot; ``count[slot]`` is how many events it has ever accepted, and position
``p`` of its history lives at column ``p % N``.

Policies (all in event time, so replaying a log gives the same windows as the live run;
the partition's clock is event time too, capped live by broker time, which replayed
history never reaches):

* **Order.** Windows are kept sorted by ``ts``. An event older than the user's newest
  event but within ``allowed_lateness_ms`` is inserted in place. An event later than
  that is *too late*: it is not placed in any window, it is counted, and its batch row
  is returned so the caller can dead-letter it (nothing disappears silently).
* **Span.** A window holds at most ``max_events`` events, and only those within
  ``span_ms`` of the user's newest event count as part of it when it is read.
* **Idle TTL.** A user whose newest event is ``idle_ttl_ms`` older than the partition's
  clock (as for session ends) is evicted by :meth:`WindowStore.expire` (run automatically).
* **Cap.** At most ``max_users`` users are tracked; a new user beyond the cap evicts
  the least recently updated ones (never one touched by the batch being added).
* **Session end.** A user's session closes when the partition's clock (the newest
  ``ts`` seen, in arrival order; live, each ``ts`` is first bounded by the time its message
  was received, by a clock its producer does not control) passes the user's newest event by more than
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

This module holds the store itself: slots, type ids, eviction, reading, and the order in
which :meth:`WindowStore.add` does things. Its value types are in :mod:`stream.window_types`,
the session-close decisions in :mod:`stream.window_sessions` and the two ways a batch is
written (in order, in rounds) in :mod:`stream.window_ingest`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from stream.events import EventBatch
from stream.window_ingest import add_in_order, apply_round, window_as_of
from stream.window_sessions import Closes, capture_closes, mark_sessions, session_closes
from stream.window_types import (
    COLUMNS,
    AddResult,
    Change,
    Grouping,
    StoreArrays,
    WindowConfig,
    Windows,
    merge_results,
)

__all__ = ["MAX_TYPES", "AddResult", "Change", "WindowConfig", "WindowStore", "Windows"]

MAX_TYPES = 65_535  # type ids are uint16; id 0 collects every type past the cap


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
        self.max_ts = 0  # newest event time seen (capped by the receipt time live): the store's watermark
        self.late_inserted = 0
        self.too_late = 0
        self.evicted_lru = 0
        self.evicted_idle = 0
        #: told the users each eviction drops (their alert cooldown goes with their window)
        self.on_evict: Callable[[list[str]], None] | None = None
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
            for a in (*COLUMNS, "count", "last_ts", "touched", "open")
        )
        index = sys.getsizeof(self._slot) + sys.getsizeof(self.user_of)
        index += sum(sys.getsizeof(u) for u in self._slot)
        return arrays + index

    def _arrays(self) -> StoreArrays:
        """The arrays the ingest and session functions work on (fresh each call: growing the store replaces them)."""
        return StoreArrays({name: getattr(self, name) for name in COLUMNS}, self.count, self.last_ts, self.open,
                           self.user_of)

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
        gone: list[str] = []
        for s in slots.tolist():
            user = self.user_of[s]
            if user is not None:
                del self._slot[user]
                self.user_of[s] = None
                self._free.append(s)
                gone.append(user)
        if self.on_evict is not None and gone:
            self.on_evict(gone)
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
            return merge_results(parts, chunk)
        self._clock += 1
        slots = self._slots_for(batch.user_id)
        types = self._type_ids_for(batch.type)
        # per user, events are taken in arrival order: an event older than the one before it is
        # late and goes into place. That makes every event's window independent of batching.
        g = Grouping.of(slots)
        order, s_sorted, first = g.order, g.s_sorted, g.first
        ts_sorted = batch.ts[order]
        arrays = self._arrays()
        closes = session_closes(self.config, arrays, self.max_ts, batch, g)
        if on_close is not None and len(closes.stored):
            on_close(Change(closes.stored, closes.stored_by, self.read(closes.stored), self.count[closes.stored].copy()))
        stored_last = np.where(self.count[s_sorted] > 0, self.last_ts[s_sorted], np.iinfo(np.int64).min)
        prev = np.where(first, stored_last, np.r_[stored_last[:1], ts_sorted[:-1]])
        if not (ts_sorted < prev).any():
            res = add_in_order(arrays, self.config, batch, g, types, capture_closes(closes, on_change, on_close))
            # before _after_add: its expiry may evict a user of this batch, whose freed slot must not
            # stay marked open (the next user given that slot would have a session of 0 events end)
            mark_sessions(self.open, closes)
            self._after_add(batch)
            return res
        return self._add_in_rounds(batch, slots, types, g, closes, on_change, on_close)

    def _add_in_rounds(self, batch: EventBatch, slots: np.ndarray, types: np.ndarray, g: Grouping, closes: Closes,
                       on_change: Callable[[Change], None] | None,
                       on_close: Callable[[Change], None] | None) -> AddResult:
        """The batch with late events: one event per user per round, each round's windows read
        back before the next round overwrites them."""
        order, rank = g.order, g.rank
        changed_slots: list[np.ndarray] = []
        changed_rows: list[np.ndarray] = []
        late_rows: list[np.ndarray] = []
        for r in range(int(rank.max()) + 1):
            rows = order[rank == r]
            placed, too_late, inserted = apply_round(self._arrays(), self.config, rows, slots[rows], types, batch)
            self.late_inserted += inserted
            late_rows.append(too_late)
            if len(placed):
                changed_slots.append(slots[placed])
                changed_rows.append(placed)
                if on_change is not None:
                    ps = slots[placed]
                    as_of = window_as_of(self.read(ps), batch.ts[placed], self.config.span_ms)
                    on_change(Change(ps, placed, as_of, self.count[ps].copy()))
            ending = rows[np.isin(rows, closes.rows)]
            if on_close is not None and len(ending):  # the session as it stands now, newest events included
                es = slots[ending]
                by = closes.rows_by[np.searchsorted(closes.rows, ending)]
                on_close(Change(es, by, self.read(es), self.count[es].copy()))
        mark_sessions(self.open, closes)  # before _after_add, as in add
        self._after_add(batch)
        all_slots = np.concatenate(changed_slots) if changed_slots else np.empty(0, dtype=np.int64)
        all_rows = np.concatenate(changed_rows) if changed_rows else np.empty(0, dtype=np.int64)
        # later rounds hold later events, so the last occurrence of a slot is its trigger
        rev_unique, rev_idx = np.unique(all_slots[::-1], return_index=True)
        too_late_rows = np.sort(np.concatenate(late_rows))
        self.too_late += len(too_late_rows)
        return AddResult(rev_unique, all_rows[::-1][rev_idx], too_late_rows)

    def _after_add(self, batch: EventBatch) -> None:
        self.max_ts = max(self.max_ts, int(batch.clock_ts.max()))
        if self.max_ts - self._last_expiry_ts > self.config.idle_ttl_ms // 10:
            self.expire()

    # ---- reading & eviction ----------------------------------------------------------
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
