"""The window store's value types: its bounds and what it hands back.

:class:`WindowConfig` bounds a window and the store; :class:`Windows` is a set of windows
read from it; :class:`Change` and :class:`AddResult` describe what a batch did;
:class:`Grouping` (a batch grouped by user) and :class:`StoreArrays` (the store's arrays) are
what the store hands the ingest and session functions instead of a dozen loose arrays. The
store itself is :class:`stream.windows.WindowStore`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.window_defaults import DEFAULT_MAX_EVENTS, DEFAULT_SPAN_MS


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """Bounds of a window and of the store. Times in milliseconds."""

    max_events: int = DEFAULT_MAX_EVENTS
    span_ms: int = DEFAULT_SPAN_MS
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


#: The per-event columns of the store's ring buffers and of :class:`Windows`, in one order.
COLUMNS: tuple[str, ...] = ("ts", "type", "item", "price", "label")


@dataclass(frozen=True, slots=True)
class Grouping:
    """A batch grouped by user, each user's events in arrival order: how the store walks a batch.

    ``order`` sorts the batch rows by (slot, arrival); ``s_sorted`` is the slot of each sorted
    event, ``first`` marks each user's first one, ``start`` is where its user's group begins
    and ``rank`` its position inside the group.
    """

    order: np.ndarray
    s_sorted: np.ndarray
    first: np.ndarray
    start: np.ndarray
    rank: np.ndarray

    @classmethod
    def of(cls, slots: np.ndarray) -> Grouping:
        """Group the events of a batch whose rows have store slots ``slots``."""
        n = len(slots)
        order = np.lexsort((np.arange(n), slots))
        s_sorted = slots[order]
        first = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        return cls(order, s_sorted, first, start, np.arange(n) - start)


@dataclass(frozen=True, slots=True)
class StoreArrays:
    """The window store's arrays, handed to the functions that read and write them in place.

    ``cols`` maps each of :data:`COLUMNS` to its ``[slot, position]`` ring buffer; ``count``,
    ``last_ts`` and ``open`` are per slot (events ever stored, newest event time, a session
    still open); ``user_of`` is each slot's user. Made fresh by the store for each call:
    growing the store replaces the arrays.
    """

    cols: dict[str, np.ndarray]
    count: np.ndarray
    last_ts: np.ndarray
    open: np.ndarray
    user_of: list[str | None]


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


def merge_results(parts: list[AddResult], chunk: int) -> AddResult:
    """One :class:`AddResult` from those of consecutive sub-batches of ``chunk`` rows each."""
    offsets = [i * chunk for i in range(len(parts))]
    slots = np.concatenate([p.slots for p in parts])
    rows = np.concatenate([p.rows + o for p, o in zip(parts, offsets, strict=True)])
    late = np.concatenate([p.too_late + o for p, o in zip(parts, offsets, strict=True)])
    rev_unique, rev_idx = np.unique(slots[::-1], return_index=True)
    return AddResult(rev_unique, rows[::-1][rev_idx], late)
