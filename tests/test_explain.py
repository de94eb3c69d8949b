"""Alert explanations: what was unusual about a window, in words and numbers, from hand-made windows."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from stream import alerts, explain
from stream.artifact import Artifact, Meta
from stream.detector import SESSION_END, Detector
from stream.encoding import UNK_TYPE, Vocabulary
from stream.events import Event, EventBatch, item_hash
from stream.offline import score_log
from stream.windows import WindowConfig

T0 = 1_700_000_000_000
TYPES = ["<other>", "view", "cart", "checkout", "bogus"]  # a store's type table
KNOWN = {"view", "cart", "checkout"}.__contains__


def _summary(gaps_ms, types=None, items=None, closing=False) -> explain.Summary:
    ts = T0 + np.r_[0, np.cumsum(gaps_ms)].astype(np.int64)
    n = len(ts)
    ty = np.asarray(types if types is not None else [1] * n, dtype=np.uint16)
    it = np.asarray(items if items is not None else [0] * n, dtype=np.uint32)
    return explain.summarise(ts, ty, it, TYPES, KNOWN, closing=closing)


# ---- the summary of one window -----------------------------------------------------------------


def test_a_regular_fast_run_gives_its_rate_gaps_and_regularity():
    gaps = [4_400 + (10 if i % 2 else -10) for i in range(40)]  # 41 views, 4.4 s apart within 0.23 %
    s = _summary(gaps, items=[11, 22] * 20 + [11])
    span = sum(gaps)
    assert s.stats["events"] == 41 and s.stats["span_ms"] == span
    assert s.stats["rate_per_min"] == pytest.approx(60_000 * 40 / span, abs=1e-3)
    assert s.stats["min_gap_ms"] == 4_390 and s.stats["median_gap_ms"] == 4_400
    assert s.stats["regular_gaps"] == 40 and s.stats["regular_within"] == pytest.approx(10 / 4_400, abs=1e-4)
    assert s.findings[:2] == ["41 'view' events in 2.9 min (13.6/min, peak 14 in 60 s) on 2 items",
                              "gaps min 4.4 s, median 4.4 s, regular within 1 %"]


def test_irregular_gaps_are_not_called_regular():
    s = _summary([1_000, 9_000, 2_500, 30_000, 700, 12_000])
    assert s.stats["regular_gaps"] == 0 and s.stats["regular_within"] is None
    assert not any("regular" in f for f in s.findings)


def test_a_run_that_turns_regular_says_how_many_of_its_newest_gaps_are():
    s = _summary([20_000, 3_000, 45_000] + [2_000] * 6)
    assert s.stats["regular_gaps"] == 6
    assert "the last 6 regular within 1 % around 2 s" in s.reasons


def test_an_event_type_never_seen_in_training_is_named_first():
    s = _summary([1_000, 1_000], types=[1, 4, 4])
    assert s.stats["unseen_types"] == ["bogus"]
    assert s.findings[0] == "event type never seen in training: 'bogus' (2 of 3 events)"


def test_an_ended_session_says_how_many_events_it_had():
    s = _summary([5_000, 60_000], types=[1, 2, 1], closing=True)
    assert "session ended after 3 events over 1.1 min, the last a 'view'" in s.findings


def test_many_unseen_types_are_counted_and_long_names_cut():
    names = [*TYPES, *(f"t{i}-" + "x" * 60 for i in range(5))]
    ts = T0 + np.arange(5, dtype=np.int64) * 1_000
    s = explain.summarise(ts, np.arange(5, 10, dtype=np.uint16), np.zeros(5, np.uint32), names, KNOWN)
    assert len(s.stats["unseen_types"]) == 5
    assert s.findings[0].endswith(" and 2 more") and "x" * 60 not in s.findings[0]


def test_a_one_event_session_that_ended_says_so():
    s = _summary([], types=[2], closing=True)
    assert s.findings[0] == "session ended after 1 event, the last a 'cart'"


def test_a_first_checkout_soon_after_the_first_view_is_said():
    s = _summary([1_500, 2_500], types=[1, 2, 3])
    assert s.findings[-1] == "'checkout' 4 s after the first 'view'"


def test_one_item_holding_most_of_the_window_is_named_by_its_hash():
    s = _summary([3_000] * 5, items=[7, 7, 7, 7, 9, 7])
    assert s.stats["top_items"][0] == {"item_hash": "00000007", "events": 5}
    assert "item 00000007 in 5 of 6 events (83 %)" in s.findings


def test_an_item_with_many_events_is_named_even_when_it_holds_under_half_the_window():
    # a fake-order cycle: two cover items, then the seller's item, ten times over
    s = _summary([20_000] * 29, items=[item for k in range(10) for item in (2 * k + 10, 2 * k + 11, 5)])
    assert s.stats["top_items"][0] == {"item_hash": "00000005", "events": 10}
    assert "item 00000005 in 10 of 30 events (33 %)" in s.findings


def test_a_path_walked_again_says_how_many_steps_it_retraced():
    s = _summary([15_000] * 11, items=[1, 2, 3, 4] * 3)
    # 1->2 2->3 3->4, then 4->1 and the three steps again, twice: 4->1 once more too
    assert s.stats["retraced_steps"] == 7
    assert "7 of 11 item-to-item steps retrace steps taken earlier in the window" in s.findings


def test_a_window_that_never_retraces_a_step_says_nothing_of_it():
    s = _summary([15_000] * 5, items=[1, 2, 1, 3, 4, 5])
    assert s.stats["retraced_steps"] == 0
    assert not any("retrace" in f for f in s.findings)


def test_every_event_on_a_different_item_is_said():
    s = _summary([700, 1_900, 800, 2_600, 1_100, 950, 3_000, 1_300, 600], items=range(1, 11))
    assert s.stats["distinct_items"] == 10
    assert "every event on a different item (10 items)" in s.findings


# ---- the alert -------------------------------------------------------------------------------


class FixedScorer:
    """A scorer stand-in: every window scores ``value`` (float32); occlusion weights are fixed."""

    def __init__(self, kind: str = "classifier", threshold: float = 0.5, value: float = 0.9) -> None:
        vocab = Vocabulary(types=(UNK_TYPE, "cart", "checkout", "view"), max_events=32)
        meta = Meta(version="v-test", kind=kind, threshold=threshold, window={"max_events": 32},
                    severity=[threshold, threshold + 1, threshold + 2, threshold + 3])
        self.artifact = Artifact(Path("."), meta, vocab, model=None)
        self.value = np.float32(value)
        self.explained = 0

    def score(self, enc) -> np.ndarray:  # noqa: ANN001
        return np.full(len(enc), self.value, dtype=np.float32)

    def explain_many(self, enc, rows, top=5):  # noqa: ANN001, ANN201
        self.explained += len(rows)
        return [[(int(enc.length[r]) - 1, 0.25)] for r in rows]


def _alerts(scorer, evs: list[Event]) -> list[dict]:
    det = Detector(scorer, cooldown_ms=0)
    pending, _ = det.ingest(det.new_store(), EventBatch.from_events(evs))
    return [a for found in det.score(pending) for a in found]


def _run(n: int = 6, gap: int = 2_000) -> list[Event]:
    return [Event("u1", T0 + i * gap, "view", event_id=f"e{i}", item_id=f"sku-{i % 2}", price=9.5) for i in range(n)]


def test_alerts_carry_the_windows_item_hashes_and_gaps():
    a = _alerts(FixedScorer(), _run())[-1]
    jsonschema.validate(a, alerts.schema())
    last = a["window"]["last"]
    assert [e["item_hash"] for e in last] == [f"{item_hash(f'sku-{i % 2}'):08x}" for i in range(6)]
    assert [e["gap_ms"] for e in last] == [None] + [2_000] * 5
    assert a["trigger"]["item_id"] == "sku-1"
    assert a["window"]["reasons"].startswith("6 'view' events in 10 s (30/min) on 2 items; gaps min 2 s, median 2 s")


def test_offline_alerts_name_the_log_and_record_of_their_event(tmp_path):
    log = tmp_path / "events.jsonl"
    evs = [Event("u2", T0 - 1, "cart", event_id="x0"), *_run()]
    log.write_text("".join(json.dumps(e.to_record()) + "\n" for e in evs))
    out = tmp_path / "alerts.jsonl"
    score_log(log, Detector(FixedScorer(), cooldown_ms=0), out)
    found = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(found) == len(evs)
    lines = log.read_text().splitlines()
    for a in found:
        jsonschema.validate(a, alerts.schema())
        t = a["trigger"]
        assert t["log"] == str(log)
        assert json.loads(lines[t["record"]])["event_id"] == t["event_id"]


def test_offline_alerts_on_a_log_grouped_by_user_name_the_records_in_file_order(tmp_path):
    log = tmp_path / "grouped.jsonl"
    evs = [*_run(4), *(Event("u3", T0 + 500 + i * 3_000, "cart", event_id=f"g{i}") for i in range(4))]
    log.write_text("".join(json.dumps(e.to_record()) + "\n" for e in evs))
    out = tmp_path / "alerts.jsonl"
    score_log(log, Detector(FixedScorer(), cooldown_ms=0), out)
    lines = log.read_text().splitlines()
    found = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(found) == len(evs)
    assert all(json.loads(lines[a["trigger"]["record"]])["event_id"] == a["trigger"]["event_id"] for a in found)


def test_a_score_one_float32_step_below_the_models_threshold_is_never_shown_below_it():
    score = np.float32(0.7)
    threshold = float(score) + 1e-9  # a float64 threshold between two float32 scores
    assert np.array([score]) >= threshold  # the comparison numpy makes: the score passes ...
    assert float(score) < threshold  # ... though it is below the threshold's own value
    found = _alerts(FixedScorer(threshold=threshold, value=score), _run(2))
    assert found
    for a in found:
        assert a["score"] >= a["threshold"]
        assert a["threshold"] == float(np.float32(threshold))


def test_zero_label_alerts_explain_the_scored_event_without_weights():
    scorer = FixedScorer(kind="mlm", threshold=3.0, value=9.0)
    a = _alerts(scorer, _run())[-1]
    jsonschema.validate(a, alerts.schema())
    assert scorer.explained == 0  # no occlusion model calls for a zero-label model
    assert a["explanation"] == [{**a["window"]["last"][-1], "position": 5}]


def test_zero_label_session_end_alerts_explain_the_end():
    scorer = FixedScorer(kind="mlm", threshold=3.0, value=9.0)
    gap = WindowConfig().session_gap_ms
    found = _alerts(scorer, [*_run(3), Event("u9", T0 + 10 * gap, "view", event_id="late")])
    ended = [a for a in found if a["user_id"] == "u1" and a["trigger"]["event_id"] is None]
    assert len(ended) == 1
    assert [e["type"] for e in ended[0]["explanation"]] == [SESSION_END]
    assert "session ended after 3 events over 4 s, the last a 'view'" in ended[0]["window"]["findings"]


def test_classifier_alerts_keep_their_occlusion_weights():
    a = _alerts(FixedScorer(), _run())[-1]
    assert a["explanation"] == [{**a["window"]["last"][-1], "position": 5, "weight": 0.25}]


def test_the_readme_example_alert_follows_the_schema():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## The alert contract"):]
    example = json.loads(section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)])
    jsonschema.validate(example, alerts.schema())
    assert example["score"] >= example["threshold"]
