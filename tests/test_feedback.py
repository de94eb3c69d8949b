"""Verdicts in: the verdict contract, dead letters with reasons, and the labels file `train --labels` reads."""

from __future__ import annotations

import json

import jsonschema
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from stream import feedback
from stream.cli import main
from stream.events import Reject
from stream.log_readers import read_labels

GOOD = [
    {"user_id": "u1", "verdict": "abuse"},
    {"alert_id": "a" * 32, "verdict": "legitimate", "analyst": "kim", "at": 1793491200000},
    {"user_id": 42, "verdict": "abuse", "kind": "click-farm", "at": "2026-11-01T00:00:00Z", "since": 1793491100000},
    {"user_id": "u1", "verdict": "abuse", "extra": "ignored"},
]
BAD = [  # (verdict, reason)
    ({"verdict": "abuse"}, "missing-field"),
    ({"user_id": "u1"}, "missing-field"),
    ({"user_id": "u1", "verdict": "maybe"}, "bad-value"),
    ({"user_id": "", "verdict": "abuse"}, "bad-value"),
    ({"user_id": "u1", "verdict": "abuse", "at": True}, "bad-type"),
    ({"user_id": "u1", "verdict": "abuse", "kind": 3}, "bad-type"),
    ({"user_id": "u1", "verdict": "abuse", "at": 5}, "bad-timestamp"),
    ({"user_id": ["u1"], "verdict": "abuse"}, "bad-type"),
]


@pytest.mark.parametrize("verdict", GOOD)
def test_a_valid_verdict_passes_both_the_schema_and_the_parser(verdict):
    jsonschema.validate(verdict, feedback.schema())
    assert feedback.parse_verdict(orjson.dumps(verdict)).verdict == verdict["verdict"]


@pytest.mark.parametrize(("verdict", "reason"), BAD)
def test_an_invalid_verdict_is_refused_by_both_with_a_reason(verdict, reason):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(verdict, feedback.schema())
    with pytest.raises(Reject) as exc:
        feedback.parse_verdict(orjson.dumps(verdict))
    assert exc.value.reason == reason


@pytest.mark.parametrize(("payload", "reason"), [(b"not json", "not-json"), (b"[1]", "not-object"),
                                                 (b"\xff\xfe", "bad-encoding"), (None, "not-json"),
                                                 (b"{}" + b" " * 70_000, "too-large")])
def test_undecodable_verdicts_get_the_event_contracts_reasons(payload, reason):
    with pytest.raises(Reject) as exc:
        feedback.parse_verdict(payload)
    assert exc.value.reason == reason


def _run(tmp_path, lines, *extra):
    src = tmp_path / "verdicts.jsonl"
    src.write_bytes(b"\n".join(x if isinstance(x, bytes) else orjson.dumps(x) for x in lines) + b"\n")
    out = tmp_path / "labels.csv"
    assert main(["feedback", str(src), "-o", str(out), *extra]) == 0
    return out


def test_refused_verdicts_are_dead_lettered_with_reason_and_never_stop_the_run(tmp_path):
    out = _run(tmp_path, [b"garbage", {"user_id": "u1", "verdict": "maybe"}, {"user_id": "u2", "verdict": "abuse"}])
    dead = [json.loads(x) for x in (tmp_path / "labels.csv.rejected.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["where"].rsplit(":", 1)[1]) for d in dead] == [("not-json", "1"), ("bad-value", "2")]
    assert dead[0]["value"] == "garbage"
    assert set(read_labels(out)) == {"u2"}


def test_the_latest_verdict_per_user_wins_by_its_time_not_its_place(tmp_path):
    out = _run(tmp_path, [{"user_id": "u1", "verdict": "legitimate", "at": 1793491300000},
                          {"user_id": "u1", "verdict": "abuse", "at": 1793491200000}])
    assert read_labels(out) == {"u1": (0, None, None)}


def test_a_dismissed_user_is_a_label_0_row_and_confirmed_abuse_a_label_1_with_its_kind(tmp_path):
    out = _run(tmp_path, [{"user_id": "u1", "verdict": "legitimate"}, {"user_id": "u2", "verdict": "abuse", "kind": "farm"},
                          {"user_id": "u3", "verdict": "abuse"}])
    assert read_labels(out) == {"u1": (0, None, None), "u2": (1, "farm", None), "u3": (1, "confirmed", None)}


def test_an_alert_id_resolves_to_its_user_and_covers_the_whole_account_without_a_since(tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_bytes(orjson.dumps({"alert_id": "a1", "user_id": "u9", "event_time": 1793491000000}) + b"\n")
    out = _run(tmp_path, [{"alert_id": "a1", "verdict": "abuse", "at": 1793491200000}], "--alerts", str(alerts))
    (row,) = feedback.read_labels_file(out)
    assert (row.user_id, row.label, row.since, row.at, row.alert_id) == ("u9", 1, None, 1793491200000, "a1")


def test_an_alert_id_not_in_the_alerts_is_dead_lettered_unknown_alert(tmp_path):
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_bytes(orjson.dumps({"alert_id": "a1", "user_id": "u9", "event_time": 1}) + b"\n")
    _run(tmp_path, [{"alert_id": "zz", "verdict": "abuse"}], "--alerts", str(alerts))
    (dead,) = [json.loads(x) for x in (tmp_path / "labels.csv.rejected.jsonl").read_text().splitlines()]
    assert dead["reason"] == "unknown-alert"


def test_a_user_id_that_is_not_the_alerts_user_is_refused():
    alerts = {"a1": feedback.AlertRef("u9", 1)}
    with pytest.raises(Reject) as exc:
        feedback.resolve(feedback.parse_verdict({"alert_id": "a1", "user_id": "u1", "verdict": "abuse"}), alerts, 0)
    assert exc.value.reason == "bad-value"


def test_verdicts_merge_into_an_existing_labels_file_and_beat_its_untimed_rows(tmp_path):
    out = tmp_path / "labels.csv"
    out.write_text("user_id,label,attack\nu1,1,chargeback\nu2,1,chargeback\n")
    src = tmp_path / "v.jsonl"
    src.write_bytes(orjson.dumps({"user_id": "u2", "verdict": "legitimate"}) + b"\n")
    assert main(["feedback", str(src), "-o", str(out)]) == 0
    assert read_labels(out) == {"u1": (1, "chargeback", None), "u2": (0, None, None)}


def test_verdicts_are_read_from_a_csv_file(tmp_path):
    src = tmp_path / "v.csv"
    src.write_text("user_id,verdict,kind,at\nu1,abuse,promo,1793491200000\nu2,legitimate,,\n")
    out = tmp_path / "labels.csv"
    assert main(["feedback", str(src), "-o", str(out)]) == 0
    assert read_labels(out) == {"u1": (1, "promo", None), "u2": (0, None, None)}


def test_verdict_command_publishes_and_feedback_records_the_topic(broker, topic, tmp_path):
    assert main(["verdict", "u7", "abuse", "--user", "--kind", "farm", "-b", broker.bootstrap, "-t", topic]) == 0
    out = tmp_path / "labels.csv"
    assert main(["feedback", "-b", broker.bootstrap, "-t", topic, "-o", str(out), "--idle-timeout", "4"]) == 0
    assert read_labels(out) == {"u7": (1, "farm", None)}


def test_a_bad_verdict_on_the_topic_goes_to_the_dead_letter_topic_with_its_reason(broker, topic, tmp_path):
    dlq = f"{topic}-dlq"
    broker.create_topics({dlq: 1})
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(topic, b'{"user_id": "u1", "verdict": "perhaps"}', b"u1")
    p.flush()
    assert main(["feedback", "-b", broker.bootstrap, "-t", topic, "--dlq-topic", dlq, "-o", str(tmp_path / "l.csv"),
                 "--idle-timeout", "4"]) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "fb-dlq-test"})
    c.assign([TopicPartition(dlq, 0, OFFSET_BEGINNING)])
    msgs = [m for m in c.consume(1, timeout=20) if not m.error()]
    c.close()
    assert len(msgs) == 1 and dict(msgs[0].headers())["seqsentry.reason"] == b"bad-value"
    assert msgs[0].value() == b'{"user_id": "u1", "verdict": "perhaps"}'


# ---- the verdicts in training (train --labels) ------------------------------------------------
def _verdicts_for(traffic, tmp_path):
    """A labels file from verdicts: one of the log's attackers dismissed, one normal user confirmed."""
    attackers = sorted({r["user_id"] for r in traffic if r.get("label") == 1})
    normals = sorted({r["user_id"] for r in traffic} - set(attackers))
    out = _run(tmp_path, [{"user_id": attackers[0], "verdict": "legitimate"},
                          {"user_id": normals[0], "verdict": "abuse", "kind": "farm"}])
    return out, attackers[0], normals[0]


def test_training_reads_dismissed_users_as_label_0_and_confirmed_abuse_as_1_with_its_kind(traffic, tmp_path):
    from stream import logs
    from training import dataset

    labels, dismissed, confirmed = _verdicts_for(traffic, tmp_path)
    log = tmp_path / "t.jsonl"
    logs.write_log(log, [traffic])
    evs, _ = dataset.read_events(dataset.batches_from_log(log, logs.LogSpec(labels=logs.read_labels(labels))))
    assert {e.label for e in evs if e.user_id == dismissed} == {0}  # the log said attacker; the analyst did not
    assert {(e.label, e.attack) for e in evs if e.user_id == confirmed} == {(1, "farm")}


def test_train_reports_the_confirmed_and_dismissed_users_it_alerts(tiny_model, traffic):
    import numpy as np

    from stream.model import Scorer
    from training import dataset, verdicts

    scorer = Scorer.load(tiny_model[0].artifact, "cpu", "torch")
    art = scorer.artifact
    evs, _ = dataset.read_events(dataset.batches_from_records(traffic))
    for e in evs:
        e.label = 0 if e.label is None else e.label
    ws = dataset.build_windows(dataset.batches_from_events(evs, art.window_config), art.vocab, art.window_config)
    attackers = sorted({r["user_id"] for r in traffic if r.get("label") == 1})
    normals = sorted({r["user_id"] for r in traffic} - set(attackers))[:30]
    given = {u: 1 for u in attackers} | {u: 0 for u in normals} | {"not-in-log": 0}
    info = verdicts.summarise(lambda sub: scorer.score(sub.encoded(), floor=-np.inf), ws, dataset.split(ws),
                              art.meta.threshold, given)
    c, d = info["confirmed_attackers"], info["dismissed_users"]
    assert (c["in_labels"], c["in_log"], d["in_labels"], d["in_log"]) == (len(attackers), len(attackers), 31, 30)
    assert 0 < c["alerted_anywhere"] <= c["in_log"] and c["alerted_held_out"] <= c["held_out"] <= c["in_log"]
    assert verdicts.line(info).startswith(f"labels: {len(attackers)} confirmed attackers")


def test_alert_ids_resolve_through_the_alerts_topic(broker, topic, tmp_path):
    alerts = f"{topic}-alerts"
    broker.create_topics({alerts: 1})
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce(alerts, orjson.dumps({"alert_id": "a1", "user_id": "u5", "event_time": 1793491000000}), b"u5")
    p.produce(topic, orjson.dumps({"alert_id": "a1", "verdict": "abuse"}), b"a1")
    p.flush()
    out = tmp_path / "labels.csv"
    assert main(["feedback", "-b", broker.bootstrap, "-t", topic, "--alerts-topic", alerts, "-o", str(out),
                 "--idle-timeout", "4"]) == 0
    (row,) = feedback.read_labels_file(out)
    assert (row.user_id, row.since) == ("u5", None)


def test_dismissed_users_train_on_every_window_of_theirs_beside_the_sample():
    import numpy as np

    from training import dataset, verdicts

    n = 5
    ws = dataset.WindowSet(input_ids=np.zeros((n, 4), np.int32), label=np.zeros(n, np.int8),
                           attack=np.zeros(n, np.int16), user=np.array([0, 0, 1, 1, 2], np.int32),
                           ts=np.arange(n, dtype=np.int64), seq_no=np.ones(n, np.int32),
                           run_counts=np.zeros((n, 3), np.int32), users=["a", "b", "c"],
                           attack_names=["none"])
    out = verdicts.with_hard_negatives(ws.subset(np.array([0, 4])), ws, {"b": 0, "a": 1})
    assert out.user.tolist() == [0, 2, 1, 1] and out.ts.tolist() == [0, 4, 2, 3]
