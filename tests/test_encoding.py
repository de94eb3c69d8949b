"""Encoding: windows -> token ids and masks, with a learned, saved vocabulary."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from stream.encoding import (
    CLS,
    END,
    N_SHAPE,
    N_SPECIAL,
    PAD,
    SHAPE_FEATURES,
    Vocabulary,
    encode,
    fit_vocabulary,
)
from stream.events import Event, EventBatch
from stream.windows import WindowConfig, WindowStore

T0 = 1_700_000_000_000


def store_with(events, max_events=8) -> WindowStore:
    store = WindowStore(WindowConfig(max_events=max_events))
    store.add(EventBatch.from_events(events))
    return store


def encode_user(store, vocab, user="u"):
    return encode(store.read(np.array([store.slot_of(user)])), store.type_names, vocab)


# the event-token layout, without shape tokens (a zero-label model's vocabulary)
VOCAB = Vocabulary(types=("<unk>", "buy", "view"), price_edges=(10.0, 100.0), max_events=8, shape=False)
SHAPED = Vocabulary(types=("<unk>", "buy", "view"), price_edges=(10.0, 100.0), max_events=8)


def shape_of(enc, row=0) -> dict:
    return {SHAPED.describe(int(t))["shape"]: SHAPED.describe(int(t))["bucket"] for t in enc.input_ids[row, 1:1 + N_SHAPE]}


def bucket_of(feature: str, value: float) -> int:
    edges = dict(SHAPE_FEATURES)[feature]
    return 1 + int(np.searchsorted(np.asarray(edges, dtype=float), value, side="right"))


def test_sequence_is_cls_then_events_oldest_first_then_padding():
    store = store_with([Event("u", T0 + i * 1000, "view") for i in range(3)])
    enc = encode_user(store, VOCAB)
    assert enc.input_ids.shape == (1, 10)  # CLS + 8 events + room for END
    assert enc.input_ids[0, 0] == CLS
    assert (enc.input_ids[0, 1:4] >= N_SPECIAL).all()
    assert (enc.input_ids[0, 4:] == PAD).all()
    assert enc.attention_mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert enc.length.tolist() == [3]


def test_tokens_carry_type_gap_bucket_repeat_and_price_bucket():
    store = store_with([
        Event("u", T0, "view", item_id="a", price=5.0),
        Event("u", T0 + 2_000, "buy", item_id="a", price=50.0),
        Event("u", T0 + 500_000, "view", item_id="b"),
    ])
    parts = [VOCAB.describe(int(t)) for t in encode_user(store, VOCAB).input_ids[0, 1:4]]
    assert parts[0] == {"type": "view", "dt_bucket": 0, "repeat": False, "regular": False, "price_bucket": 1}
    assert parts[1] == {"type": "buy", "dt_bucket": 2, "repeat": True, "regular": False, "price_bucket": 2}
    assert parts[2]["dt_bucket"] == 7 and parts[2]["repeat"] is False and parts[2]["price_bucket"] == 0


def test_a_gap_within_a_tenth_of_the_previous_gap_is_regular():
    gaps = [45_000, 45_500, 44_000, 90_000, 20_000, 0, 0]
    ts = T0 + np.cumsum([0, *gaps])
    store = store_with([Event("u", int(t), "view") for t in ts])
    regular = [VOCAB.describe(int(t))["regular"] for t in encode_user(store, VOCAB).input_ids[0, 1:len(ts) + 1]]
    # the first event has no gap and the second no previous gap; 0 ms after 0 ms repeats exactly
    assert regular == [False, False, True, True, False, False, False, True]


def test_unknown_types_map_to_the_unknown_token():
    store = store_with([Event("u", T0, "teleport")])
    assert VOCAB.describe(int(encode_user(store, VOCAB).input_ids[0, 1]))["type"] == "<unk>"


def test_only_the_newest_max_events_are_encoded():
    store = store_with([Event("u", T0 + i, "view" if i < 12 else "buy") for i in range(16)], max_events=16)
    enc = encode_user(store, VOCAB)
    types = [VOCAB.describe(int(t))["type"] for t in enc.input_ids[0, 1:9]]
    assert types == ["view"] * 4 + ["buy"] * 4
    assert enc.input_ids[0, 9] == PAD  # room for END, unused while the session is open


@pytest.mark.parametrize("vocab", [VOCAB, SHAPED], ids=["events", "with-shape"])
def test_batch_encoding_matches_one_by_one_encoding(vocab):
    rng = np.random.default_rng(0)
    events = [Event(f"u{rng.integers(5)}", T0 + int(t), str(rng.choice(["view", "buy", "x"])),
                    item_id=str(rng.integers(4)), price=float(rng.integers(1, 200)))
              for t in np.sort(rng.integers(0, 10**6, 200))]
    store = store_with(events)
    slots = np.array([store.slot_of(f"u{i}") for i in range(5)])
    together = encode(store.read(slots), store.type_names, vocab).input_ids
    alone = np.vstack([encode(store.read(slots[i : i + 1]), store.type_names, vocab).input_ids for i in range(5)])
    assert np.array_equal(together, alone)


def test_vocabulary_is_learned_from_data_and_round_trips(tmp_path):
    batches = [EventBatch.from_events([Event("u", T0, t, price=p) for t, p in
                                       [("E5", 1.0), ("E22", 2.0), ("E5", 3.0)] * 10])]
    vocab = fit_vocabulary(batches, max_events=16)
    assert vocab.types == ("<unk>", "E22", "E5")
    vocab.save(tmp_path / "vocab.json")
    again = Vocabulary.load(tmp_path / "vocab.json")
    assert again == vocab and again.size == vocab.size


def test_min_count_drops_rare_types():
    vocab = Vocabulary.fit(Counter({"view": 100, "rare": 1}), min_count=2)
    assert vocab.type_index("rare") == 0 and vocab.type_index("view") > 0


def test_a_vocabulary_from_another_encoding_version_is_refused():
    d = VOCAB.to_dict() | {"version": 999}
    with pytest.raises(ValueError, match="encoding version"):
        Vocabulary.from_dict(d)


def test_token_ids_stay_inside_the_vocabulary():
    rng = np.random.default_rng(1)
    events = [Event("u", T0 + i * int(rng.integers(1, 10**7)), str(rng.choice(["view", "buy", "zzz"])),
                    price=float(rng.random() * 1e4) if rng.random() < 0.5 else None) for i in range(50)]
    enc = encode_user(store_with(events, max_events=64), VOCAB)
    assert enc.input_ids.max() < VOCAB.size


def test_an_ended_sessions_window_has_end_right_after_its_newest_event():
    store = store_with([Event("u", T0 + i * 1000, "view") for i in range(8)])
    w = store.read(np.array([store.slot_of("u")]))
    open_, ended = encode(w, store.type_names, VOCAB), encode(w, store.type_names, VOCAB, closing=True)
    assert ended.input_ids[0, :9].tolist() == open_.input_ids[0, :9].tolist()
    assert ended.input_ids[0, 9] == END and ended.attention_mask[0].sum() == 10
    assert ended.length.tolist() == open_.length.tolist() == [8]  # END is not an event


def test_a_classifier_vocabulary_puts_one_shape_token_per_feature_between_cls_and_the_events():
    store = store_with([Event("u", T0 + i * 1000, "view") for i in range(3)])
    enc = encode_user(store, SHAPED)
    assert enc.input_ids.shape == (1, 1 + N_SHAPE + 8 + 1)
    assert enc.input_ids[0, 0] == CLS
    assert (enc.input_ids[0, 1:1 + N_SHAPE] < N_SPECIAL).all()  # shape tokens are not events
    assert (enc.input_ids[0, 1 + N_SHAPE:4 + N_SHAPE] >= N_SPECIAL).all()
    assert enc.attention_mask[0].sum() == 1 + N_SHAPE + 3 and enc.length.tolist() == [3]


def test_a_steady_fast_loop_over_two_items_reads_as_fast_regular_and_narrow():
    store = store_with([Event("u", T0 + i * 2_000, "view", item_id="ab"[i % 2]) for i in range(8)])
    shape = shape_of(encode_user(store, SHAPED))
    assert shape["events"] == bucket_of("events", 8)
    assert shape["events_per_min"] == bucket_of("events_per_min", 30.0)  # 7 gaps in 14 s
    assert shape["gap_cv"] == 1  # exactly regular: below the first edge
    assert shape["distinct_item_share"] == bucket_of("distinct_item_share", 2 / 8)
    assert shape["top_item_share"] == bucket_of("top_item_share", 0.5)
    assert shape["typical_gap_s"] == bucket_of("typical_gap_s", 2.0)


def test_a_person_browsing_distinct_items_at_varied_pace_reads_as_slow_irregular_and_broad():
    gaps = [0, 20_000, 95_000, 7_000, 300_000, 40_000]
    store = store_with([Event("u", T0 + int(t), "view", item_id=f"i{k}") for k, t in enumerate(np.cumsum(gaps))])
    shape = shape_of(encode_user(store, SHAPED))
    g = np.asarray(gaps[1:], dtype=float)
    assert shape["gap_cv"] == bucket_of("gap_cv", g.std() / g.mean())
    assert shape["distinct_item_share"] == bucket_of("distinct_item_share", 1.0)
    assert shape["events_per_min"] == bucket_of("events_per_min", 5 / (g.sum() / 60_000))


def test_shape_features_a_single_event_cannot_define_are_bucket_zero():
    shape = shape_of(encode_user(store_with([Event("u", T0, "view", item_id="a")]), SHAPED))
    assert shape["events"] == bucket_of("events", 1)
    assert all(shape[f] == 0 for f in ("events_per_min", "gap_cv", "distinct_item_share", "top_item_share",
                                       "typical_gap_s", "top_item_count", "repeated_transitions"))


def test_the_most_repeated_items_count_grows_with_the_run_where_its_share_does_not():
    def count_and_share(n):  # a cover item, then the target, over and over
        store = store_with([Event("u", T0 + i * 30_000, "view", item_id="t" if i % 2 else f"c{i}") for i in range(n)],
                           max_events=64)
        shape = shape_of(encode_user(store, Vocabulary(types=("<unk>", "view"), max_events=64)))
        return shape["top_item_count"], shape["top_item_share"]

    (short_count, short_share), (long_count, long_share) = count_and_share(4), count_and_share(40)
    assert short_share == long_share == bucket_of("top_item_share", 0.5)
    assert (short_count, long_count) == (bucket_of("top_item_count", 2), bucket_of("top_item_count", 20))


def test_walking_the_same_path_again_counts_each_retraced_step():
    path = ["a", "b", "c", "d"]
    store = store_with([Event("u", T0 + i * 40_000, "view", item_id=it) for i, it in enumerate(path * 2)])
    # a->b b->c c->d, then d->a (new) and a->b b->c c->d again
    assert shape_of(encode_user(store, SHAPED))["repeated_transitions"] == bucket_of("repeated_transitions", 3)


def test_going_back_and_forth_once_and_staying_on_one_item_retrace_nothing():
    back_and_forth = store_with([Event("u", T0 + i * 40_000, "view", item_id=it) for i, it in enumerate("abac")])
    assert shape_of(encode_user(back_and_forth, SHAPED))["repeated_transitions"] == bucket_of("repeated_transitions", 0)
    # a -> a is not a step between items: one item only has no transitions to count
    one_item = store_with([Event("u", T0 + i * 40_000, "view", item_id="a") for i in range(6)])
    assert shape_of(encode_user(one_item, SHAPED))["repeated_transitions"] == 0


def test_an_ended_sessions_end_follows_its_events_after_the_shape_tokens():
    store = store_with([Event("u", T0 + i * 1000, "view") for i in range(4)])
    w = store.read(np.array([store.slot_of("u")]))
    ended = encode(w, store.type_names, SHAPED, closing=True)
    assert ended.input_ids[0, 1 + N_SHAPE + 4] == END


def test_a_vocabulary_without_a_shape_flag_is_refused():
    d = SHAPED.to_dict()
    d.pop("shape")
    with pytest.raises(KeyError):
        Vocabulary.from_dict(d)
