"""The type ceiling: a window holding more events of one type than any normal training user's
window did alerts on its own (a block that logs a step four times where normal blocks log it at
most three). Training sets it for zero-label models; the scorer applies it to either kind."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from stream import explain
from stream.artifact import ArtifactError, Meta, load_artifact
from stream.encoding import type_counts
from stream.events import Event, EventBatch
from stream.model import UNSEEN_CLASSIFIER_SCORE, Scorer, types_beyond_ceiling
from stream.windows import WindowConfig
from tests.artifacts import offline_alerts, with_meta
from training import dataset, metrics, train

T0 = 1_700_000_000_000
WINDOW = WindowConfig(max_events=32)


def _windows(events: list[Event]) -> dataset.WindowSet:
    vocab = dataset.learn_vocabulary([EventBatch.from_events(events)], WINDOW)
    return dataset.build_windows(dataset.batches_from_events(events, WINDOW), vocab, WINDOW)


def _session(user: str, types: str, t0: int = T0, label: int = 0) -> list[Event]:
    names = {"v": "view", "c": "cart", "p": "purchase", "r": "refund"}
    return [Event(user, t0 + k * 20_000, names[t], item_id=f"i{k}", label=label) for k, t in enumerate(types)]


def _platform(n: int, heavy: dict[str, str] | None = None, attackers: dict[str, str] | None = None
              ) -> dataset.WindowSet:
    """The windows of n normal users of 'vvcp', ``heavy`` normal users and labelled ``attackers``
    with their own type strings."""
    events = [e for i in range(n) for e in _session(f"u{i:05d}", "vvcp", T0 + i * 1_000)]
    for u, kinds in (heavy or {}).items():
        events += _session(u, kinds)
    for u, kinds in (attackers or {}).items():
        events += _session(u, kinds, label=1)
    events.sort(key=lambda e: e.ts)
    return _windows(events)


def test_type_counts_count_each_windows_events_by_type_and_nothing_else():
    vocab = dataset.learn_vocabulary([EventBatch.from_events(_session("u", "vcvpv"))], WINDOW)
    ws = dataset.build_windows(dataset.batches_from_events(_session("u", "vcvpv"), WINDOW), vocab, WINDOW)
    counts = type_counts(ws.input_ids, vocab)
    named = dict(zip(vocab.types, counts[-1].tolist(), strict=True))
    assert named == {"<unk>": 0, "cart": 1, "purchase": 1, "view": 3}  # CLS, shape tokens, END, padding: nothing
    assert counts[0].sum() == 1  # the first window holds one event


def test_events_of_a_type_the_vocabulary_never_saw_count_as_unknown():
    vocab = dataset.learn_vocabulary([EventBatch.from_events(_session("u", "vv"))], WINDOW)
    ws = dataset.build_windows(dataset.batches_from_events(_session("w", "vcc"), WINDOW), vocab, WINDOW)
    assert type_counts(ws.input_ids, vocab)[-1].tolist() == [2, 1]  # <unk>, view


def test_the_type_ceiling_is_each_types_highest_count_among_normal_training_users():
    vocab_types = ("<unk>", "cart", "purchase", "view")
    ws = _platform(900, heavy={"h1": "vvvvvcp", "h2": "vvvvvcp"}, attackers={"bot": "p" * 12})
    vocab = dataset.learn_vocabulary([EventBatch.from_events(_session("x", "vcp"))], WINDOW)
    assert vocab.types == vocab_types
    # two users share the highest view count, every user the highest cart and purchase count: no one holds one alone
    assert train.type_ceiling(ws, vocab, 0.005) == ([1, 1, 5], 902, 0)  # the labelled attacker is no normal user


def test_a_type_whose_highest_count_one_user_holds_alone_keeps_the_rule_off_until_users_are_many():
    vocab = dataset.learn_vocabulary([EventBatch.from_events(_session("x", "vcp"))], WINDOW)
    few = _platform(900, heavy={"h1": "vvvvvvcp"})
    assert train.type_ceiling(few, vocab, 0.005) == ([], 901, 1)  # (1 + 1) / 902 is over a quarter of 0.5 %
    many = _platform(2_000, heavy={"h1": "vvvvvvcp"})
    assert train.type_ceiling(many, vocab, 0.005) == ([1, 1, 6], 2_001, 1)  # 2 / 2,002 is under it


def test_a_log_with_too_few_normal_users_leaves_the_type_ceiling_off():
    vocab = dataset.learn_vocabulary([EventBatch.from_events(_session("x", "vcp"))], WINDOW)
    ws = _platform(700)
    assert train.type_ceiling(ws, vocab, 0.005) == ([], 700, 0)  # no one alone, yet 1 / 701 is over 0.125 %


def test_the_type_ceiling_counts_the_training_users_whole_histories_and_no_one_else():
    vocab = dataset.learn_vocabulary([EventBatch.from_events(_session("x", "vcp"))], WINDOW)
    ws = _platform(900, heavy={"late": "vvvvvcp", "late2": "vvvvvcp", "other": "v" * 20})
    training = np.array([i for i, u in enumerate(ws.users) if u != "other"])
    assert train.type_ceiling(ws, vocab, 0.005, training) == ([1, 1, 5], 902, 0)


def test_a_type_no_normal_training_user_had_is_left_out_of_the_type_ceiling():
    ws = _platform(900, heavy={"held-out": "vr"})  # the vocabulary is the whole log's; refund: one held-out user
    vocab = dataset.learn_vocabulary([EventBatch.from_events(_session("x", "vcpr"))], WINDOW)
    training = np.array([i for i, u in enumerate(ws.users) if u != "held-out"])
    assert train.type_ceiling(ws, vocab, 0.005, training) == ([1, 1, WINDOW.max_events, 2], 900, 0)


def _loaded_with(trained, **fields) -> Scorer:
    scorer = Scorer.load(trained.artifact, "cpu")
    scorer.artifact.meta = dataclasses.replace(scorer.artifact.meta, **fields)
    return scorer


def test_a_window_past_the_type_ceiling_scores_as_an_unseen_event_type(tiny_model):
    scorer = _loaded_with(tiny_model[0], type_ceiling=[])
    art = scorer.artifact
    events = [Event("u", T0 + k * 20_000, "view", item_id=f"i{k}") for k in range(6)]
    ws = dataset.build_windows(dataset.batches_from_events(events, art.window_config), art.vocab, art.window_config)
    before = scorer.score(ws.encoded(), floor=-np.inf)
    ceiling = [32] * (len(art.vocab.types) - 1)
    ceiling[art.vocab.types.index("view") - 1] = 4
    art.meta = dataclasses.replace(art.meta, type_ceiling=ceiling)
    after = scorer.score(ws.encoded(), floor=-np.inf)
    past = type_counts(ws.input_ids, art.vocab)[:, art.vocab.types.index("view")] > 4
    assert past.sum() == 3 and (after[past] == np.float32(UNSEEN_CLASSIFIER_SCORE)).all()  # 5th, 6th view, END
    assert np.array_equal(after[~past], before[~past])  # at the ceiling a window keeps its own score
    assert types_beyond_ceiling(art, ws.encoded().take(np.flatnonzero(past)[:1])) == [[("view", 5, 4)]]


def test_events_of_unknown_types_are_left_to_the_unseen_type_rules(tiny_model):
    scorer = _loaded_with(tiny_model[0])
    art = scorer.artifact
    art.meta = dataclasses.replace(art.meta, type_ceiling=[0] * (len(art.vocab.types) - 1))
    ws = dataset.build_windows(dataset.batches_from_events([Event("u", T0, "never-seen-type")], art.window_config),
                               art.vocab, art.window_config)
    assert not scorer.beyond_type_ceiling(ws.encoded()).any()


@pytest.mark.parametrize("value", [[1, True], [1, -1], "5", [1.5, 2], [1, 33], {"view": 3}])
def test_a_type_ceiling_that_would_break_serving_is_refused_in_one_line(value):
    meta = Meta("v", "mlm", 9.0, {"max_events": 32}, severity=[9.0] * 4, type_ceiling=value)
    with pytest.raises(ArtifactError, match="type_ceiling") as err:
        meta.validate("here")
    assert "\n" not in str(err.value)


def test_a_type_ceiling_that_does_not_match_the_vocabulary_is_refused_at_load(tiny_model, tmp_path):
    n = len(load_artifact(tiny_model[0].artifact).vocab.types) - 1
    with pytest.raises(ArtifactError, match=f"type_ceiling has {n + 1} entries; the vocabulary has {n} event types"):
        load_artifact(with_meta(tiny_model[0].artifact, tmp_path / "edited", type_ceiling=[5] * (n + 1)))


def test_an_alert_past_the_type_ceiling_names_the_type_its_count_and_the_ceiling_first():
    ts = np.arange(3, dtype=np.int64) * 20_000
    s = explain.summarise(ts, np.zeros(3, np.uint16), np.zeros(3, np.uint32), ["purchase"], lambda t: True,
                          over_types=[("purchase", 3, 2)])
    assert s.findings[0] == ("more events of one type than any normal training user's window held: "
                             "3 'purchase' events (training users' most 2)")
    assert "training users' most" not in " ".join(explain.summarise(
        ts, np.zeros(3, np.uint16), np.zeros(3, np.uint32), ["purchase"], lambda t: True).findings)


def test_the_report_states_the_type_ceiling_or_why_it_is_off():
    on = {"type_ceiling": {"cart": 4, "view": 60}, "type_ceiling_users": 4_855, "type_ceiling_alone": 3}
    assert metrics.type_ceiling_line(on) == (
        "- type ceiling: a window with more events of one type than any of 4,855 normal training users' alerts as "
        "unseen (cart 4, view 60; 3 of them hold a type's highest count alone)")
    assert "off (900 normal training users, 1 of them holds" in metrics.type_ceiling_line(
        {"type_ceiling": {}, "type_ceiling_users": 900, "type_ceiling_alone": 1})
    unmeasured = {"type_ceiling": {"cart": 4, "refund": None}, "type_ceiling_users": 900, "type_ceiling_alone": 0}
    assert "(cart 4; 0 of them" in metrics.type_ceiling_line(unmeasured)  # refund: no training user had one
    assert "zero-label models only" in metrics.type_ceiling_line({"type_ceiling_kind": "classifier"})


def test_offline_scoring_alerts_past_the_type_ceiling_and_says_so(tiny_model, tmp_path):
    art = load_artifact(tiny_model[0].artifact)
    ceiling = [32] * (len(art.vocab.types) - 1)
    ceiling[art.vocab.types.index("view") - 1] = 5
    # a threshold only the rule's score reaches: the tiny model's own alert would come first
    model = with_meta(tiny_model[0].artifact, tmp_path / "edited", type_ceiling=ceiling, threshold=1.0,
                      severity=[1.0] * 4)
    alerts = offline_alerts(model, [{"user_id": "u", "ts": T0 + k * 30_000, "type": "view", "item_id": f"i{k}"}
                                    for k in range(8)], tmp_path)
    assert alerts and alerts[0]["score"] == 1.0
    assert alerts[0]["window"]["findings"][0] == ("more events of one type than any normal training user's window "
                                                  "held: 6 'view' events (training users' most 5)")


def test_a_classifier_is_trained_without_a_type_ceiling_and_its_report_says_why(tiny_model):
    art = Path(tiny_model[0].artifact)
    assert load_artifact(art).meta.type_ceiling == []
    assert ("- type ceiling: off (zero-label models only: a classifier reads each type's count from its window)"
            in (art / "report" / "report.md").read_text())
