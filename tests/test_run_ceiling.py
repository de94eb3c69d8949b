"""The run ceiling: a window that counts more (events, events on one item, retraced steps)
than all but a few of the training log's normal users alerts on its own."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from stream import explain
from stream.artifact import ArtifactError, load_artifact, save_artifact
from stream.encoding import RUN_COUNTS, Encoded
from stream.errors import SeqsentryError
from stream.events import Event, EventBatch
from stream.model import UNSEEN_CLASSIFIER_SCORE, Scorer
from stream.windows import WindowConfig
from tests.artifacts import offline_alerts, reseal, with_meta
from training import dataset, metrics, train

T0 = 1_700_000_000_000
WINDOW = WindowConfig(max_events=32)


def _windows(events: list[Event], *, shape: bool = True) -> dataset.WindowSet:
    vocab = dataset.learn_vocabulary([EventBatch.from_events(events)], WINDOW, shape=shape)
    return dataset.build_windows(dataset.batches_from_events(events, WINDOW), vocab, WINDOW)


def _walk(user: str, items: str, t0: int = T0, gap_ms: int = 20_000) -> list[Event]:
    return [Event(user, t0 + k * gap_ms, "view", item_id=it) for k, it in enumerate(items)]


def _counted(counts: dict[str, list[int]], label: int = 0, first: int = 0) -> dataset.WindowSet:
    """A window set with one window per (user, run counts) row, as if encoded."""
    rows = [(u, c) for u, cs in counts.items() for c in cs]
    n = len(rows)
    users = sorted(counts)
    return dataset.WindowSet(
        input_ids=np.zeros((n, 4), np.int32), label=np.full(n, label, np.int8), attack=np.zeros(n, np.int16),
        user=np.array([users.index(u) for u, _ in rows], np.int32), ts=np.arange(n, dtype=np.int64) + T0,
        seq_no=np.ones(n, np.int32), run_counts=np.array([c for _, c in rows], np.int32).reshape(n, len(RUN_COUNTS)),
        users=users, attack_names=["none"])


def test_every_window_carries_its_events_its_most_repeated_items_count_and_its_retraced_steps():
    ws = _windows(_walk("u", "ABABAC"))
    # A B A B A C: 6 events, A three times; steps A>B B>A A>B B>A A>C, of which the second A>B and B>A retrace
    assert ws.run_counts[-1].tolist() == [6, 3, 2]
    assert ws.run_counts[0].tolist() == [1, 0, 0]  # one event: no item count or step defined yet
    assert ws.encoded().run_counts is ws.run_counts


def test_windows_encoded_without_shape_tokens_count_nothing():
    assert not _windows(_walk("u", "ABAB"), shape=False).run_counts.any()  # a zero-label vocabulary


def test_batches_keep_their_run_counts_when_taken_apart_and_joined():
    ws = _windows(_walk("u", "ABABAC"))
    enc = ws.encoded()
    joined = Encoded.concat([enc.take(np.arange(3)), enc.take(np.arange(3, len(enc)))])
    assert np.array_equal(joined.run_counts, enc.run_counts)
    assert Encoded.concat([enc, Encoded(enc.input_ids, enc.attention_mask, enc.length)]).run_counts is None


def test_the_run_ceiling_is_the_jth_highest_count_among_normal_training_users():
    # 6,000 users at 0.5 %: j / 6,001 <= 0.25 * 0.5 % / 3 gives j = 2
    counts = {f"u{i:04d}": [[1 + i % 5, 1, 0]] for i in range(6_000)}
    counts["u0007"] = [[40, 3, 0], [41, 30, 9]]  # one heavy user: the highest on every count
    counts["u0008"] = [[35, 20, 7]]  # the second highest
    normal = _counted(counts)
    attackers = _counted({"inj1": [[64, 64, 60]]}, label=1)
    both = dataclasses.replace(normal.joined(attackers), users=normal.users + ["inj1"])
    both.user[len(normal):] = len(normal.users)
    assert train.run_ceiling(both, 0.005) == ([35, 20, 7], 6_000, 2)  # the injected attacker is no normal user


def test_a_log_with_too_few_normal_users_leaves_the_run_ceiling_off():
    counts = {f"u{i:04d}": [[3, 1, 0]] for i in range(2_000)}  # 1 / 2,001 is more than a twelfth of 0.5 %
    assert train.run_ceiling(_counted(counts), 0.005) == ([], 2_000, 0)


def _with_ceiling(trained, ceiling: list[int]) -> Scorer:
    scorer = Scorer.load(trained[0].artifact, "cpu")
    scorer.artifact.meta = dataclasses.replace(scorer.artifact.meta, run_ceiling=ceiling)
    return scorer


def test_a_window_counting_past_the_run_ceiling_scores_as_an_unseen_event_type(tiny_model):
    scorer = _with_ceiling(tiny_model, [])
    art = scorer.artifact
    events = _walk("u", "ABCDAAAAAA")  # A 6 and 7 times at the 9th and 10th view, and when the session ends
    ws = dataset.build_windows(dataset.batches_from_events(events, art.window_config), art.vocab, art.window_config)
    before = scorer.score(ws.encoded(), floor=-np.inf)
    art.meta = dataclasses.replace(art.meta, run_ceiling=[64, 5, 64])
    after = scorer.score(ws.encoded(), floor=-np.inf)
    past = ws.run_counts[:, 1] > 5
    assert past.sum() == 3 and (after[past] == np.float32(UNSEEN_CLASSIFIER_SCORE)).all()
    assert np.array_equal(after[~past], before[~past])  # at the ceiling a window keeps its own score


def test_scoring_with_a_run_ceiling_refuses_windows_without_their_counts(tiny_model):
    scorer = _with_ceiling(tiny_model, [10, 10, 10])
    enc = _windows(_walk("u", "ABAB")).encoded()
    with pytest.raises(SeqsentryError, match="run_ceiling"):
        scorer.score(Encoded(enc.input_ids, enc.attention_mask, enc.length))


@pytest.mark.parametrize("value", [[1, 2], [1, True, 3], [1, -1, 3], "5", [1.5, 2, 3], [2**31, 1, 1]])
def test_a_run_ceiling_that_would_break_serving_is_refused_in_one_line(tiny_model, tmp_path, value):
    bad = _saved(tiny_model, tmp_path, value)
    with pytest.raises(ArtifactError, match="run_ceiling") as err:
        load_artifact(bad)
    assert "\n" not in str(err.value)


def _saved(trained, tmp_path, ceiling, **fields) -> Path:
    """The trained artifact saved again with ``meta.run_ceiling = ceiling`` and ``fields``."""
    return with_meta(trained[0].artifact, tmp_path / "edited", run_ceiling=ceiling, **fields)


def test_a_zero_label_model_cannot_carry_a_run_ceiling():
    from stream.artifact import Meta

    meta = Meta("v", "mlm", 9.0, {"max_events": 32}, severity=[9.0, 9.0, 9.0, 9.0], run_ceiling=[5, 5, 5])
    with pytest.raises(ArtifactError, match="zero-label"):
        meta.validate("here")


def test_an_alert_past_the_run_ceiling_says_which_count_and_the_ceiling_first():
    ts = np.arange(10, dtype=np.int64) * 20_000
    items = np.array([7, 7, 7, 7, 7, 7, 7, 1, 2, 3], dtype=np.uint32)
    counts = _windows(_walk("u", "AAAAAAABCD")).run_counts[-1]  # the same window, as the scorer counts it
    s = explain.summarise(ts, np.zeros(10, np.uint16), items, ["view"], lambda t: True, run_ceiling=[64, 5, 64],
                          run_counts=counts)
    assert s.findings[0] == ("more than the platform's normal users run to: 7 events on one item "
                             "(training users' ceiling 5)")
    quiet = explain.summarise(ts, np.zeros(10, np.uint16), items, ["view"], lambda t: True, run_ceiling=[64, 7, 64],
                              run_counts=counts)
    assert "ceiling" not in quiet.reasons


def test_the_report_states_the_run_ceiling_or_why_it_is_off():
    on = {"run_ceiling": [36, 15, 6], "run_ceiling_users": 8_400, "run_ceiling_rank": 3}
    assert metrics.run_ceiling_line(on) == ("- run ceiling: a window counting more than events 36, top item count 15, "
                                     "repeated transitions 6 alerts as unseen (per count, the 3rd highest of 8,400 "
                                     "normal training users)")
    assert "off (900 normal training users" in metrics.run_ceiling_line({"run_ceiling": [], "run_ceiling_users": 900})


def test_offline_scoring_alerts_past_the_run_ceiling_and_says_so(tiny_model, tmp_path, capsys):
    # a threshold only the rule's score reaches: the tiny model's own alert would come first
    model = _saved(tiny_model, tmp_path, [64, 6, 64], threshold=1.0, severity=[1.0] * 4)
    farm = [{"user_id": "farm", "ts": T0 + k * 30_000, "type": "view", "item_id": "X" if k % 4 else f"c{k}"}
            for k in range(12)]  # 9 of 12 views on X: the 10th is X's 7th
    alerts = offline_alerts(model, farm, tmp_path)
    assert alerts and alerts[0]["score"] == 1.0
    assert alerts[0]["window"]["findings"][0] == ("more than the platform's normal users run to: "
                                                  "7 events on one item (training users' ceiling 6)")


def test_a_classifier_without_shape_tokens_cannot_carry_a_run_ceiling(tiny_model, tmp_path):
    art = load_artifact(tiny_model[0].artifact)
    out = tmp_path / "shapeless"
    save_artifact(out, art.model, dataclasses.replace(art.vocab, shape=False), art.meta)
    meta = json.loads((out / "meta.json").read_text()) | {"run_ceiling": [5, 5, 5]}
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="run_ceiling needs a vocabulary with window-shape tokens"):
        load_artifact(reseal(out))  # its windows would carry no run counts, and every score would fail


def test_an_alert_never_names_an_item_count_the_encoding_leaves_undefined():
    # one event with an item among three: the encoding's top-item count is undefined (0), so a ceiling of 0
    # is not passed, and the explanation must not say it was
    ts = np.arange(3, dtype=np.int64) * 20_000
    counts = _windows([Event("u", T0 + k * 20_000, "view", item_id=it) for k, it in enumerate([None, None, "A"])]
                      ).run_counts[-1]
    assert counts.tolist() == [3, 0, 0]
    s = explain.summarise(ts, np.zeros(3, np.uint16), np.array([0, 0, 7], np.uint32), ["view"], lambda t: True,
                          run_ceiling=[100, 0, 0], run_counts=counts)
    assert "ceiling" not in s.reasons


def test_the_run_ceiling_counts_the_training_users_whole_histories_and_no_one_else():
    # a labelled log's training split holds its users' early windows only; the ceiling reads all of theirs
    counts = {f"u{i:04d}": [[1 + i % 5, 1, 0]] for i in range(6_000)}
    counts["u0007"] = [[2, 1, 0], [41, 30, 9]]  # late windows, outside the training split
    counts["u0008"] = [[35, 20, 7]]
    counts["u0009"] = [[64, 64, 60]]  # not a training user (validation, test)
    ws = _counted(counts)
    training = np.array([i for i, u in enumerate(ws.users) if u != "u0009"])
    assert train.run_ceiling(ws, 0.005, training) == ([35, 20, 7], 5_999, 2)
