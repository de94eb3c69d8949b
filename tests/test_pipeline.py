"""The shared pipeline step without a broker or a model: parse -> dead letters -> ingest -> windows."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, TIMESTAMP_NOT_AVAILABLE

from stream import pipeline
from stream.detector import Detector
from stream.encoding import Vocabulary
from stream.metrics import Metrics
from stream.windows import WindowConfig
from tests.doubles import ModelFreeScorer, model_free_artifact

T0 = 1_793_491_200_000
LATENESS_MS = 60_000


@pytest.fixture
def detector() -> Detector:
    # ingest needs only the model's window config: a stand-in artifact keeps these tests model-free
    cfg = WindowConfig(max_events=8, allowed_lateness_ms=LATENESS_MS)
    vocab = Vocabulary(types=("<unk>", "buy", "view"))
    return Detector(ModelFreeScorer(model_free_artifact(cfg, vocab)))


def event(user: str, ts: int, type_: str = "view") -> bytes:
    return orjson.dumps({"user_id": user, "ts": ts, "type": type_})


def run(detector: Detector, values: list[bytes], **kw) -> pipeline.StepResult:
    return pipeline.step(detector, detector.new_store(), pipeline.parse(values), **kw)


def test_every_valid_event_completes_a_window_to_score(detector):
    res = run(detector, [event("a", T0), event("b", T0 + 1), event("a", T0 + 2)])
    assert sum(len(p) for p in res.pending) == 3
    assert (res.valid, res.rejected, res.too_late, res.dead_letters) == (3, 0, 0, [])


def test_a_contract_violation_becomes_a_dead_letter_with_its_position_and_reason(detector):
    res = run(detector, [event("a", T0), b"not json", event("a", T0 + 1)])
    [dead] = res.dead_letters
    assert (dead.index, dead.reason) == (1, "not-json")
    assert dead.detail
    assert sum(len(p) for p in res.pending) == 2


def test_an_event_beyond_the_allowed_lateness_becomes_a_too_late_dead_letter_with_the_shared_detail(detector):
    res = run(detector, [event("a", T0), event("a", T0 - LATENESS_MS - 1)])
    [dead] = res.dead_letters
    assert (dead.index, dead.reason) == (1, "too-late")
    assert dead.detail == f"more than {LATENESS_MS} ms behind the user's newest event"
    assert res.too_late == 1


def test_rejects_come_before_too_late_events_among_the_dead_letters(detector):
    res = run(detector, [event("a", T0), event("a", T0 - LATENESS_MS - 1), b"{}"])
    assert [d.reason for d in res.dead_letters] == ["missing-field", "too-late"]


def test_windows_carry_the_kafka_coordinates_of_their_triggering_messages(detector):
    res = run(detector, [b"junk", event("a", T0)], topic="events", partition=3,
              offsets=np.array([100, 101], dtype=np.int64), kafka_ts=np.array([5, 6], dtype=np.int64))
    [p] = res.pending
    assert (p.topic, p.partition, p.offsets.tolist(), p.kafka_ts.tolist()) == ("events", 3, [101], [6])


def test_the_store_keeps_state_between_steps(detector):
    store = detector.new_store()
    pipeline.step(detector, store, pipeline.parse([event("a", T0)]))
    res = pipeline.step(detector, store, pipeline.parse([event("a", T0 + 1)]))
    [p] = res.pending
    assert int(p.windows.length[0]) == 2  # the second event's window holds the first


def test_the_step_counts_consumed_valid_rejected_and_late_inputs(detector):
    m = Metrics()
    run(detector, [event("a", T0), b"nope", event("a", T0 - LATENESS_MS - 1)], metrics=m)
    assert m.registry.get_sample_value("seqsentry_events_consumed_total") == 3
    assert m.registry.get_sample_value("seqsentry_events_valid_total") == 2
    assert m.registry.get_sample_value("seqsentry_events_rejected_total", {"reason": "not-json"}) == 1
    assert m.registry.get_sample_value("seqsentry_events_late_total") == 1


def test_messages_keyed_by_another_user_are_counted(detector):
    m = Metrics()
    run(detector, [event("alice", T0), event("carol", T0), b"bad"], keys=[b"bob", b"carol", b"x"], metrics=m)
    assert m.registry.get_sample_value("seqsentry_key_mismatch_total") == 1


def test_oversized_messages_are_rejected_at_the_given_limit():
    [r] = pipeline.parse([event("a", T0)], max_message_bytes=10).rejects
    assert r.reason == "too-large"


def test_an_ended_session_adds_a_window_to_score_and_is_counted(detector):
    m = Metrics()
    gap = detector.window_config.session_gap_ms
    res = run(detector, [event("a", T0), event("a", T0 + gap + 1)], metrics=m)
    assert res.sessions_ended == 1
    assert sum(len(p) for p in res.pending) == 3  # two events' windows and the first session's end
    assert m.registry.get_sample_value("seqsentry_sessions_ended_total") == 1


SKEW_MS = pipeline.DEFAULT_MAX_CLOCK_SKEW_MS
YEAR_2099 = 4_102_358_400_000


def test_an_event_dated_beyond_the_clock_skew_after_it_was_received_is_a_bad_timestamp_dead_letter(detector):
    values = [event("a", T0), event("a", YEAR_2099), event("a", T0 + 1)]
    res = run(detector, values, trusted_ts=np.full(3, T0, dtype=np.int64), max_clock_skew_ms=SKEW_MS)
    [dead] = res.dead_letters
    assert (dead.index, dead.reason) == (1, "bad-timestamp")
    assert f"{YEAR_2099 - T0} ms ahead" in dead.detail and f"limit {SKEW_MS} ms" in dead.detail
    assert (res.valid, res.rejected, res.too_late) == (2, 1, 0)


def test_a_future_dated_event_neither_blinds_its_user_nor_reaches_the_window_store(detector):
    store = detector.new_store()
    received = np.full(1, T0, dtype=np.int64)
    pipeline.step(detector, store, pipeline.parse([event("a", YEAR_2099)]), trusted_ts=received, max_clock_skew_ms=SKEW_MS)
    later = pipeline.step(detector, store, pipeline.parse([event("a", T0 + 1)]), trusted_ts=received, max_clock_skew_ms=SKEW_MS)
    assert later.too_late == 0 and sum(len(p) for p in later.pending) == 1
    assert store.users == 1


def test_an_event_exactly_at_the_clock_skew_limit_is_kept(detector):
    res = run(detector, [event("a", T0 + SKEW_MS)], trusted_ts=np.array([T0], dtype=np.int64), max_clock_skew_ms=SKEW_MS)
    assert res.dead_letters == [] and res.valid == 1


def test_the_clock_skew_limit_is_configurable(detector):
    res = run(detector, [event("a", T0 + 2_000)], trusted_ts=np.array([T0], dtype=np.int64), max_clock_skew_ms=1_000)
    assert [d.reason for d in res.dead_letters] == ["bad-timestamp"]


def test_offline_scoring_has_no_clock_to_trust_and_checks_no_clock_skew(detector):
    assert run(detector, [event("a", YEAR_2099)], max_clock_skew_ms=SKEW_MS).dead_letters == []


def test_a_bad_timestamp_dead_letter_is_counted_as_rejected_with_its_reason(detector):
    m = Metrics()
    run(detector, [event("a", YEAR_2099)], trusted_ts=np.array([T0], dtype=np.int64), metrics=m,
        max_clock_skew_ms=SKEW_MS)
    assert m.registry.get_sample_value("seqsentry_events_rejected_total", {"reason": "bad-timestamp"}) == 1
    assert m.registry.get_sample_value("seqsentry_events_valid_total") == 0


def test_a_batch_mostly_breaking_the_contract_is_logged_once_per_topic_and_interval(detector, caplog, monkeypatch):
    monkeypatch.setattr(pipeline, "_spikes", pipeline.RateLimit(interval_s=30.0))
    bad = [orjson.dumps({"user_id": "a", "ts": "yesterday", "type": "view"})] * 30 + [event("a", T0)]
    with caplog.at_level("WARNING", logger="stream.pipeline"):
        run(detector, bad, topic="clicks")
        run(detector, bad, topic="clicks")
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("topic clicks: 30 of 31 messages in a batch broke the event contract (mostly bad-timestamp")


def test_a_few_rejects_in_a_healthy_batch_are_not_logged(detector, caplog, monkeypatch):
    monkeypatch.setattr(pipeline, "_spikes", pipeline.RateLimit(interval_s=30.0))
    with caplog.at_level("WARNING", logger="stream.pipeline"):
        run(detector, [b"garbage"] * 5 + [event("a", T0 + i) for i in range(30)], topic="clicks")
    assert not caplog.records


def test_a_batch_mostly_of_event_types_the_model_never_saw_is_logged_once_per_topic_and_interval(
        detector, caplog, monkeypatch):
    monkeypatch.setattr(pipeline, "_unknown", pipeline.RateLimit(interval_s=30.0))
    renamed = [event("a", T0 + i, "pv") for i in range(25)] + [event("a", T0 + 30, "view")]
    with caplog.at_level("WARNING", logger="stream.pipeline"):
        run(detector, renamed, topic="clicks")
        run(detector, renamed, topic="clicks")
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("topic clicks: 25 of 26 events in a batch have event types the model never saw in "
                           "training (e.g. 'pv')")


def test_event_types_the_model_knows_are_not_logged(detector, caplog, monkeypatch):
    monkeypatch.setattr(pipeline, "_unknown", pipeline.RateLimit(interval_s=30.0))
    with caplog.at_level("WARNING", logger="stream.pipeline"):
        run(detector, [event("a", T0 + i, "view" if i % 5 else "pv") for i in range(30)], topic="clicks")
    assert not caplog.records


def _sessions_ended_by_a_fast_clock(detector, trusted_ts):
    """User b's session (last event at T0) and then user a's event dated 40 min ahead."""
    store = detector.new_store()
    pipeline.step(detector, store, pipeline.parse([event("b", T0)]), trusted_ts=trusted_ts, max_clock_skew_ms=3_600_000)
    ahead = pipeline.step(detector, store, pipeline.parse([event("a", T0 + 40 * 60_000)]), trusted_ts=trusted_ts,
                          max_clock_skew_ms=3_600_000)
    return ahead.sessions_ended


def test_an_event_dated_ahead_of_its_receipt_does_not_end_other_users_sessions(detector):
    assert _sessions_ended_by_a_fast_clock(detector, np.array([T0 + 1_000], dtype=np.int64)) == 0


def test_without_a_trusted_clock_event_time_alone_ends_sessions(detector):
    # offline scoring: the same two events end b's session (its 30 min gap has passed in event time)
    assert _sessions_ended_by_a_fast_clock(detector, None) == 1


# ---- issue 20: a producer that controls `ts` (and CreateTime) cannot blind a user or wipe a partition -------
def _live(detector, store, values: list[bytes], timestamps: list[tuple[int, int]], wall_ms: int):
    """One live step: messages with these (type, ms) timestamps, received at ``wall_ms``."""
    return pipeline.step(detector, store, pipeline.parse(values), max_clock_skew_ms=SKEW_MS,
                         trusted_ts=pipeline.trusted_clock(timestamps, wall_ms))


def _create_time(ms: int, n: int = 1) -> list[tuple[int, int]]:
    return [(TIMESTAMP_CREATE_TIME, ms)] * n


def test_an_event_dated_50_minutes_ahead_does_not_make_its_users_next_events_too_late(detector):
    store = detector.new_store()
    _live(detector, store, [event("a", T0 + 50 * 60_000)], _create_time(T0 + 50 * 60_000), T0)
    later = [_live(detector, store, [event("a", T0 + 1_000 * i)], _create_time(T0 + 1_000 * i), T0 + 1_000 * i)
             for i in range(1, 31)]
    assert sum(r.too_late for r in later) == 0
    assert sum(len(p) for r in later for p in r.pending) == 30  # every one of them scored


def test_an_event_dated_ahead_of_its_receipt_is_taken_at_its_receipt(detector):
    res = _live(detector, detector.new_store(), [event("a", T0 + 50 * 60_000)], _create_time(T0 + 50 * 60_000), T0)
    assert res.pending[0].event_time.tolist() == [T0]


def test_honest_events_in_flight_when_an_event_dated_ahead_was_received_are_placed_not_too_late(detector):
    store = detector.new_store()
    _live(detector, store, [event("a", T0 + 50 * 60_000)], _create_time(T0 + 50 * 60_000), T0)
    produced_before = _live(detector, store, [event("a", T0 - 5_000 + i) for i in range(5)], _create_time(T0 - 5_000, 5),
                            T0 + 500)  # sent before the dated one arrived, received after it
    assert produced_before.too_late == 0 and store.late_inserted == 5


def test_a_forged_message_timestamp_in_2099_is_bounded_by_the_consumers_clock(detector):
    [bound] = pipeline.trusted_clock(_create_time(YEAR_2099), T0).tolist()
    assert bound == T0


def test_a_message_dated_2099_with_a_2099_create_time_neither_ends_nor_expires_anyones_session(detector):
    store = detector.new_store()
    _live(detector, store, [event(f"u{i}", T0) for i in range(100)], _create_time(T0, 100), T0)
    forged = _live(detector, store, [event("x", YEAR_2099)], _create_time(YEAR_2099), T0 + 1_000)
    after = _live(detector, store, [event(f"u{i}", T0 + 2_000) for i in range(100)], _create_time(T0 + 2_000, 100),
                  T0 + 2_000)
    assert [d.reason for d in forged.dead_letters] == ["bad-timestamp"]
    assert forged.sessions_ended == 0 and after.sessions_ended == 0
    assert store.users == 100 and store.evicted_idle == 0


def test_a_create_time_in_2099_on_an_event_within_the_skew_moves_the_partition_clock_only_to_its_receipt(detector):
    store = detector.new_store()
    _live(detector, store, [event("b", T0)], _create_time(T0), T0)
    ahead = _live(detector, store, [event("a", T0 + 40 * 60_000)], _create_time(YEAR_2099), T0 + 1_000)
    assert ahead.sessions_ended == 0 and store.max_ts == T0 + 1_000


def test_a_log_append_time_is_the_brokers_clock_and_trusted_as_it_is(detector):
    bounds = pipeline.trusted_clock([(TIMESTAMP_LOG_APPEND_TIME, T0 + 5_000), (TIMESTAMP_CREATE_TIME, T0 + 5_000),
                                     (TIMESTAMP_NOT_AVAILABLE, -1)], T0)
    assert bounds.tolist() == [T0 + 5_000, T0, T0]


def test_replayed_history_keeps_its_event_times_and_windows_exactly_as_offline(detector):
    history = [event("a", T0 + 7_000 * i) for i in range(20)] + [event("b", T0 + 3 * 3_600_000)]
    offline = run(detector, history)
    live = _live(detector, detector.new_store(), history, _create_time(T0 + 30 * 86_400_000, len(history)),
                 T0 + 30 * 86_400_000)
    assert [p.event_time.tolist() for p in live.pending] == [p.event_time.tolist() for p in offline.pending]
    assert [p.windows.length.tolist() for p in live.pending] == [p.windows.length.tolist() for p in offline.pending]
    assert live.sessions_ended == offline.sessions_ended == 1
