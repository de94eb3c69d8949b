"""Event contract: what is accepted, and the reason for everything that is not."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import events as ev

GOOD = {"user_id": "u1", "ts": 1_700_000_000_000, "type": "view"}


def body(**kw) -> bytes:
    rec = {**GOOD, **kw}
    return orjson.dumps({k: v for k, v in rec.items() if v is not ...})


def reason(payload: bytes, **kw) -> str:
    with pytest.raises(ev.Reject) as info:
        ev.parse_event(payload, **kw)
    assert info.value.reason in ev.REJECT_REASONS
    return info.value.reason


def test_minimal_event_is_accepted():
    e = ev.parse_event(body())
    assert (e.user_id, e.ts, e.type) == ("u1", 1_700_000_000_000, "view")


def test_optional_fields_are_parsed_and_unknown_fields_ignored():
    e = ev.parse_event(body(item_id=42, price=9.5, quantity=2, label=1, attack="brushing", extra={"x": 1}))
    assert (e.item_id, e.price, e.quantity, e.label, e.attack) == ("42", 9.5, 2, 1, "brushing")


def test_iso8601_timestamps_are_converted_to_epoch_ms():
    assert ev.parse_event(body(ts="2023-11-14T22:13:20Z")).ts == 1_700_000_000_000
    assert ev.parse_event(body(ts="2023-11-14T23:13:20+01:00")).ts == 1_700_000_000_000


def test_naive_iso_timestamps_are_read_as_utc():
    assert ev.parse_event(body(ts="2023-11-14T22:13:20")).ts == 1_700_000_000_000


def test_any_type_string_is_accepted():
    assert ev.parse_event(body(type="E22")).type == "E22"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\xff\xfe{", "bad-encoding"),
        (b"{not json", "not-json"),
        (b"[" * 5000 + b"]" * 5000, "not-object"),
        (body()[:-1] + b',"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}", "not-json"),
        (b"[1,2]", "not-object"),
        (b'"u1"', "not-object"),
        (body(user_id=...), "missing-field"),
        (body(ts=...), "missing-field"),
        (body(type=...), "missing-field"),
        (body(user_id=None), "missing-field"),
        (body(user_id=["u"]), "bad-type"),
        (body(user_id=True), "bad-type"),
        (body(user_id=""), "bad-value"),
        (body(type=7), "bad-type"),
        (body(type=""), "bad-value"),
        (body(type="x" * 300), "bad-value"),
        (body(ts=True), "bad-type"),
        (body(ts={"ms": 1}), "bad-type"),
        (body(ts="yesterday"), "bad-timestamp"),
        (body(ts=-5), "bad-timestamp"),
        (body(ts=99_999_999_999_999), "bad-timestamp"),
        (body(price="cheap"), "bad-type"),
        (body(price=-1), "bad-value"),
        (body(quantity=1.5), "bad-type"),
        (body(label=2), "bad-value"),
        (body(label="yes"), "bad-type"),
        (body(attack=3), "bad-type"),
        (body(item_id={"a": 1}), "bad-type"),
        (body()[:-1] + b',"user_id":' + b"9" * 300 + b"}", "bad-value"),  # an integer id of 300 digits
        (body()[:-1] + b',"user_id":' + b"9" * 5000 + b"}", "bad-value"),  # past Python's int-str limit
    ],
    ids=lambda v: v if isinstance(v, str) else "payload",
)
def test_bad_input_is_rejected_with_its_reason(payload, expected):
    assert reason(payload) == expected


def test_non_finite_numbers_are_rejected():
    # orjson refuses NaN/Infinity literals outright; Python's json writes them
    assert reason(b'{"user_id":"u","ts":NaN,"type":"view"}') == "not-json"
    assert reason(b'{"user_id":"u","ts":1700000000000,"type":"view","price":Infinity}') == "not-json"
    with pytest.raises(ev.Reject, match="bad-type"):  # ts is epoch ms as an integer, never a float
        ev.validate_record({**GOOD, "ts": float("nan")})
    with pytest.raises(ev.Reject, match="bad-value"):
        ev.validate_record({**GOOD, "price": float("inf")})


def test_oversized_payload_is_rejected_before_decoding():
    assert reason(body(pad="x" * 2_000_000)) == "too-large"
    assert reason(body(), max_bytes=10) == "too-large"


def test_batch_parse_separates_events_from_rejects_and_keeps_positions():
    res = ev.parse_batch([body(), b"garbage", None, body(user_id="u2", price=3.0)])
    assert res.events.user_id == ["u1", "u2"]
    assert res.events.index.tolist() == [0, 3]
    assert [(r.index, r.reason) for r in res.rejects] == [(1, "not-json"), (2, "not-json")]
    assert res.events.price[1] == pytest.approx(3.0)


def test_batch_columns_mark_absent_values():
    res = ev.parse_batch([body()])
    assert res.events.item[0] == 0
    assert res.events.label[0] == -1
    assert res.events.price[0] != res.events.price[0]  # NaN


def test_item_hash_is_stable_and_nonzero():
    assert ev.item_hash("i1") == ev.item_hash("i1") != 0
    assert ev.item_hash(None) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_parse_batch_never_raises_and_accounts_for_every_message(payloads):
    res = ev.parse_batch(payloads)
    assert len(res.events) + len(res.rejects) == len(payloads)
    assert all(r.reason in ev.REJECT_REASONS for r in res.rejects)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["user_id", "ts", "type", "price", "label", "item_id", "quantity"]), json_values))
def test_random_records_are_either_valid_events_or_rejected_with_a_reason(rec):
    try:
        e = ev.validate_record(rec)
    except ev.Reject as r:
        assert r.reason in ev.REJECT_REASONS
    else:
        assert e.user_id and e.type and ev.TS_MIN_MS <= e.ts < ev.TS_MAX_MS
