"""The detection step: ended sessions are scored and alerted on like events, with the same contract."""

from __future__ import annotations

import dataclasses

import jsonschema
import pytest

from stream import alerts
from stream.detector import SESSION_END, Detector
from stream.events import Event, EventBatch
from stream.model import Scorer

T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def eager_scorer(tiny_model):
    """The tiny model with a threshold of 0: every window alerts."""
    res, _ = tiny_model
    scorer = Scorer.load(res.artifact, "cpu")
    scorer.artifact.meta = dataclasses.replace(scorer.artifact.meta, threshold=0.0, severity=[0.0, 0.5, 0.9, 1.0])
    return scorer


@pytest.fixture
def eager_detector(eager_scorer):
    return Detector(eager_scorer, cooldown_ms=0)


def _events(*spec: tuple[str, int, str]) -> EventBatch:
    return EventBatch.from_events([Event(u, T0 + t, ty, event_id=f"{u}-{t}") for u, t, ty in spec])


def test_an_ended_session_is_scored_with_its_own_alert(eager_detector):
    det = eager_detector
    store = det.new_store()
    gap = det.window_config.session_gap_ms
    pending, _ = det.ingest(store, _events(("a", 0, "view"), ("a", 1000, "cart"), ("b", 2000 + gap, "view")))
    ended = [p for p in pending if p.closing]
    assert [p.windows.user_id for p in ended] == [["a"]]
    assert ended[0].event_time.tolist() == [T0 + 1000]  # the session's last event
    found = det.score(ended)[0]
    assert len(found) == 1 and found[0]["user_id"] == "a"
    jsonschema.validate(found[0], alerts.schema())
    assert SESSION_END in {e["type"] for e in found[0]["explanation"]}


def test_an_ended_sessions_alert_id_is_the_same_however_it_ended(eager_detector):
    det = eager_detector
    gap = det.window_config.session_gap_ms
    by_other = det.new_store()  # another user's event moves event time past the gap
    p1, _ = det.ingest(by_other, _events(("a", 0, "view"), ("b", gap + 5000, "view")))
    by_self = det.new_store()  # the user comes back after the gap
    p2, _ = det.ingest(by_self, _events(("a", 0, "view"), ("a", gap + 5000, "view")))
    ids = [[a["alert_id"] for a in det.score([p for p in ps if p.closing])[0]] for ps in (p1, p2)]
    assert ids[0] == ids[1] and len(ids[0]) == 1


def test_windows_scored_are_every_event_plus_every_ended_session(eager_detector):
    det = eager_detector
    store = det.new_store()
    gap = det.window_config.session_gap_ms
    pending, too_late = det.ingest(store, _events(("a", 0, "view"), ("a", 10, "view"), ("b", gap + 100, "view"),
                                                  ("c", 2 * gap + 200, "view")))
    assert not len(too_late)
    assert sum(len(p) for p in pending if not p.closing) == 4
    assert sum(len(p) for p in pending if p.closing) == 2  # a's and b's sessions; c's is still open
