"""The detection step: ended sessions are scored and alerted on like events, with the same contract."""

from __future__ import annotations

import dataclasses

import jsonschema
import numpy as np
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


class _TwoEventScorer:
    """Alerts on every window holding two events or more (an ended session's END counts as one)."""

    def __init__(self, real: Scorer) -> None:
        self.artifact = dataclasses.replace(real.artifact, meta=dataclasses.replace(
            real.artifact.meta, threshold=0.5, severity=[0.5, 0.6, 0.7, 0.8]))

    def score(self, enc) -> np.ndarray:  # noqa: ANN001
        return (enc.attention_mask.sum(1) >= 1 + self.artifact.vocab.n_shape + 2).astype(np.float32)

    def explain_many(self, enc, rows, top=5):  # noqa: ANN001, ANN201
        return [[] for _ in rows]


def test_alerts_and_the_cooldown_do_not_depend_on_where_the_stream_is_cut(eager_scorer):
    # a's first session (one view) alerts only when it ends; its next view, past the session gap, alerts
    # too, and one cooldown covers both: the earlier in event time must win however the batches fall
    det = Detector(_TwoEventScorer(eager_scorer), cooldown_ms=10 * eager_scorer.artifact.window_config.session_gap_ms)
    gap = det.window_config.session_gap_ms
    spec = [("a", 0, "view"), ("b", gap + 1, "view"), ("a", gap + 2, "view")]

    def alert_ids(cuts: list[int]) -> list[str]:
        det.cooldown = alerts.Cooldown(det.cooldown_ms)
        store, ids = det.new_store(), []
        for lo, hi in zip([0, *cuts], [*cuts, len(spec)], strict=True):
            pending, _ = det.ingest(store, _events(*spec[lo:hi]))
            ids += [a["alert_id"] for found in det.score(pending) for a in found]
        return ids

    one_batch = alert_ids([])
    assert len(one_batch) == 1 and one_batch == alert_ids([1]) == alert_ids([1, 2]) == alert_ids([2])


def test_a_batch_handed_over_in_phases_scores_as_its_pendings_would_one_by_one(eager_scorer):
    det = Detector(eager_scorer, cooldown_ms=0)
    gap = det.window_config.session_gap_ms
    spec = [("a", 0, "view"), ("b", 10, "cart"), ("a", gap + 100, "view"), ("a", gap + 200, "cart"),
            ("b", gap + 300, "view"), ("a", 2 * gap + 400, "view"), ("c", 2 * gap + 500, "view")]
    pending, _ = det.ingest(det.new_store(), _events(*spec))
    assert len(pending) >= 4  # a ended two sessions within the batch: events and ends come in phases

    def seen(found: list[dict]) -> list[tuple]:
        return [(a["alert_id"], a["user_id"], a["window"]["stats"]["events"]) for a in found]

    together = det.score(pending)  # encoded in one call per kind
    det.cooldown = alerts.Cooldown(0)  # a fresh one: it remembers each user's newest alert
    one_by_one = [det.score([p])[0] for p in pending]
    assert [seen(f) for f in together] == [seen(f) for f in one_by_one]
    assert [a["score"] for f in together for a in f] == pytest.approx([a["score"] for f in one_by_one for a in f],
                                                                      abs=1e-5)


# ---- the cooldown goes with the window (issue 20, items 5 and 6) ---------------------------------------------
def test_the_cooldown_holds_no_more_users_than_the_window_store(eager_scorer):
    det = Detector(eager_scorer, max_users=50)
    store = det.new_store()
    for i in range(0, 3000, 100):  # a flood of 3,000 users, every window alerting
        pending, _ = det.ingest(store, _events(*[(f"flood{j}", j, "view") for j in range(i, i + 100)]))
        det.score(pending)
    assert store.users <= 50 and len(det.cooldown) <= 50 + 100  # until the next batch, one batch's users more
    det.score(det.ingest(store, _events(("flood2999", 3000, "view")))[0])
    assert all(store.slot_of(u) is not None for u in det.cooldown.users())


def test_an_evicted_users_cooldown_is_forgotten_only_when_scoring_reaches_the_eviction(eager_scorer):
    det = Detector(eager_scorer, max_users=1)
    store = det.new_store()
    first, _ = det.ingest(store, _events(("a", 0, "view")))
    det.score(first)
    queued, _ = det.ingest(store, _events(("a", 1000, "view")))  # within a's cooldown: no alert
    evicting, _ = det.ingest(store, _events(("b", 2000, "view")))  # a is evicted
    assert store.slot_of("a") is None and evicting[0].forget == ["a"]
    assert det.score(queued) == [[]]  # scored after the eviction was ingested, as offline scores it: before
    det.score(evicting)
    assert "a" not in det.cooldown.users()


def test_a_restored_cooldown_holds_back_alerts_as_before_the_restart():
    cd = alerts.Cooldown(600_000)
    cd.restore({"a": T0, "b": T0})
    cd.restore({"a": T0 - 5_000})  # an older alert of a user changes nothing
    assert not cd.allow("a", T0 + 599_999) and cd.allow("a", T0 + 600_000)
    assert not cd.allow("b", T0 + 1)
