"""Window store: bounded, event-time ordered, per-user windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.events import Event, EventBatch
from stream.windows import WindowConfig, WindowStore

T0 = 1_700_000_000_000


def batch(*events: tuple[str, int, str]) -> EventBatch:
    return EventBatch.from_events([Event(u, T0 + t, ty, item_id=f"i{t}") for u, t, ty in events])


def window_of(store: WindowStore, user: str) -> tuple[list[int], list[str]]:
    w = store.read(np.array([store.slot_of(user)]))
    n = int(w.length[0])
    ts = w.ts[0, -n:] - T0 if n else np.array([], dtype=np.int64)
    return ts.tolist(), [store.type_names[t] for t in w.type[0, -n:]] if n else []


def test_keeps_only_the_last_n_events():
    store = WindowStore(WindowConfig(max_events=4))
    store.add(batch(*[("u", i * 1000, f"t{i}") for i in range(10)]))
    assert window_of(store, "u") == ([6000, 7000, 8000, 9000], ["t6", "t7", "t8", "t9"])


def test_events_outside_the_span_are_not_part_of_the_window():
    store = WindowStore(WindowConfig(max_events=8, span_ms=10_000))
    store.add(batch(("u", 0, "a"), ("u", 5_000, "b"), ("u", 12_000, "c")))
    assert window_of(store, "u")[0] == [5_000, 12_000]


def test_users_are_independent():
    store = WindowStore()
    store.add(batch(("u1", 0, "a"), ("u2", 1, "b"), ("u1", 2, "c")))
    assert window_of(store, "u1")[1] == ["a", "c"]
    assert window_of(store, "u2")[1] == ["b"]


def test_out_of_order_events_in_one_batch_end_up_in_event_time_order():
    store = WindowStore()
    store.add(batch(("u", 3000, "c"), ("u", 1000, "a"), ("u", 2000, "b")))
    assert window_of(store, "u") == ([1000, 2000, 3000], ["a", "b", "c"])


def test_late_event_within_allowed_lateness_goes_into_place():
    store = WindowStore(WindowConfig(allowed_lateness_ms=5_000))
    store.add(batch(("u", 1000, "a"), ("u", 4000, "c")))
    res = store.add(batch(("u", 2000, "b")))
    assert window_of(store, "u") == ([1000, 2000, 4000], ["a", "b", "c"])
    assert store.late_inserted == 1
    assert res.slots.tolist() == [store.slot_of("u")]


def test_late_event_into_a_full_window_keeps_the_newest_n_in_order():
    store = WindowStore(WindowConfig(max_events=3, allowed_lateness_ms=5_000))
    store.add(batch(("u", 1000, "a"), ("u", 2000, "b"), ("u", 4000, "d")))
    store.add(batch(("u", 3000, "c")))
    assert window_of(store, "u") == ([2000, 3000, 4000], ["b", "c", "d"])


def test_too_late_event_is_returned_counted_and_not_placed():
    store = WindowStore(WindowConfig(allowed_lateness_ms=1_000))
    store.add(batch(("u", 10_000, "a")))
    res = store.add(batch(("u", 2_000, "old"), ("v", 0, "x")))
    assert res.too_late.tolist() == [0]
    assert store.too_late == 1
    assert window_of(store, "u")[1] == ["a"]
    assert res.slots.tolist() == [store.slot_of("v")]


def test_add_reports_changed_users_and_their_newest_event_as_trigger():
    store = WindowStore()
    res = store.add(batch(("u1", 0, "a"), ("u2", 0, "b"), ("u1", 5, "c")))
    trig = dict(zip(res.slots.tolist(), res.rows.tolist(), strict=True))
    assert trig == {store.slot_of("u1"): 2, store.slot_of("u2"): 1}


def test_rounds_expose_the_window_completed_by_every_event():
    store = WindowStore()
    seen = []

    def on_change(change):
        seen.extend(zip(change.rows.tolist(), change.windows.length.tolist(), strict=True))

    store.add(batch(("u", 0, "a"), ("u", 1, "b"), ("v", 0, "x"), ("u", 2, "c")), on_change=on_change)
    assert sorted(seen) == [(0, 1), (1, 2), (2, 1), (3, 3)]


def test_windows_do_not_depend_on_how_the_stream_is_batched():
    events = [(f"u{i % 7}", (i * 37) % 1000 + i * 10, f"t{i % 5}") for i in range(300)]
    one = WindowStore(WindowConfig(max_events=16, allowed_lateness_ms=10**9))
    one.add(batch(*events))
    many = WindowStore(WindowConfig(max_events=16, allowed_lateness_ms=10**9))
    for i in range(0, 300, 13):
        many.add(batch(*events[i : i + 13]))
    for u in {e[0] for e in events}:
        assert window_of(one, u) == window_of(many, u)


def test_idle_users_expire_after_the_ttl_in_event_time():
    store = WindowStore(WindowConfig(idle_ttl_ms=60_000, span_ms=60_000))
    store.add(batch(("old", 0, "a"), ("new", 50_000, "a")))
    store.add(batch(("new", 100_000, "b")))  # the watermark passes old's TTL: evicted on the way
    assert store.slot_of("old") is None and store.slot_of("new") is not None
    assert store.evicted_idle == 1


def test_idle_expiry_follows_the_partition_clock_not_an_event_time_ahead_of_it():
    store = WindowStore(WindowConfig(idle_ttl_ms=60_000, span_ms=60_000))
    store.add(batch(("old", 0, "a"), ("new", 50_000, "a")))
    ahead = batch(("new", 100_000, "b"))
    ahead.clock = np.array([T0 + 55_000])  # its message's broker time: the event claims 45 s more
    store.add(ahead)
    assert store.slot_of("old") is not None and store.evicted_idle == 0


def test_expire_accepts_an_explicit_watermark():
    store = WindowStore(WindowConfig(idle_ttl_ms=60_000, span_ms=60_000))
    store.add(batch(("u", 0, "a")))
    assert store.expire(watermark_ms=T0 + 30_000) == 0
    assert store.expire(watermark_ms=T0 + 61_000) == 1
    assert store.users == 0


def test_user_cap_evicts_the_least_recently_updated():
    store = WindowStore(WindowConfig(max_users=100), initial_capacity=8)
    for i in range(100):
        store.add(batch((f"u{i}", i, "a")))
    store.add(batch(("u0", 1000, "b")))  # u0 is fresh again
    store.add(batch(("newcomer", 2000, "a")))
    assert store.users <= 100
    assert store.slot_of("newcomer") is not None
    assert store.slot_of("u0") is not None
    assert store.slot_of("u1") is None
    assert store.evicted_lru >= 1


def test_a_flood_of_users_never_exceeds_the_cap():
    store = WindowStore(WindowConfig(max_users=50), initial_capacity=4)
    res = store.add(batch(*[(f"u{i}", i, "a") for i in range(1000)]))
    assert store.users <= 50 and store.capacity <= 50
    assert len(res.slots) > 0


def test_every_eviction_names_the_users_it_dropped():
    store = WindowStore(WindowConfig(max_users=50), initial_capacity=4)
    dropped: list[str] = []
    store.on_evict = dropped.extend
    for i in range(200):
        store.add(batch((f"u{i}", i, "a")))
    assert len(dropped) == store.evicted_lru and store.users + len(dropped) == 200
    assert all(store.slot_of(u) is None for u in dropped)


def test_event_storm_from_one_user_stays_within_the_window_bound():
    store = WindowStore(WindowConfig(max_events=8))
    store.add(batch(*[("storm", i, "click") for i in range(5000)]))
    ts, _ = window_of(store, "storm")
    assert ts == list(range(4992, 5000))
    assert store.ts.shape[1] == 8


def test_storage_is_numpy_arrays_and_small_per_user():
    store = WindowStore(WindowConfig(max_events=64), initial_capacity=10_000)
    store.add(batch(*[(f"user{i:06d}", i, "view") for i in range(10_000)]))
    assert isinstance(store.ts, np.ndarray) and store.ts.shape == (10_000, 64)
    assert store.nbytes() / store.users < 2048


def test_new_types_are_interned_without_an_enum():
    store = WindowStore()
    store.add(batch(("u", 0, "E5"), ("u", 1, "E22")))
    assert window_of(store, "u")[1] == ["E5", "E22"]


@pytest.mark.parametrize("bad", [dict(max_events=0), dict(span_ms=0), dict(max_users=0), dict(allowed_lateness_ms=-1)])
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError):
        WindowConfig(**bad)


def snapshots(store: WindowStore, batches) -> dict[int, tuple]:
    """Window completed by each event (keyed by event time, unique here), as plain tuples."""
    out = {}
    offset = 0

    def on_change(change):
        w = change.windows
        for j, row in enumerate(change.rows.tolist()):
            n = int(w.length[j])
            out[offset + row] = (tuple(w.ts[j, -n:].tolist()), tuple(w.item[j, -n:].tolist()), int(change.seq[j]))

    for b in batches:
        store.add(b, on_change=on_change)
        offset += len(b)
    return out


@pytest.mark.parametrize("late", [False, True], ids=["in-order", "with-late-events"])
def test_every_events_window_is_the_same_whatever_the_batching(late):
    rng = np.random.default_rng(5)
    n = 600
    ts = np.sort(rng.integers(0, 2_000_000, n))
    if late:  # swap some neighbours so events arrive slightly out of order
        for i in rng.integers(1, n - 1, 40):
            ts[i], ts[i + 1] = ts[i + 1], ts[i]
    ts = ts + np.arange(n)  # unique event times
    events = [Event(f"u{rng.integers(6)}", T0 + int(t), "view", item_id=f"i{rng.integers(20)}") for t in ts]
    cfg = WindowConfig(max_events=8, span_ms=600_000, allowed_lateness_ms=10**9)
    one_by_one = snapshots(WindowStore(cfg), [EventBatch.from_events([e]) for e in events])
    for size in (7, 50, 600):
        chunks = [EventBatch.from_events(events[i : i + size]) for i in range(0, n, size)]
        assert snapshots(WindowStore(cfg), chunks) == one_by_one, size


def closes_of(store: WindowStore, batches) -> list[tuple]:
    """Every session close as (user, its window's event times, the closing message's row)."""
    out, offset = [], 0

    def on_close(change):
        w = change.windows
        for j, row in enumerate(change.rows.tolist()):
            n = int(w.length[j])
            out.append((w.user_id[j], tuple(w.ts[j, -n:].tolist()), offset + row))

    for b in batches:
        store.add(b, on_close=on_close)
        offset += len(b)
    return sorted(out)


GAP = WindowConfig(max_events=4, session_gap_ms=10_000)


def test_a_session_closes_when_event_time_passes_its_last_event_by_the_gap():
    store = WindowStore(GAP)
    closed = closes_of(store, [batch(("a", 0, "x"), ("a", 1000, "y"), ("b", 5000, "x"), ("b", 11_001, "x"))])
    assert closed == [("a", (T0, T0 + 1000), 3)]


def test_a_users_own_return_after_the_gap_closes_its_previous_session():
    closed = closes_of(WindowStore(GAP), [batch(("a", 0, "x")), batch(("a", 60_000, "y"))])
    assert closed == [("a", (T0,), 1)]


def test_a_session_closes_once_and_a_new_event_opens_the_next():
    closed = closes_of(WindowStore(GAP), [batch(("a", 0, "x")), batch(("b", 20_000, "x")), batch(("c", 30_000, "x")),
                                          batch(("a", 40_000, "x")), batch(("c", 70_000, "x"))])
    assert [c[:2] for c in closed] == [("a", (T0,)), ("a", (T0, T0 + 40_000)), ("b", (T0 + 20_000,)),
                                       ("c", (T0 + 30_000,))]


RANDOM_STREAM_CONFIG = WindowConfig(max_events=4, session_gap_ms=10_000, allowed_lateness_ms=10**9)


def random_stream(seed: int, late: bool, n: int = 500) -> list[Event]:
    """n events of 8 users, gaps around RANDOM_STREAM_CONFIG's 10 s session gap; ``late``: 40
    neighbours swapped."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.exponential(4_000, n).astype(np.int64))
    if late:
        for i in rng.integers(1, n - 1, 40):
            ts[i], ts[i + 1] = ts[i + 1], ts[i]
    return [Event(f"u{rng.integers(8)}", T0 + int(t), "view") for t in ts]


def batchings(events: list[Event]) -> list[list[EventBatch]]:
    """The stream cut into batches of 3, 64 and 500 events."""
    return [[EventBatch.from_events(events[i : i + size]) for i in range(0, len(events), size)] for size in (3, 64, 500)]


@pytest.mark.parametrize("late", [False, True], ids=["in-order", "with-late-events"])
def test_session_closes_do_not_depend_on_how_the_stream_is_batched(late):
    events = random_stream(11, late)
    one_by_one = closes_of(WindowStore(RANDOM_STREAM_CONFIG), [EventBatch.from_events([e]) for e in events])
    assert len(one_by_one) > 20
    for chunks in batchings(events):
        assert closes_of(WindowStore(RANDOM_STREAM_CONFIG), chunks) == one_by_one, len(chunks)


def timelines_of(store: WindowStore, batches) -> dict[str, list[tuple]]:
    """Per user, what the store handed over in order: ("event", ts) for each event's window and
    ("end", ts of the session's last event) for each session end."""
    out: dict[str, list[tuple]] = {}

    def record(kind):
        def on(change):
            for j, user in enumerate(change.windows.user_id):
                out.setdefault(user, []).append((kind, int(change.windows.ts[j, -1]) - T0))
        return on

    for b in batches:
        store.add(b, on_change=record("event"), on_close=record("end"))
    return out


def test_a_sessions_end_is_handed_over_before_its_users_next_session_in_the_same_batch():
    # a's first session ends when its next event comes past the gap; b's event in between closes nothing of b's
    got = timelines_of(WindowStore(GAP), [batch(("a", 0, "x"), ("b", 5_000, "x"), ("a", 20_000, "x"),
                                                ("a", 21_000, "x"), ("a", 40_000, "x"))])
    assert got["a"] == [("event", 0), ("end", 0), ("event", 20_000), ("event", 21_000), ("end", 21_000),
                        ("event", 40_000)]


@pytest.mark.parametrize("late", [False, True], ids=["in-order", "with-late-events"])
def test_each_users_events_and_session_ends_come_in_the_same_order_however_the_stream_is_batched(late):
    # the alert cooldown is applied in this order: a different order is a different set of alerts
    events = random_stream(12, late)
    one_by_one = timelines_of(WindowStore(RANDOM_STREAM_CONFIG), [EventBatch.from_events([e]) for e in events])
    assert sum(k == "end" for t in one_by_one.values() for k, _ in t) > 20
    for chunks in batchings(events):
        assert timelines_of(WindowStore(RANDOM_STREAM_CONFIG), chunks) == one_by_one, len(chunks)


def test_a_user_evicted_in_the_batch_that_added_it_leaves_no_open_session_to_its_slots_next_user():
    hour = 3_600_000
    store = WindowStore(WindowConfig(max_events=8))
    store.add(batch(("x", 100 * hour, "v")))
    store.add(batch(("x", 200 * hour, "v"), ("stale", 1 * hour, "v")))  # stale expires at once
    closed = closes_of(store, [batch(("victim", 200 * hour + 1, "v"))])
    assert closed == []  # was: victim's "session" of 0 events ended, and could alert


def test_a_non_positive_session_gap_is_refused():
    with pytest.raises(ValueError, match="session_gap_ms"):
        WindowConfig(session_gap_ms=0)


def test_a_late_event_older_than_a_full_window_is_too_late_not_lost():
    store = WindowStore(WindowConfig(max_events=4, allowed_lateness_ms=60_000))
    store.add(batch(*[("u", i * 1000, "a") for i in range(10)]))
    seen = []
    res = store.add(batch(("u", 2_000, "late")), on_change=lambda c: seen.extend(c.rows.tolist()))
    assert seen == [] and res.too_late.tolist() == [0] and store.too_late == 1


def test_a_late_events_window_ends_with_it():
    store = WindowStore(WindowConfig(max_events=8, allowed_lateness_ms=60_000))
    store.add(batch(("u", 0, "a"), ("u", 2_000, "c"), ("u", 3_000, "d")))
    got = []

    def on_change(c):
        n = int(c.windows.length[0])
        got.append([store.type_names[t] for t in c.windows.type[0, -n:]])

    store.add(batch(("u", 1_000, "b")), on_change=on_change)
    assert got == [["a", "b"]]
    assert window_of(store, "u")[1] == ["a", "b", "c", "d"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200_000)), min_size=1, max_size=120),
       st.integers(1, 40))
def test_every_valid_event_is_windowed_or_too_late(stream, size):
    events = [Event(f"u{u}", T0 + t, "view") for u, t in stream]
    store = WindowStore(WindowConfig(max_events=4, allowed_lateness_ms=30_000))
    windowed = too_late = 0
    for i in range(0, len(events), size):

        def count(c):
            nonlocal windowed
            windowed += len(c.rows)

        too_late += len(store.add(EventBatch.from_events(events[i : i + size]), on_change=count).too_late)
    assert windowed + too_late == len(events)
